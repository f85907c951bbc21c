// One JSON object per line on stdout, and commands as JSON lines on stdin: the Python test drives.
import { createInterface } from "node:readline";

export function emit(record) {
  process.stdout.write(`${JSON.stringify(record)}\n`);
}

export function onCommand(handle, onEnd) {
  const lines = createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    if (line.trim()) handle(JSON.parse(line));
  });
  lines.on("close", onEnd);
}
