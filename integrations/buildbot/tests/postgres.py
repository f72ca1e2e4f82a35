"""A throwaway PostgreSQL server for one test module: `initdb` into a temporary directory,
a free loopback port and a private socket directory, password authentication over TCP,
and `pg_ctl -m immediate stop` at the end. Never a system service. The Python twin of
host-harness/cli/tests/common/postgres.rs.

The server binaries come from `$STATUS_PUSH_PG_BIN`, or the newest
`/usr/lib/postgresql/*/bin` (Debian's layout; scripts/test.sh installs them where they are
missing). As root, initdb and pg_ctl run as the `postgres` user (initdb refuses root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from support import free_port

# The superuser's password (TCP connections need it; the private socket trusts).
PASSWORD = "status-push-test"
USER = "postgres"


def bin_dir() -> Optional[Path]:
    """The server binaries' directory, or None when there are none."""
    if os.environ.get("STATUS_PUSH_PG_BIN"):
        return Path(os.environ["STATUS_PUSH_PG_BIN"])
    versions = Path("/usr/lib/postgresql").glob("*")
    found = [d / "bin" for d in versions if (d / "bin" / "initdb").exists()]
    # Highest major version last.
    found.sort(key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    return found[-1] if found else None


def _is_root() -> bool:
    return os.geteuid() == 0


def _run(argv: list[str], what: str, timeout: float = 120) -> str:
    out = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed ({out.returncode}): {out.stdout}{out.stderr}")
    return out.stdout


class Postgres:
    """A running server; `stop()` (immediate: it holds nothing of value) ends it."""

    def __init__(self, bin: Path, name: str) -> None:
        self.bin = bin
        self.dir = Path(tempfile.mkdtemp(prefix=f"status-push-postgres-{name}-"))
        self.port = 0
        self.started = False

    def _as_server_user(self, program: str, *args: str) -> list[str]:
        argv = [str(self.bin / program), *args]
        return ["runuser", "-u", USER, "--", *argv] if _is_root() else argv

    @classmethod
    def start(cls, name: str) -> "Postgres":
        bin = bin_dir()
        if bin is None:
            raise RuntimeError(
                "PostgreSQL server binaries (initdb, pg_ctl) not found under "
                "/usr/lib/postgresql/*/bin; install them (apt-get install postgresql) or set "
                "STATUS_PUSH_PG_BIN"
            )
        pg = cls(bin, name)
        try:
            pg._start()
        except BaseException:
            pg.stop()
            raise
        return pg

    def _start(self) -> None:
        (self.dir / "socket").mkdir()
        (self.dir / "pwfile").write_text(PASSWORD)
        if _is_root():
            _run(["chown", "-R", f"{USER}:", str(self.dir)], "chown")
        _run(
            self._as_server_user(
                "initdb",
                "-D",
                str(self.dir / "data"),
                "-U",
                USER,
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
                f"--pwfile={self.dir / 'pwfile'}",
            ),
            "initdb",
        )
        self.port = free_port()
        self.started = True  # from here on, stop() has something to stop
        self.resume()

    def resume(self) -> None:
        """Starts the server (again, after `pause()`) on the same port and data."""
        options = (
            f"-p {self.port} -k {self.dir / 'socket'} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        _run(
            self._as_server_user(
                "pg_ctl",
                "-D",
                str(self.dir / "data"),
                "-l",
                str(self.dir / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ),
            "pg_ctl start",
        )

    def pause(self) -> None:
        """Stops the server as an operator would (`fast`: connections cut, committed work
        flushed), keeping its data for `resume()`."""
        _run(
            self._as_server_user("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"),
            "pg_ctl stop",
        )

    def url(self, database: str = "postgres", scheme: str = "postgresql") -> str:
        """`postgresql://postgres:PASSWORD@127.0.0.1:PORT/DATABASE`, over TCP; `scheme`
        names a driver for SQLAlchemy, e.g. `postgresql+psycopg2`."""
        return f"{scheme}://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def _client_args(self) -> list[str]:
        """The superuser, over the private socket."""
        return ["-U", USER, "-h", str(self.dir / "socket"), "-p", str(self.port)]

    def createdb(self, database: str) -> None:
        _run(
            [
                str(self.bin / "createdb"),
                *self._client_args(),
                database,
            ],
            f"createdb {database}",
        )

    def sql(self, sql: str, database: str = "postgres") -> str:
        """Runs SQL through `psql` over the private socket; its unaligned output."""
        return _run(
            [
                str(self.bin / "psql"),
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                *self._client_args(),
                "-d",
                database,
                "-c",
                sql,
            ],
            f"psql {sql}",
            timeout=30,
        ).strip()

    def log(self) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.started:
            subprocess.run(
                self._as_server_user(
                    "pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop"
                ),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=60,
            )
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)
