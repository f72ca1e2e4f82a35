#!/usr/bin/env python3
"""System calls per event of `status-push-bench component --only RUN`, counted by
`strace -f -c`.

Each run is counted at 500 and at 2500 events; the difference divided by 2000 is one
event's calls, with start-up cancelled out. The bench's receiver runs in the same process,
so its calls (one read and one write of the request, one epoll wait) are in every row.
Calls that wake another thread (eventfd `write`, `futex`) and the extra `epoll_wait`s are
the task hops that instruction counts do not show.

    cargo xtask wasm && cargo build --release -p status-push-cli
    python3 scripts/syscalls_per_event.py record canned native replay
"""

import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target/release/status-push-bench")


def counts(mode, events, out):
    subprocess.run(["strace", "-f", "-c", "-o", out, BINARY, "component", "--only", mode,
                    "--events", str(events), "--concurrency", "1"],
                   check=True, capture_output=True)
    calls = {}
    with open(out) as f:
        for line in f:
            fields = line.split()
            # "% time  seconds  usecs/call  calls  [errors]  syscall"
            if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
                calls[fields[-1]] = int(fields[3])
    return calls


def main():
    modes = sys.argv[1:] or ["record", "canned", "native", "replay"]
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            small = counts(mode, 500, os.path.join(tmp, f"{mode}-500"))
            large = counts(mode, 2500, os.path.join(tmp, f"{mode}-2500"))
            per = {k: (large.get(k, 0) - small.get(k, 0)) / 2000 for k in set(small) | set(large)}
            shown = {k: v for k, v in per.items() if abs(v) >= 0.05}
            listed = ", ".join(f"{k} {v:.2f}" for k, v in sorted(shown.items(), key=lambda kv: -kv[1]))
            print(f"{mode}: {sum(shown.values()):.2f} system calls per event ({listed or 'none'})")


if __name__ == "__main__":
    main()
