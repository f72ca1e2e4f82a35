#!/usr/bin/env bash
# Every check CI runs: formatting, clippy (native and wasm), unit and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo clippy --package status-push --lib --target wasm32-unknown-unknown --quiet -- -D warnings
cargo test --workspace
