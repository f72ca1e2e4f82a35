// Every recorded Buildbot 4.3.0 case through target/status-push.wasm under Node.js (jco +
// preview2-shim): the requests must be exactly what Buildbot sent (expected.json), and the
// same, header for header, as what the wasmtime CLI sends for the same input.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { call, cliPath, cliPush, fixtureCases, fixturesDir, header, loadComponent, readFixture, startReceiver, withOrigin } from "../harness.js";

const { reporter, documents } = await loadComponent();
const cases = fixtureCases();
const events = [
  ["started", (e) => reporter.onBuildStarted(e)],
  ["finished", (e) => reporter.onBuildFinished(e)],
];

test("the recorded cases are present", () => {
  assert.ok(cases.length >= 9, `expected the recorded cases, found ${cases.length}`);
});

for (const name of cases) {
  test(name, { timeout: 120_000 }, async (t) => {
    const config = JSON.parse(readFixture(name, "config.json"));
    const expected = JSON.parse(readFixture(name, "expected.json"));
    const configFor = (origin) => JSON.stringify({ ...config, serverUrl: withOrigin(config.serverUrl, origin) });
    const node = await startReceiver();
    const withCli = existsSync(cliPath);
    const wasmtime = withCli ? await startReceiver() : null;
    t.after(() => [node, wasmtime].forEach((r) => r?.stop()));

    // The wasmtime CLI runs in child processes meanwhile: the component blocks this thread.
    const cliRuns =
      withCli &&
      (async () => {
        const runs = [];
        for (const [event] of events) runs.push(await cliPush(configFor(wasmtime.origin), event, join(fixturesDir, name, `${event}.json`)));
        return runs;
      })();

    const parsed = call(() => documents.parseConfig(configFor(node.origin)));
    assert.ok(parsed.ok, `parse-config: ${JSON.stringify(parsed.err)}`);
    assert.deepEqual(call(() => reporter.configure(parsed.ok)), { ok: undefined });

    let seen = 0;
    for (const [event, push] of events) {
      await t.test(event, () => {
        const build = call(() => documents.parseEvent(readFixture(name, `${event}.json`)));
        assert.ok(build.ok, `parse-event: ${JSON.stringify(build.err)}`);
        const result = call(() => push(build.ok));
        const got = node.requests().slice(seen);
        seen += got.length;
        const want = expected[event];
        assert.ok(want.length <= 1, `${want.length} requests per event is not a recorded shape`);
        if (want.length === 0) {
          assert.equal(result.ok?.tag, "skipped", `Buildbot sent nothing; the component returned ${JSON.stringify(result)}`);
          assert.equal(got.length, 0, "no request is made");
          return;
        }
        assert.equal(result.ok?.tag, "delivered", JSON.stringify(result));
        assert.equal(result.ok.val.status, 200);
        assert.equal(result.ok.val.attempts, 1);
        assert.equal(got.length, 1, "one request");
        const [request] = got;
        assertBuildbotRequest(request, want[0]);
        assert.equal(header(request, "Idempotency-Key"), result.ok.val.deliveryId, "the delivery id is the one sent");
      });
    }

    await t.test("same requests as the wasmtime CLI", { skip: !withCli && `${cliPath} not built` }, async () => {
      const runs = await cliRuns;
      runs.forEach((run, i) => assert.equal(run.code, 0, `CLI ${events[i][0]}: ${run.stderr}`));
      const fromNode = node.requests().map(comparable);
      const fromWasmtime = wasmtime.requests().map(comparable);
      assert.deepEqual(fromNode, fromWasmtime);
    });
  });
}

/// Method, path, Buildbot's headers (in its order), basic auth and the exact body bytes.
function assertBuildbotRequest(request, want) {
  assert.equal(request.method, want.method);
  assert.equal(request.path, want.path);
  const names = request.headers.map(([n]) => n.toLowerCase());
  let last = -1;
  for (const [name, value] of Object.entries(want.headers)) {
    assert.equal(header(request, name), value, `header ${name}`);
    const at = names.indexOf(name.toLowerCase());
    assert.ok(at > last, `header ${name} is sent in Buildbot's order`);
    last = at;
  }
  const auth = header(request, "Authorization");
  const basic = auth?.startsWith("Basic ") ? Buffer.from(auth.slice(6), "base64").toString("utf8") : null;
  const pair = basic === null ? null : [basic.slice(0, basic.indexOf(":")), basic.slice(basic.indexOf(":") + 1)];
  assert.deepEqual(pair, want.basic_auth, "basic auth");
  assert.equal(header(request, "Content-Length"), String(request.body.length), "Content-Length");
  // Compared as text for a readable diff; the bodies are ASCII (non-ASCII is \\u-escaped),
  // so equal text here is equal bytes.
  assert.ok(!request.body.some((b) => b > 0x7f), "the body is ASCII");
  assert.equal(request.body.toString("latin1"), want.body, "body");
}

/// A request as both runtimes must send it. Header names are compared case-insensitively
/// (hyper lowercases them, Node keeps the guest's case), and `Host` (each receiver's own
/// port) and `Connection` (Node's agent adds `keep-alive`) are the transports', not the
/// component's. The delivery id covers the destination URL, and the two runtimes post to
/// different receivers, so only its form is compared.
function comparable(request) {
  const id = (n, v) => (n === "idempotency-key" && /^sp_[0-9a-f]{32}$/.test(v) ? "sp_<id>" : v);
  return {
    method: request.method,
    path: request.path,
    headers: request.headers
      .map(([n, v]) => [n.toLowerCase(), v])
      .filter(([n]) => n !== "host" && n !== "connection")
      .map(([n, v]) => [n, id(n, v)]),
    body: request.body.toString("base64"),
  };
}
