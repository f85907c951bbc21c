// An SSE peer on npm `eventsource` (v4): node sse_client.mjs URL EVENT[,EVENT...] [LAST_EVENT_ID]
// It reconnects by itself as EventSource does; LAST_EVENT_ID, if given, goes on the first request only
// (through the documented `fetch` override), later requests carry what EventSource itself sends.
// stdin:  {"op":"close"}
// stdout: {"type":"request","last_event_id":...} | {"type":"open"}
//         | {"type":"event","event":"...","id":"...","data":"..."}
//         | {"type":"error","code":N|null,"message":"...","ready_state":N}
import { EventSource } from "eventsource";
import { emit, onCommand } from "./emit.mjs";

const [url, names, initialId] = process.argv.slice(2);
let first = true;

function request(input, init) {
  const headers = { ...init.headers };
  if (first && initialId) headers["Last-Event-ID"] = initialId;
  first = false;
  emit({ type: "request", last_event_id: headers["Last-Event-ID"] ?? null });
  return fetch(input, { ...init, headers });
}

const source = new EventSource(url, { fetch: request });
source.addEventListener("open", () => emit({ type: "open" }));
source.addEventListener("error", (error) =>
  emit({
    type: "error",
    code: error.code ?? null,
    message: error.message ?? null,
    ready_state: source.readyState,
  }),
);
for (const name of names.split(",")) {
  source.addEventListener(name, (event) =>
    emit({ type: "event", event: event.type, id: event.lastEventId, data: event.data }),
  );
}

onCommand(
  (command) => {
    if (command.op === "close") {
      source.close();
      process.exit(0);
    }
  },
  () => {
    source.close();
    process.exit(0);
  },
);
