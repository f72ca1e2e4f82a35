#!/usr/bin/env bash
# Runs target/status-push.wasm under Node.js: `jco transpile` turns the component into an
# ES module on @bytecodealliance/preview2-shim, then `node --test` drives it against
# loopback receivers (127.0.0.1 only). Assumes the component is built (scripts/test.sh
# builds it first); uses target/debug/status-push, when present, for the wasmtime
# cross-check.
set -euo pipefail
cd "$(dirname "$0")"

wasm=../../target/status-push.wasm
if [[ ! -f $wasm ]]; then
  echo "test.sh: $wasm is missing; build it with: cargo xtask wasm" >&2
  exit 1
fi

# Install exactly the lockfile, again whenever it changed since the last install.
stamp=node_modules/.package-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  timeout 600 npm ci --no-audit --no-fund
  echo "$want" >"$stamp"
fi

# Always from the current .wasm: a stale transpile would test the wrong component.
rm -rf gen
timeout 120 node_modules/.bin/jco transpile "$wasm" -o gen/status-push --quiet

# One test file at a time: the timing assertions should not compete for the 2 cores.
exec timeout 600 node --test --test-concurrency=1 --test-timeout=180000 test/*.test.js
