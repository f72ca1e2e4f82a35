#!/usr/bin/env bash
# End-to-end test of the Buildbot plugin: creates .venv (git-ignored) if missing, installs
# the pinned dependencies and this package, then runs a real master and worker with the
# stock HttpStatusPush and WasmStatusPush side by side (tests/test_e2e.py), after the
# host-level tests (tests/test_component.py). Needs target/status-push.wasm (built by
# `cargo xtask wasm`; scripts/test.sh builds it first) or $STATUS_PUSH_WASM.
# Network: PyPI through pip on the first run, then 127.0.0.1 only. STATUS_PUSH_OUTAGE_SECONDS
# sets the length of the outage test's receiver outage (default 120).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export STATUS_PUSH_WASM="${STATUS_PUSH_WASM:-$repo/target/status-push.wasm}"
venv="$here/.venv"
python="${PYTHON:-python3}"
started=$SECONDS

if [[ ! -f "$STATUS_PUSH_WASM" ]]; then
    echo "FAIL: $STATUS_PUSH_WASM is missing; build it with: cargo xtask wasm" >&2
    exit 1
fi

if [[ ! -x "$venv/bin/python" ]]; then
    echo "== creating $venv"
    timeout 120 "$python" -m venv "$venv"
fi
# Reinstall only when the pins or the package metadata change.
stamp="$venv/.installed-$(cat "$here/requirements.lock" "$here/pyproject.toml" | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
    echo "== installing pinned dependencies (requirements.lock)"
    timeout 420 "$venv/bin/python" -m pip install --disable-pip-version-check -q \
        -r "$here/requirements.lock"
    rm -f "$venv"/.installed-*
    touch "$stamp"
fi
# The plugin and its native host (PyO3), built by maturin in the dev profile into the
# workspace's target/, so it reuses the wasmtime the workspace already built.
echo "== building the native host (maturin develop)"
(cd "$here" && timeout 1500 "$venv/bin/maturin" develop --quiet)

echo "== running tests (component: $STATUS_PUSH_WASM)"
status=0
(cd "$here" && timeout 1200 "$venv/bin/python" -m pytest tests -v -p no:cacheprovider) || status=$?

echo
echo "== side-by-side results (.e2e/report.txt)"
cat "$here/.e2e/report.txt" 2>/dev/null || echo "(no report: the end-to-end test did not get that far)"
echo
if [[ $status -eq 0 ]]; then
    echo "PASS: buildbot integration ($((SECONDS - started))s)"
else
    echo "FAIL: buildbot integration, pytest exit $status ($((SECONDS - started))s); logs in $here/.e2e/"
fi
exit $status
