// A WebSocket peer on npm `ws`: node ws_client.mjs URL
// stdin:  {"op":"text","data":"..."} | {"op":"binary","base64":"..."} | {"op":"close","code":1000}
// stdout: {"type":"open"} | {"type":"message","binary":false,"text":"..."}
//         | {"type":"message","binary":true,"base64":"..."} | {"type":"close","code":N,"reason":"..."}
//         | {"type":"error","message":"..."}
import WebSocket from "ws";
import { emit, onCommand } from "./emit.mjs";

const ws = new WebSocket(process.argv[2]);

ws.on("open", () => {
  emit({ type: "open", extensions: ws.extensions });
  onCommand(
    (command) => {
      if (command.op === "text") ws.send(command.data);
      else if (command.op === "binary") ws.send(Buffer.from(command.base64, "base64"));
      else if (command.op === "close") ws.close(command.code ?? 1000, command.reason ?? "");
    },
    () => ws.close(1000),
  );
});
ws.on("message", (data, isBinary) =>
  emit(
    isBinary
      ? { type: "message", binary: true, base64: data.toString("base64") }
      : { type: "message", binary: false, text: data.toString("utf8") },
  ),
);
ws.on("close", (code, reason) => {
  emit({ type: "close", code, reason: reason.toString("utf8") });
  process.exit(0);
});
ws.on("error", (error) => {
  emit({ type: "error", message: String(error.message) });
  process.exit(1);
});
