#!/usr/bin/env bash
# The main job: push a sample build's started and finished events through the component
# to a local receiver, and print what arrived.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo run --quiet --package status-push-cli --bin status-push -- demo
