#!/usr/bin/env python3
"""Instructions per event of `status-push-bench component --only RUN`, counted by
callgrind.

Each run is measured at 200 and at 1200 events; (I(1200) - I(200)) / 1000 is the cost of
one event, with start-up and compilation cancelled out. The bench's receiver thread is
left out, and the rest is split by where the code comes from; the guest's compiled
functions are named from wasmtime's perf map (`--perf-map`): by index in the stripped
release build, by name after `CARGO_PROFILE_WASM_RELEASE_STRIP=false cargo xtask wasm`.
`STATUS_PUSH_WASM=FILE` measures another component.

    cargo xtask wasm && cargo build --release -p status-push-cli
    python3 scripts/callgrind_per_event.py skip canned record native replay

Counts are user-space instructions only (no kernel time), and repeatable to about 0.1%
on a busy machine, unlike wall-clock figures. Needs valgrind (callgrind_annotate).

Host calls per event are counted from the same runs' call arcs: calls of imported host
functions (wasmtime's `HostFn::entrypoint`: wasi:http, clocks, random, streams) and of
the component model's built-ins (`libcalls::trampolines::*`: the WASI 0.3 build's
streams, futures, waitable sets and `task.return`).
"""

import bisect
import collections
import glob
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target/release/status-push-bench")
LINE = re.compile(r"^\s*([\d,]+)\s+\([^)]*\)\s+(.*?)(?:\s+\[(.*)\])?$")
CATEGORIES = [
    ("wasmtime_wasi_http", "wasi:http host"),
    ("wasmtime_wasi", "wasi host (streams, pollables, table)"),
    ("wasmtime", "wasmtime (calls, lifting/lowering, fibers)"),
    ("hyper", "hyper / http"),
    ("http::", "hyper / http"),
    ("http_body", "hyper / http"),
    ("tokio", "tokio"),
    ("status_push", "status-push crates (native)"),
    ("sha2", "status-push crates (native)"),
    ("serde_json", "status-push crates (native)"),
]


def category(function, obj):
    if obj == "???":
        return "guest (compiled wasm)"
    if "libc.so" in (obj or ""):
        return "libc (malloc, memcpy)"
    for key, name in CATEGORIES:
        if key in function:
            return name
    return "other"


def run(mode, events, out):
    wasm = os.environ.get("STATUS_PUSH_WASM", os.path.join(ROOT, "target/status-push.wasm"))
    args = [BINARY, "--wasm", wasm, "component", "--only", mode, "--no-pooling",
            "--perf-map", "--events", str(events), "--concurrency", "1"]
    # A first run fills the compile cache, so the counted runs do not compile. It runs
    # under valgrind too: the CPU features valgrind reports are part of the cache key.
    subprocess.run(["valgrind", "--tool=none"] + args[:-4] + ["--events", "10"],
                   check=True, capture_output=True)
    log = subprocess.run(["valgrind", "--tool=callgrind", "--separate-threads=yes",
                          f"--callgrind-out-file={out}"] + args,
                         capture_output=True, text=True, check=True).stderr
    return int(re.search(r"==(\d+)==", log).group(1))


def perf_map(pid):
    rows = []
    try:
        with open(f"/tmp/perf-{pid}.map") as f:
            for line in f:
                start, size, name = line.rstrip("\n").split(" ", 2)
                rows.append((int(start, 16), int(size, 16), name))
    except FileNotFoundError:
        pass
    rows.sort()
    return rows


CALL = re.compile(r"^c?fn=\((\d+)\)(?: (.*))?$")


def host_calls(path):
    """Calls of imported host functions and of canonical built-ins in one callgrind file."""
    names, callee = {}, None
    imports = builtins = 0
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith(("fn=", "cfn=")):
                m = CALL.match(line.rstrip("\n"))
                if m:
                    if m.group(2):
                        names[m.group(1)] = m.group(2)
                    callee = names.get(m.group(1)) if line.startswith("cfn=") else None
            elif line.startswith("calls=") and callee:
                n = int(line[6:].split()[0])
                if callee.endswith("HostFn::entrypoint"):
                    imports += n
                elif "component::libcalls::trampolines::" in callee:
                    builtins += n
    return imports, builtins


def costs(prefix, pid):
    names = perf_map(pid)
    starts = [r[0] for r in names]
    by_category, by_function = collections.Counter(), collections.Counter()
    for path in glob.glob(prefix + "-*"):
        text = subprocess.run(["callgrind_annotate", "--threshold=100", path],
                              capture_output=True, text=True).stdout
        rows = []
        for line in text.splitlines():
            m = LINE.match(line)
            if m and "PROGRAM TOTALS" not in line and ":" in m.group(2):
                rows.append((int(m.group(1).replace(",", "")), m.group(2), m.group(3)))
        if any("counting_receiver" in f for _, f, _ in rows):
            continue  # the bench's receiver
        imports, builtins = host_calls(path)
        by_category["host calls: imports"] += imports
        by_category["host calls: built-ins"] += builtins
        for ir, function, obj in rows:
            if obj == "???":
                address = re.search(r"0x([0-9a-f]+)", function)
                if address:
                    a = int(address.group(1), 16)
                    i = bisect.bisect_right(starts, a) - 1
                    if i >= 0 and a < names[i][0] + names[i][1]:
                        function = names[i][2]
            by_category[category(function, obj)] += ir
            by_function[function] += ir
    return by_category, by_function


def main():
    modes = sys.argv[1:] or ["skip", "canned", "record", "native", "replay"]
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            measured = {}
            for events in (200, 1200):
                prefix = os.path.join(tmp, f"{mode}-{events}.out")
                measured[events] = costs(prefix, run(mode, events, prefix))
            (small_c, small_f), (large_c, large_f) = measured[200], measured[1200]
            per = {k: (large_c[k] - small_c[k]) / 1000 for k in set(small_c) | set(large_c)}
            calls = {k: per.pop(k, 0) for k in ("host calls: imports", "host calls: built-ins")}
            print(f"{mode}: {sum(per.values()):,.0f} instructions per event")
            print("  host calls per event: {:.1f} imports, {:.1f} canonical built-ins".format(
                *calls.values()))
            for name, value in sorted(per.items(), key=lambda kv: -kv[1]):
                if abs(value) >= 100:
                    print(f"  {value:>10,.0f}  {name}")
            top = sorted(((large_f[k] - small_f.get(k, 0)) / 1000, k) for k in large_f)[-10:]
            print("  top functions:")
            for value, name in reversed(top):
                print(f"  {value:>10,.0f}  {name[:110]}")


if __name__ == "__main__":
    main()
