// What the component asks of its host beyond one POST, under Node.js (jco +
// preview2-shim): typed failures, retries and their waits (wasi:clocks), signing
// timestamps (wall clock), `debug` output (wasi:cli/stderr) and the request timeouts.
// Tests marked `todo` document preview2-shim gaps (see README.md): they run and report,
// but do not fail the suite.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { createServer } from "node:net";
import { test } from "node:test";
import { call, header, loadComponent, readFixture, startReceiver } from "../harness.js";

const { reporter, documents } = await loadComponent();
const started = () => documents.parseEvent(readFixture("default_start_finish", "started.json"));

/// Configures the component for `origin` with `options` on top of the plain fixture case.
function configure(origin, options = {}) {
  const base = JSON.parse(readFixture("default_start_finish", "config.json"));
  const config = { ...base, serverUrl: `${origin}/hook`, ...options };
  const parsed = call(() => documents.parseConfig(JSON.stringify(config)));
  assert.ok(parsed.ok, `parse-config: ${JSON.stringify(parsed.err)}`);
  assert.deepEqual(call(() => reporter.configure(parsed.ok)), { ok: undefined });
}

/// Pushes the started event; returns the result and how long the call blocked.
function pushTimed() {
  const event = started();
  const t0 = performance.now();
  const result = call(() => reporter.onBuildStarted(event));
  return { result, ms: performance.now() - t0 };
}

async function withReceiver(responses, fn) {
  const receiver = await startReceiver(responses);
  try {
    return await fn(receiver);
  } finally {
    receiver.stop();
  }
}

// Must run first: it needs the instance before any `configure`.
test("before configure, a push is the typed not-configured failure", () => {
  const { result } = pushTimed();
  assert.deepEqual(result.err, { error: { tag: "not-configured" }, retryable: false, attempts: 0, deliveryId: "" });
});

test("an invalid option is a typed input-error naming the key", () => {
  assert.equal(call(() => documents.parseConfig('{"serverUrl": 5}')).err?.key, "serverUrl");
  assert.equal(call(() => documents.parseConfig('{"serverUrl": "http://127.0.0.1/", "noSuchOption": 1}')).err?.key, "noSuchOption");
  const parsed = call(() => documents.parseConfig('{"serverUrl": "ftp://127.0.0.1/"}'));
  const key = parsed.err?.key ?? call(() => reporter.configure(parsed.ok)).err?.key;
  assert.equal(key, "serverUrl");
});

test("a 500 is the typed http-status failure, retryable", () =>
  withReceiver([{ status: 500 }], (receiver) => {
    configure(receiver.origin, { maxAttempts: 1 });
    const { result } = pushTimed();
    assert.deepEqual(result.err?.error, { tag: "http-status", val: { status: 500, retryAfter: undefined } });
    assert.equal(result.err.retryable, true);
    assert.equal(result.err.attempts, 1);
    assert.equal(receiver.requests().length, 1);
  }));

test("retryable failures are retried up to maxAttempts, same delivery id and body", () =>
  withReceiver([{ status: 503 }], (receiver) => {
    configure(receiver.origin, { maxAttempts: 3 });
    const { result } = pushTimed();
    assert.equal(result.err?.error.tag, "http-status");
    assert.equal(result.err.attempts, 3);
    const requests = receiver.requests();
    assert.equal(requests.length, 3);
    for (const r of requests) {
      assert.equal(header(r, "Idempotency-Key"), result.err.deliveryId);
      assert.ok(r.body.equals(requests[0].body));
    }
  }));

test("Retry-After is honoured: the backoff wait (monotonic-clock subscribe-duration) really waits", () =>
  withReceiver([{ status: 503, retryAfter: "1" }, { status: 200 }], (receiver) => {
    configure(receiver.origin);
    const { result, ms } = pushTimed();
    assert.equal(result.ok?.tag, "delivered", JSON.stringify(result));
    assert.equal(result.ok.val.attempts, 2);
    assert.ok(ms >= 1000 && ms < 5000, `the call took ${ms} ms; Retry-After asked for 1000`);
    assert.equal(receiver.requests().length, 2);
  }));

test("a closed port is the typed unreachable failure", async () => {
  // A port that was just free: bind it, note it, close it.
  const port = await new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
  configure(`http://127.0.0.1:${port}`, { maxAttempts: 1 });
  const { result } = pushTimed();
  assert.equal(result.err?.error.tag, "unreachable", JSON.stringify(result));
  assert.equal(result.err.retryable, true);
});

test("a connection reset is the typed connection-lost failure, retried", () =>
  withReceiver([{ reset: true }], (receiver) => {
    configure(receiver.origin, { maxAttempts: 2 });
    const { result } = pushTimed();
    assert.equal(result.err?.error.tag, "connection-lost", JSON.stringify(result));
    assert.equal(result.err.retryable, true);
    assert.equal(result.err.attempts, 2);
    assert.equal(receiver.requests().length, 2);
  }));

test("a receiver that never answers is the typed timeout failure", () =>
  withReceiver([{ status: 200, delayMs: 600_000 }], (receiver) => {
    configure(receiver.origin, { connectTimeoutSeconds: 1, timeoutSeconds: 1, maxAttempts: 1 });
    const { result, ms } = pushTimed();
    assert.equal(result.err?.error.tag, "timeout", JSON.stringify(result));
    assert.ok(ms < 5000, `gave up after ${ms} ms`);
  }));

test("Standard Webhooks signing: wall-clock timestamp and a valid signature", () =>
  withReceiver([{ status: 200 }], (receiver) => {
    const key = Buffer.from("status-push node integration key");
    configure(receiver.origin, { signingScheme: "standard-webhooks", signingSecret: `whsec_${key.toString("base64")}` });
    const { result } = pushTimed();
    assert.equal(result.ok?.tag, "delivered", JSON.stringify(result));
    const [request] = receiver.requests();
    const id = header(request, "webhook-id");
    const timestamp = header(request, "webhook-timestamp");
    assert.equal(id, result.ok.val.deliveryId);
    assert.ok(Math.abs(Number(timestamp) - Date.now() / 1000) < 60, `webhook-timestamp ${timestamp} is now`);
    const mac = createHmac("sha256", key).update(`${id}.${timestamp}.`).update(request.body).digest("base64");
    assert.equal(header(request, "webhook-signature"), `v1,${mac}`);
  }));

test("debug writes each request and response to wasi:cli/stderr, credentials redacted", () =>
  withReceiver([{ status: 200 }], (receiver) => {
    configure(receiver.origin, { debug: true, user: "alice", password: "s3cr3t:pw" });
    // The shim writes guest stderr with process.stderr.write (bytes) on this thread.
    const chunks = [];
    const write = process.stderr.write;
    process.stderr.write = (chunk) => (chunks.push(Buffer.from(chunk)), true);
    let result;
    try {
      ({ result } = pushTimed());
    } finally {
      process.stderr.write = write;
    }
    assert.equal(result.ok?.tag, "delivered");
    const text = Buffer.concat(chunks).toString("utf8");
    assert.match(text, new RegExp(`status-push: -> POST ${receiver.origin}/hook`));
    assert.match(text, /status-push: <- 200/);
    assert.match(text, /Authorization: <redacted>/);
    assert.doesNotMatch(text, /s3cr3t|YWxpY2U6czNjcjN0OnB3/);
  }));

// preview2-shim gap: it passes connect-timeout to Node's http.request as `timeout`, a socket
// idle timeout that also covers the wait for the response head, and applies
// first-byte-timeout only once the head has arrived. So the wait for the head is bounded
// by connectTimeoutSeconds, not timeoutSeconds. wasmtime honours both as the WIT says.
const timeoutGap = "preview2-shim 0.26.1: first-byte-timeout not applied before the response head (README.md, Gaps)";

test("timeoutSeconds bounds the wait for the response head", { todo: timeoutGap }, () =>
  withReceiver([{ status: 200, delayMs: 2500 }], (receiver) => {
    configure(receiver.origin, { connectTimeoutSeconds: 5, timeoutSeconds: 1, maxAttempts: 1 });
    const { result, ms } = pushTimed();
    assert.equal(result.err?.error.tag, "timeout", `after ${Math.round(ms)} ms: ${JSON.stringify(result)}`);
  }));

test("a head within timeoutSeconds is accepted even after connectTimeoutSeconds", { todo: timeoutGap }, () =>
  withReceiver([{ status: 200, delayMs: 2000 }], (receiver) => {
    configure(receiver.origin, { connectTimeoutSeconds: 1, timeoutSeconds: 5, maxAttempts: 1 });
    const { result, ms } = pushTimed();
    assert.equal(result.ok?.tag, "delivered", `after ${Math.round(ms)} ms: ${JSON.stringify(result)}`);
  }));
