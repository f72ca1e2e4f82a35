"""Helpers shared by the tests: a recording HTTP receiver on 127.0.0.1 and bounded waits."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import pytest

T = TypeVar("T")
# The virtualenv's `buildbot` and `buildbot-worker`.
_BIN = Path(sys.executable).parent


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


class HangingReceiver:
    """Takes connections on 127.0.0.1 and never answers: a receiver that hangs."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = int(self._listener.getsockname()[1])
        self.connections = 0
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed by stop()
                return
            self.connections += 1
            self._held.append(conn)

    def stop(self) -> None:
        self._listener.close()
        for conn in self._held:
            conn.close()


class Master:
    """One master and its worker, each in its own process: `cfg` is copied into the
    master's basedir as master.cfg, next to a settings.json it reads."""

    def __init__(
        self, name: str, workername: str, env: dict[str, str], work: Path, cfg: Path
    ) -> None:
        self.name = name
        self.workername = workername
        self.env = env
        self.work = work
        self.cfg = cfg
        self.dir = work / name
        self.worker_dir = work / f"worker-{workername}"
        self.www_port = free_port()
        self.pb_port = free_port()
        self.api = f"http://127.0.0.1:{self.www_port}/api/v2"
        self.url = f"http://127.0.0.1:{self.www_port}/"
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.worker: Optional[subprocess.Popen[bytes]] = None

    def log(self) -> str:
        path = self.dir / "twistd.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def _spawn(self, argv: list[str], logname: str) -> subprocess.Popen[bytes]:
        with (self.work / logname).open("wb") as out:
            return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env)

    def _run(self, *argv: str) -> None:
        out = subprocess.run(argv, timeout=120, env=self.env, capture_output=True)
        assert out.returncode == 0, f"{argv}: {out.stdout!r} {out.stderr!r}"

    def create(self, settings: dict[str, Any]) -> None:
        # create-master also creates (or upgrades) Buildbot's schema in the shared database.
        self._run(str(_BIN / "buildbot"), "create-master", "--db", settings["db_url"], str(self.dir))
        shutil.copy(self.cfg, self.dir / "master.cfg")
        settings = dict(settings, name=self.name, www_port=self.www_port, pb_port=self.pb_port)
        self._write_secrets(settings.pop("secrets", {}))
        (self.dir / "settings.json").write_text(json.dumps(settings))

    def _write_secrets(self, secrets: dict[str, str]) -> None:
        """util.SecretInAFile's directory: one file per secret, owner-only."""
        directory = self.dir / "secrets"
        directory.mkdir(mode=0o700, exist_ok=True)
        for name, value in secrets.items():
            path = directory / name
            path.write_text(value + "\n")
            path.chmod(0o600)

    def start(self) -> None:
        running = "BuildMaster is running"
        before = self.log().count(running)  # twistd.log grows across restarts
        self.proc = self._spawn(
            [str(_BIN / "buildbot"), "start", "--nodaemon", str(self.dir)], f"{self.name}.out"
        )
        wait_for(
            f"{self.name} to start",
            lambda: self.alive() and self.log().count(running) > before,
            90,
        )

    def reconfigure(self, **changes: Any) -> None:
        """Changes settings.json and reconfigures the running master (SIGHUP), as
        `buildbot reconfig` does; fails unless the update is complete."""
        path = self.dir / "settings.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
        outcome = "configuration update (complete|aborted|partially applied)"
        before = len(re.findall(outcome, self.log()))
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        wait_for(
            f"{self.name} to reconfigure",
            lambda: self.alive() and len(re.findall(outcome, self.log())) > before,
            60,
        )
        last = re.findall(outcome, self.log())[-1]
        assert last == "complete", f"reconfiguration {last}; see {self.dir}/twistd.log"

    def restart(self) -> None:
        """A clean stop (SIGTERM), then a start; the worker reconnects by itself."""
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.start()

    def start_worker(self) -> None:
        self._run(
            str(_BIN / "buildbot-worker"),
            "create-worker",
            str(self.worker_dir),
            f"127.0.0.1:{self.pb_port}",
            self.workername,
            "pass",
        )
        self.worker = self._spawn(
            [str(_BIN / "buildbot-worker"), "start", "--nodaemon", str(self.worker_dir)],
            f"worker-{self.workername}.out",
        )

    def alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"{self.name} exited ({self.proc.returncode}); see {self.dir}/twistd.log")
        return True

    def get(self, path: str, **kwargs: Any) -> Any:
        return get_json(self.api, path, **kwargs)

    def force(self, builder: str) -> int:
        """Forces a build of `builder` through this master's REST API; its build request."""
        builderid = self.get("builders", params={"name": builder})["builders"][0]["builderid"]
        return force(self.api, "force", builderid, "mm")

    def kill(self) -> None:
        """SIGKILL (`buildbot start --nodaemon` is twistd itself), and its worker stopped."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        if self.worker is not None:
            self.worker.terminate()

    def stop(self) -> None:
        stop_processes([self.worker, self.proc])


def stop_processes(procs: list[Optional[subprocess.Popen[bytes]]]) -> None:
    """SIGTERM each process still running, in order; SIGKILL what does not end in 45 s."""
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def master_env(wasm: Path) -> dict[str, str]:
    """A small environment for a master or worker (a worker writes its whole environment
    into the step's log, which some tests send to the receivers)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "STATUS_PUSH_WASM": str(wasm),
    }


def dead_letter_lines(log: str, reporter: str, buildid: int, why: str) -> list[str]:
    """The events of `buildid` that `reporter` logged as dead letters for `why` (a regex)."""
    line = re.compile(rf"{reporter}: dead letter: (started|finished) of buildid {buildid} .*{why}")
    return sorted(line.findall(log))


@dataclass
class Pki:
    """PEM files of a private CA: its certificate, a server certificate for 127.0.0.1
    (with its key), and a client certificate, its key apart and both in one file."""

    ca: Path
    server: Path
    client_cert: Path
    client_key: Path
    client: Path


def make_pki(folder: Path) -> Pki:
    """A private CA and its certificates in `folder`, made with `cryptography`."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "status-push test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(name: str, extension: Any, usage: Any) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(extension, critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    server_cert, server_key = leaf(
        "127.0.0.1",
        x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        ExtendedKeyUsageOID.SERVER_AUTH,
    )
    client_cert, client_key = leaf(
        "buildbot-master",
        x509.SubjectAlternativeName([x509.DNSName("buildbot-master")]),
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, data: bytes) -> Path:
        (folder / name).write_bytes(data)
        return folder / name

    return Pki(
        ca=write("ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
        server=write("server.pem", server_cert + server_key),
        client_cert=write("client.crt", client_cert),
        client_key=write("client.key", client_key),
        client=write("client.pem", client_cert + client_key),
    )
