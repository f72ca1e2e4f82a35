"""The native status-push host (`_native`, PyO3 over the Rust library `status-push-host`),
loaded once per process.

`Host` compiles the component, `Host.reporter(config_json)` gives a configured instance,
`Outbox(location, key=None)` is the durable outbox the `status-push` CLI reads too: a SQLite file,
or a postgresql:// URL several masters share. Every call that runs the component or
touches the network or the disk releases the GIL.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ._native import (
    CONFIG_KEYS,
    OUTBOX_KEY_FILE_ENV,
    RELAY_ONLY_KEYS,
    Courier,
    Host,
    Outbox,
    Reporter,
    check_outbox_key,
)

__all__ = [
    "Host",
    "Outbox",
    "Reporter",
    "check_outbox_key",
    "default_wasm_path",
    "shared_host",
]

_PACKAGE_DIR = Path(__file__).resolve().parent
# The checkout this package lives in: integrations/buildbot/buildbot_status_push/ -> repo root.
_REPO_WASM = _PACKAGE_DIR.parents[2] / "target" / "status-push.wasm"


def default_wasm_path() -> Path:
    """Where status-push.wasm is looked for when no `wasm_path` is given.

    $STATUS_PUSH_WASM, else the copy shipped inside the package (`pip install` puts it
    there), else the repository's own build output, target/status-push.wasm.
    """
    env = os.environ.get("STATUS_PUSH_WASM")
    if env:
        return Path(env)
    bundled = _PACKAGE_DIR / "status-push.wasm"
    if bundled.is_file():
        return bundled
    return _REPO_WASM


_hosts: dict[tuple[str, int], Host] = {}
_hosts_lock = threading.Lock()


def shared_host(path: Path) -> Host:
    """The host for `path`, compiled once per process and file version (about a second)."""
    try:
        key = (str(path.resolve()), path.stat().st_mtime_ns)
    except OSError as e:
        from .results import ComponentError

        raise ComponentError(f"cannot read {path}: {e}") from e
    with _hosts_lock:
        host = _hosts.get(key)
        if host is None:
            host = _hosts[key] = Host(str(path))
        return host
