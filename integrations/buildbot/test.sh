#!/usr/bin/env bash
# End-to-end test of the Buildbot plugin: builds the plugin's wheel (`pip wheel`), installs
# it with the pinned dependencies into a fresh virtualenv, as an operator would, then runs
# the host-level tests (tests/test_component.py) and real masters and workers: the stock
# HttpStatusPush and WasmStatusPush side by side (tests/test_e2e.py), the outbox's failures
# (tests/test_outbox.py), two masters sharing it (tests/test_multimaster.py). Needs
# target/status-push.wasm (built by `cargo xtask wasm`; scripts/test.sh builds it first) or
# $STATUS_PUSH_WASM.
# Network: PyPI through pip on the first run, then 127.0.0.1 only. STATUS_PUSH_OUTAGE_SECONDS
# sets the length of the outage test's receiver outage (default 120).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export STATUS_PUSH_WASM="${STATUS_PUSH_WASM:-$repo/target/status-push.wasm}"
venv="$here/.install/venv"
wheels="$here/.install/wheel"
wheelhouse="$here/.wheelhouse"
python="${PYTHON:-python3}"
started=$SECONDS

if [[ ! -f "$STATUS_PUSH_WASM" ]]; then
    echo "FAIL: $STATUS_PUSH_WASM is missing; build it with: cargo xtask wasm" >&2
    exit 1
fi

# The pinned dependencies as wheels, fetched once per requirements.lock: every run then
# installs offline.
stamp="$wheelhouse/.fetched-$(sha256sum "$here/requirements.lock" | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
    echo "== fetching the pinned dependencies (requirements.lock) into $wheelhouse"
    rm -rf "$wheelhouse"
    timeout 420 "$python" -m pip download --disable-pip-version-check -q --only-binary=:all: \
        -r "$here/requirements.lock" -d "$wheelhouse"
    touch "$stamp"
fi
offline=(--disable-pip-version-check -q --no-index --find-links "$wheelhouse")

# The plugin as an operator installs it: a fresh virtualenv, the dependencies, then the
# wheel that `pip wheel` makes of this directory. The wheel's native host is built in the dev
# profile into the workspace's target/, so it reuses the workspace's wasmtime build (a
# release wheel is `pip wheel` without MATURIN_PEP517_ARGS: README, "Install").
echo "== a fresh virtualenv with the pinned dependencies ($venv)"
rm -rf "$venv" "$wheels"
timeout 120 "$python" -m venv "$venv"
timeout 420 "$venv/bin/pip" install "${offline[@]}" -r "$here/requirements.lock"
echo "== pip wheel ./integrations/buildbot"
PIP_NO_INDEX=1 PIP_FIND_LINKS="$wheelhouse" MATURIN_PEP517_ARGS="--profile dev" \
    timeout 1500 "$venv/bin/pip" wheel --disable-pip-version-check -q --no-deps -w "$wheels" "$here"
wheel=("$wheels"/buildbot_status_push-*.whl)
"$venv/bin/python" - "${wheel[0]}" <<'PY'
import sys, zipfile
wheel = sys.argv[1]
names = zipfile.ZipFile(wheel).namelist()
problems = [
    what
    for what, ok in (
        ("a manylinux tag", "-manylinux_" in wheel),
        ("the native module", any(n.startswith("buildbot_status_push/_native") for n in names)),
        ("status-push.wasm", "buildbot_status_push/status-push.wasm" in names),
    )
    if not ok
]
if problems:
    sys.exit(f"FAIL: {wheel} lacks " + ", ".join(problems))
print(f"   {wheel.rsplit('/', 1)[-1]}: native module and status-push.wasm inside")
PY
# Installed with no Rust toolchain on PATH: the wheel is all it needs.
no_cargo=$(tr ':' '\n' <<<"$PATH" | while read -r dir; do
    [[ -n "$dir" && ! -x "$dir/cargo" && ! -x "$dir/rustc" ]] && printf '%s:' "$dir"
done)
echo "== pip install the wheel (PATH without cargo)"
PATH="${no_cargo%:}" "$venv/bin/pip" install "${offline[@]}" --no-deps "${wheel[0]}"

echo "== running tests (component: $STATUS_PUSH_WASM)"
status=0
# -P: the tests import the installed package, never this directory's sources.
(cd "$here" && STATUS_PUSH_FROM_WHEEL="${wheel[0]}" timeout 1200 "$venv/bin/python" -P -m pytest tests -v -p no:cacheprovider) || status=$?

# Not a timing (bench.py's figures are the README's, from runs on a quiet machine): that
# the benchmark still delivers every event through each reporter, so it cannot rot unseen.
if [[ $status -eq 0 ]]; then
    echo "== bench.py still runs: 20 events through each reporter"
    mkdir -p "$here/.e2e"
    (cd "$here" && timeout 180 "$venv/bin/python" -P bench.py --events 20 --max-seconds 120 \
        --order stock,wasm,wasm-memory >"$here/.e2e/bench-smoke.txt" 2>&1) || status=$?
    tail -4 "$here/.e2e/bench-smoke.txt"
fi

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
