#!/usr/bin/env python3
"""Which newer patch of the pinned wasmtime major the registry offers for the whole
family: `wasmtime`, `wasmtime-wasi` and `wasmtime-wasi-http`.

The three crates pin each other exactly (`wasmtime-wasi-http 48.0.8` needs
`wasmtime =48.0.8`), so a bump is possible only to a patch that all three have
published; `wasmtime` alone reaching 48.0.11 does not help. This reads crates.io's
sparse index (one small file per crate), lists each crate's unyanked releases of the
pinned major above the pin, with the Rust version each needs, and names the newest
patch the whole family shares, or says that there is none yet.

    python3 scripts/wasmtime_family.py           # what the registry offers
    python3 scripts/wasmtime_family.py --strict  # exit 4 when a bump is possible

It only informs: without network (CI offline, a proxy refusing) it says so and exits 0,
as it does when there is nothing to bump to. `--strict` turns "a bump is possible" into
exit code 4, for a scheduled job that should nag. The pin is read from
host-harness/Cargo.toml; `CRATES_INDEX` overrides the index URL (default
https://index.crates.io).
"""

import json
import os
import re
import sys
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = os.path.join(ROOT, "host-harness", "Cargo.toml")
FAMILY = ["wasmtime", "wasmtime-wasi", "wasmtime-wasi-http"]
INDEX = os.environ.get("CRATES_INDEX", "https://index.crates.io").rstrip("/")
TIMEOUT_S = 15
# Exit code of `--strict` when every crate of the family has a newer patch.
BUMP_AVAILABLE = 4


def version_key(text):
    """A release's sort key; pre-releases (`48.0.9-rc1`) are left out by the caller."""
    return tuple(int(part) for part in text.split("."))


def pinned():
    """The exact version each crate of the family is pinned to in the host's manifest."""
    with open(MANIFEST, encoding="utf-8") as f:
        text = f.read()
    pins = {}
    for name in FAMILY:
        match = re.search(
            r'^%s\s*=\s*\{[^}]*version\s*=\s*"=([0-9.]+)"' % re.escape(name), text, re.M
        )
        if not match:
            sys.exit(f"{MANIFEST}: no exact pin (\"=X.Y.Z\") of {name}")
        pins[name] = match.group(1)
    return pins


def index_path(name):
    """The sparse index's path of a crate (names of four or more characters)."""
    return f"{name[:2]}/{name[2:4]}/{name}"


def releases(name):
    """Every unyanked, non-pre-release version of `name`, with its `rust_version`."""
    request = urllib.request.Request(
        f"{INDEX}/{index_path(name)}",
        headers={"User-Agent": "status-push scripts/wasmtime_family.py"},
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        body = response.read().decode("utf-8")
    found = {}
    for line in body.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        version = entry["vers"]
        if entry.get("yanked") or not re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", version):
            continue
        found[version] = entry.get("rust_version") or "?"
    return found


def main(argv):
    strict = "--strict" in argv[1:]
    unknown = [a for a in argv[1:] if a != "--strict"]
    if unknown:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    pins = pinned()
    if len(set(pins.values())) != 1:
        print(f"the family is pinned unevenly: {pins}; pin all three to one version")
        return 1
    pin = next(iter(pins.values()))
    major = pin.split(".")[0]
    offered = {}
    for name in FAMILY:
        try:
            offered[name] = releases(name)
        except (urllib.error.URLError, OSError, ValueError) as e:
            # Offline is not a failure: this script informs, it does not gate.
            print(f"registry not reachable ({INDEX}: {e}); pinned {pin}, nothing checked")
            return 0
    print(f"pinned: {pin} (host-harness/Cargo.toml)")
    newer_by_crate = {}
    for name in FAMILY:
        newer = sorted(
            (v for v in offered[name] if v.split(".")[0] == major
             and version_key(v) > version_key(pin)),
            key=version_key,
        )
        newer_by_crate[name] = set(newer)
        latest = max(offered[name], key=version_key, default="none")
        shown = ", ".join(f"{v} (Rust {offered[name][v]})" for v in newer) or "none"
        print(f"  {name:<20} newer {major}.x: {shown}; latest of all majors: {latest}")
    common = set.intersection(*newer_by_crate.values())
    if not common:
        print(f"no newer {major}.x patch of the whole family yet: {pin} stays")
        return 0
    best = max(common, key=version_key)
    needs = {offered[name][best] for name in FAMILY}
    print(
        f"bump possible: the whole family has {best} (Rust {', '.join(sorted(needs))}); "
        f"change the three `={pin}` pins in host-harness/Cargo.toml and run scripts/test.sh"
    )
    return BUMP_AVAILABLE if strict else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
