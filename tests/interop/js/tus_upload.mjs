// A tus 1.0.0 peer on npm `tus-js-client` (Node): node tus_upload.mjs OPTIONS_JSON
// OPTIONS_JSON: {"endpoint","file","storage","chunkSize","metadata","abortAt"?,"terminate"?,"stream"?,
//                "client"?}
// `client` holds more tus-js-client options as they are (parallelUploads, uploadDataDuringCreation...).
// The file goes up as an fs.ReadStream, so the client fingerprints it (path, size, mtime) and keeps its
// upload URL in a FileUrlStorage at `storage`. With `stream`, it goes up as a plain stream of unknown
// size instead, as uploadLengthDeferred needs (the client cannot tell where an fs.ReadStream ends). With `abortAt` (a fraction), the first upload is aborted
// once that share of the bytes was sent (and, with `terminate`, deleted: abort(true) sends DELETE), and
// the peer waits for {"op":"resume"}: a second Upload then finds the first one in the storage
// (findPreviousUploads) and resumes it (resumeFromPreviousUpload).
// stdin:  {"op":"resume"} | {"op":"close"}
// stdout: {"type":"request","run","method","url","override","upload_offset","upload_length","upload_concat"}
//         | {"type":"response","run","method","url","override","status","sent_offset","upload_offset",
//            "location","wirelab_image"}
//         | {"type":"aborted","run","url","bytes_sent","size"} | {"type":"previous","urls":[...]}
//         | {"type":"success","run","url"} | {"type":"error","run","message"}
//         (override: the request's X-HTTP-Method-Override; sent_offset: the request's Upload-Offset)
import { createReadStream } from "node:fs";
import { PassThrough } from "node:stream";
import { FileUrlStorage, Upload } from "tus-js-client";
import { emit, onCommand } from "./emit.mjs";

const options = JSON.parse(process.argv[2]);
const storage = new FileUrlStorage(options.storage);

function header(thing, name) {
  return thing.getHeader(name) ?? null;
}

function request(run, req) {
  const override = header(req, "X-HTTP-Method-Override");
  return { run, method: req.getMethod(), url: req.getURL(), override };
}

function source() {
  const file = createReadStream(options.file);
  return options.stream ? file.pipe(new PassThrough()) : file;
}

function start(run, { abortAt = null, previous = null } = {}) {
  let aborting = false;
  const upload = new Upload(source(), {
    endpoint: options.endpoint,
    chunkSize: options.chunkSize,
    metadata: options.metadata,
    urlStorage: storage,
    retryDelays: null, // a failure must show, not be retried away
    ...options.client,
    onBeforeRequest(req) {
      emit({
        type: "request",
        ...request(run, req),
        upload_offset: header(req, "Upload-Offset"),
        upload_length: header(req, "Upload-Length"),
        upload_concat: header(req, "Upload-Concat"),
      });
    },
    onAfterResponse(req, res) {
      emit({
        type: "response",
        ...request(run, req),
        status: res.getStatus(),
        sent_offset: header(req, "Upload-Offset"),
        upload_offset: header(res, "Upload-Offset"),
        location: header(res, "Location"),
        wirelab_image: header(res, "Wirelab-Image"),
      });
    },
    onProgress(sent, total) {
      if (abortAt === null || aborting || sent < abortAt * total) return;
      aborting = true;
      upload.abort(Boolean(options.terminate)).then(
        () => emit({ type: "aborted", run, url: upload.url, bytes_sent: sent, size: total }),
        (error) => emit({ type: "error", run, message: String(error.message ?? error) }),
      );
    },
    onSuccess() {
      emit({ type: "success", run, url: upload.url });
    },
    onError(error) {
      emit({ type: "error", run, message: String(error.message ?? error) });
    },
  });
  if (previous !== null) upload.resumeFromPreviousUpload(previous);
  upload.start();
  return upload;
}

async function resume() {
  const probe = new Upload(createReadStream(options.file), {
    endpoint: options.endpoint,
    urlStorage: storage,
  });
  const found = await probe.findPreviousUploads();
  emit({ type: "previous", urls: found.map((upload) => upload.uploadUrl) });
  if (found.length > 0) start("resume", { previous: found[0] });
}

start("first", { abortAt: options.abortAt ?? null });
onCommand(
  (command) => {
    if (command.op === "resume") resume();
    else if (command.op === "close") process.exit(0);
  },
  () => process.exit(0),
);
