// A loopback HTTP receiver, run as its own process: the shim's outgoing HTTP blocks the
// calling thread while it waits, so a receiver inside the test process could never answer.
//
//   node receiver.js RECORD_FILE '[{"status": 503, "retryAfter": "1"}, {"status": 200, "delayMs": 0}]'
//
// Prints {"port": N} on stdout once listening on 127.0.0.1:0, then appends one JSON line
// per request to RECORD_FILE: method, path, raw headers (wire order and case) and the body
// in base64 (exact bytes). The line is written synchronously before the answer, so it is on
// disk by the time the component's call returns. The n-th request gets the n-th response
// (the last repeats; default 200); {"reset": true} resets the connection instead. Exits when its stdin closes, i.e. when the parent dies.
import { appendFileSync } from "node:fs";
import { createServer } from "node:http";

const [file, spec] = process.argv.slice(2);
const responses = spec ? JSON.parse(spec) : [{ status: 200 }];
let count = 0;

const server = createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const { status, retryAfter, delayMs = 0, reset } = responses[Math.min(count++, responses.length - 1)];
    const record = { method: req.method, path: req.url, rawHeaders: req.rawHeaders, body: Buffer.concat(chunks).toString("base64") };
    appendFileSync(file, JSON.stringify(record) + "\n");
    setTimeout(() => {
      if (reset) return req.socket.resetAndDestroy(); // RST, no response
      res.writeHead(status, { "Content-Type": "text/plain", ...(retryAfter ? { "Retry-After": retryAfter } : {}) });
      res.end(status < 300 ? "ok" : "no");
    }, delayMs);
  });
});

server.listen(0, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n");
});
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
