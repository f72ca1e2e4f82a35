"""Helpers shared by the tests: a recording HTTP receiver on 127.0.0.1 and bounded waits."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, TypeVar

import pytest

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], Optional[T]], timeout: float, every: float = 0.2) -> T:
    """Polls `check` until it returns something truthy; fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def get_json(api: str, path: str, **kwargs: Any) -> Any:
    """GET a master's REST API (`api` = http://…/api/v2)."""
    import requests

    r = requests.get(f"{api}/{path}", timeout=10, **kwargs)
    r.raise_for_status()
    return r.json()


def force(api: str, scheduler: str, builderid: int, who: str) -> int:
    """Forces a build through a master's REST API (`api` = http://…/api/v2) and the force
    scheduler `scheduler`; returns its build request's id."""
    import requests

    r = requests.post(
        f"{api}/forceschedulers/{scheduler}",
        json={
            "jsonrpc": "2.0",
            "method": "force",
            "id": 1,
            "params": {"builderid": str(builderid), "reason": who, "owner": who},
        },
        timeout=10,
    )
    r.raise_for_status()
    assert "error" not in r.json(), r.json()
    _bsid, brids = r.json()["result"]
    return int(list(brids.values())[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Request:
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def doc(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def event(self) -> str:
        return "finished" if self.doc()["complete"] else "started"


@dataclass
class Receiver:
    """A loopback HTTP receiver that records every POST; can be stopped and restarted on
    the same port (stopped = connection refused)."""

    name: str
    port: int = 0
    status: int = 200  # what it answers; read per request, so it can change while running
    requests: list[Request] = field(default_factory=list)
    tls: Any = None  # an ssl.SSLContext: serve HTTPS
    _server: Optional[ThreadingHTTPServer] = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append(Request(self.path, list(self.headers.items()), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def for_build(self, buildid: int) -> dict[str, list[Request]]:
        out: dict[str, list[Request]] = {"started": [], "finished": []}
        for r in list(self.requests):
            if r.doc().get("buildid") == buildid:
                out[r.event].append(r)
        return out
