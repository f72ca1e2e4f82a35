#!/usr/bin/env bash
# Installs what the build needs (idempotent) and builds target/status-push.wasm.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v rustup >/dev/null; then
  echo "status-push needs rustup (https://rustup.rs) to install Rust 1.95.0" >&2
  exit 1
fi
# rust-toolchain.toml pins the compiler; these are no-ops once installed.
rustup toolchain install 1.95.0 --profile minimal --component rustfmt,clippy >/dev/null
rustup target add wasm32-unknown-unknown >/dev/null
cargo xtask wasm
