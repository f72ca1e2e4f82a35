// Shared by the tests: the transpiled component, loopback receivers in child processes,
// the fixture cases, and the wasmtime CLI for cross-checks.
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const root = join(here, "..", "..");
export const wasmPath = join(root, "target", "status-push.wasm");
export const fixturesDir = join(root, "tests", "fixtures", "buildbot");
export const cliPath = process.env.STATUS_PUSH_CLI ?? join(root, "target", "debug", "status-push");

/// The component as `jco transpile` left it in gen/ (test.sh does that first). The ES
/// module holds one instance per test process; `configure` replaces its configuration.
export async function loadComponent() {
  const { reporter, documents } = await import(join(here, "gen", "status-push", "status-push.js"));
  return { reporter, documents };
}

/// Runs `fn`; returns {ok} or, for a WIT `result` error (jco throws a ComponentError
/// carrying it), {err}. Anything else (a trap, a shim exception) is rethrown.
export function call(fn) {
  try {
    return { ok: fn() };
  } catch (e) {
    if (e?.constructor?.name === "ComponentError") return { err: e.payload };
    throw e;
  }
}

/// Starts receiver.js in its own process (see there for why). `responses` is a list of
/// {status, retryAfter, delayMs}, one per request, the last repeating.
export async function startReceiver(responses = [{ status: 200 }]) {
  const dir = mkdtempSync(join(tmpdir(), "status-push-node-"));
  const file = join(dir, "requests.jsonl");
  writeFileSync(file, "");
  const child = spawn(process.execPath, [join(here, "receiver.js"), file, JSON.stringify(responses)], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  const line = await new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`receiver exited (${code}) before listening`)));
    createInterface({ input: child.stdout }).once("line", resolve);
  });
  child.removeAllListeners("exit");
  const { port } = JSON.parse(line);
  return {
    origin: `http://127.0.0.1:${port}`,
    /// Every request received so far: {method, path, headers: [[name, value]...], body: Buffer}.
    requests() {
      return readFileSync(file, "utf8")
        .split("\n")
        .filter(Boolean)
        .map((l) => {
          const r = JSON.parse(l);
          const headers = [];
          for (let i = 0; i < r.rawHeaders.length; i += 2) headers.push([r.rawHeaders[i], r.rawHeaders[i + 1]]);
          return { method: r.method, path: r.path, headers, body: Buffer.from(r.body, "base64") };
        });
    },
    stop() {
      child.kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/// The value of header `name` (case-insensitive), or undefined; fails on duplicates.
export function header(request, name) {
  const found = request.headers.filter(([n]) => n.toLowerCase() === name.toLowerCase());
  if (found.length > 1) throw new Error(`header ${name} sent ${found.length} times`);
  return found[0]?.[1];
}

/// The recorded Buildbot cases, sorted.
export function fixtureCases() {
  return readdirSync(fixturesDir)
    .filter((name) => existsSync(join(fixturesDir, name, "expected.json")))
    .sort();
}

export function readFixture(name, file) {
  return readFileSync(join(fixturesDir, name, file), "utf8");
}

/// `serverUrl` with its origin replaced, path and query kept byte for byte (as the Rust
/// tests' `with_origin`; `new URL` would re-encode the path).
export function withOrigin(serverUrl, origin) {
  const afterScheme = serverUrl.includes("://") ? serverUrl.split("://").slice(1).join("://") : serverUrl;
  const pathStart = afterScheme.search(/[/?]/);
  return origin + (pathStart < 0 ? "" : afterScheme.slice(pathStart));
}

/// Pushes one event with the wasmtime CLI (`status-push push`); resolves to its exit code
/// and output. Asynchronous, so it runs while the component blocks this thread.
export function cliPush(configJson, event, buildFile) {
  const dir = mkdtempSync(join(tmpdir(), "status-push-cli-"));
  const config = join(dir, "config.json");
  writeFileSync(config, configJson);
  const args = ["push", "--wasm", wasmPath, "--config", config, "--event", event, "--build", buildFile];
  return new Promise((resolve) => {
    execFile(cliPath, args, { timeout: 60_000 }, (error, stdout, stderr) => {
      rmSync(dir, { recursive: true, force: true });
      resolve({ code: error ? (error.code ?? 1) : 0, stdout, stderr });
    });
  });
}
