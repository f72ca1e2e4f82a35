"""End to end: a real Buildbot master and worker, stock HttpStatusPush and WasmStatusPush
side by side, each posting to its own receiver on 127.0.0.1.

Run through ../test.sh. The tests share one master and run in file order:
  1. plain: default options; both receivers get started+finished, bodies byte-identical;
  2. full:  wantProperties/Steps/Logs/PreviousBuild; the same;
  3. outage: both receivers down during a build, back within the retry deadline:
     WasmStatusPush delivers every event, HttpStatusPush loses them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
from support import (
    Receiver,
    Request,
    dead_letter_lines,
    force,
    free_port,
    get_json,
    make_pki,
    master_env,
    stop_processes,
    wait_for,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
BIN = Path(sys.executable).parent
WORK = HERE.parent / ".e2e"
REPORT = WORK / "report.txt"
WASM = Path(os.environ.get("STATUS_PUSH_WASM", REPO / "target" / "status-push.wasm"))

# Non-ASCII on purpose: both reporters must escape it the same way (\u00fc, surrogate pairs).
COMMAND = (
    "echo 'hello from the e2e build'; echo 'Grüße 🚀'; echo 'a line on stderr' >&2; echo 'done'"
)


def report(line: str) -> None:
    with REPORT.open("a", encoding="utf-8") as f:
        f.write(line + "\n")


class Cluster:
    """A master and a worker, each in its own process, with the stock and wasm receivers."""

    def __init__(self) -> None:
        self.stock = Receiver("stock")
        self.wasm = Receiver("wasm")
        self.stock.start()
        self.wasm.start()
        self.www_port = free_port()
        self.pb_port = free_port()
        self.api = f"http://127.0.0.1:{self.www_port}/api/v2"
        self.master_dir = WORK / "master"
        self.worker_dir = WORK / "worker"
        self.phase = ""
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = master_env(WASM)  # the full phase sends the worker's environment

    def _settings(self, phase: str) -> None:
        settings = {
            "phase": phase,
            "www_port": self.www_port,
            "pb_port": self.pb_port,
            "stock_port": self.stock.port,
            "wasm_port": self.wasm.port,
            "command": COMMAND,
            "tls_port": getattr(self, "tls_port", 0),
            "ca_file": str(WORK / "ca.pem"),
            # The compat phase's own CA: the host keeps a TLS configuration per file path.
            "mtls_ca_file": str(WORK / "mtls" / "ca.pem"),
            "client_cert": str(WORK / "mtls" / "client.crt"),
            "client_key": str(WORK / "mtls" / "client.key"),
        }
        (self.master_dir / "settings.json").write_text(json.dumps(settings))
        self.phase = phase

    def master_log(self) -> str:
        path = self.master_dir / "twistd.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def _run(self, *argv: str) -> None:
        subprocess.run(argv, check=True, timeout=120, env=self.env, capture_output=True)

    def _spawn(self, argv: list[str], logname: str) -> subprocess.Popen[bytes]:
        out = (WORK / logname).open("wb")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        self.procs.append(proc)
        return proc

    def start(self, phase: str) -> None:
        self._run(
            str(BIN / "buildbot"),
            "create-master",
            "--db",
            "sqlite:///state.sqlite",
            str(self.master_dir),
        )
        shutil.copy(HERE / "master.cfg", self.master_dir / "master.cfg")
        self._settings(phase)
        self.master = self._spawn(
            [str(BIN / "buildbot"), "start", "--nodaemon", str(self.master_dir)], "master.out"
        )
        wait_for(
            "the master to start",
            lambda: self._alive() and "BuildMaster is running" in self.master_log(),
            90,
        )
        self._run(
            str(BIN / "buildbot-worker"),
            "create-worker",
            str(self.worker_dir),
            f"127.0.0.1:{self.pb_port}",
            "w1",
            "pass",
        )
        self._spawn(
            [str(BIN / "buildbot-worker"), "start", "--nodaemon", str(self.worker_dir)],
            "worker.out",
        )
        wait_for(
            "the worker to connect", lambda: self._get("workers")["workers"][0]["connected_to"], 60
        )
        self.builderid = self._get("builders", params={"name": "greet"})["builders"][0]["builderid"]

    def _alive(self) -> bool:
        if self.master.poll() is not None:
            pytest.fail(
                f"the master exited ({self.master.returncode}); see {WORK}/master/twistd.log"
            )
        return True

    def _get(self, path: str, **kwargs: Any) -> Any:
        return get_json(self.api, path, **kwargs)

    def reconfigure(self, phase: str) -> None:
        if phase == self.phase:
            return
        outcome = re.compile(r"configuration update (complete|aborted|partially applied)")
        before = len(outcome.findall(self.master_log()))
        self._settings(phase)
        self.master.send_signal(signal.SIGHUP)
        wait_for(
            f"the master to reconfigure to {phase}",
            lambda: self._alive() and len(outcome.findall(self.master_log())) > before,
            60,
        )
        last = outcome.findall(self.master_log())[-1]
        assert last == "complete", f"reconfiguration {last}; see {WORK}/master/twistd.log"

    def restart_master(self) -> None:
        """After a kill: the same master again."""
        self.master = self._spawn(
            [str(BIN / "buildbot"), "start", "--nodaemon", str(self.master_dir)], "master2.out"
        )
        wait_for(
            "the master to restart",
            lambda: self._alive() and self.master_log().count("BuildMaster is running") >= 2,
            90,
        )

    def outbox(self, reporter: str) -> Path:
        return self.master_dir / f"status-push-{reporter}.sqlite"

    def settled(self, reporter: str) -> None:
        """Waits until `reporter`'s outbox holds no pending event: from then on nothing of
        it can be sent again, so what the receiver counts is final (no sleep as proof)."""

        def empty() -> bool:
            with sqlite3.connect(self.outbox(reporter), timeout=30) as db:
                return db.execute("SELECT count(*) FROM events WHERE dead = 0").fetchone()[0] == 0

        wait_for(f"{reporter}'s outbox to hold nothing pending", empty, 60)

    def force_build(self, builder: str = "greet") -> dict[str, Any]:
        """Forces a build through the REST API (the force scheduler) and waits for its end."""
        builderid = self._get("builders", params={"name": builder})["builders"][0]["builderid"]
        scheduler = "force" if builder == "greet" else f"force-{builder}"
        brid = force(self.api, scheduler, builderid, "e2e")

        def finished() -> Optional[dict[str, Any]]:
            builds = self._get(f"buildrequests/{brid}/builds")["builds"]
            return builds[0] if builds and builds[0]["complete"] else None

        return wait_for(f"build request {brid} to finish", finished, 90)

    def stop(self) -> None:
        stop_processes(list(reversed(self.procs)))
        self.stock.stop()
        self.wasm.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    assert WASM.is_file(), f"{WASM} is missing: build it with `cargo xtask wasm`"
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    c = Cluster()
    try:
        c.start("plain")
        yield c
    finally:
        c.stop()
    # Whatever happened to the deliveries, the master never saw an error from the plugin.
    entries = re.split(r"\n(?=\d{4}-\d\d-\d\d )", c.master_log())
    ours = [e for e in entries if "Traceback" in e and "buildbot_status_push" in e]
    assert not ours, "the plugin raised in the master:\n" + "\n".join(ours)


def both_events(cluster: Cluster, buildid: int) -> dict[str, dict[str, list[Request]]]:
    """Waits until each receiver has the build's started and finished events."""

    def got() -> Optional[dict[str, dict[str, list[Request]]]]:
        seen = {r.name: r.for_build(buildid) for r in (cluster.stock, cluster.wasm)}
        complete = all(ev["started"] and ev["finished"] for ev in seen.values())
        return seen if complete else None

    return wait_for(f"both receivers to get build {buildid}'s events", got, 30)


def header_diff(stock: Request, wasm: Request) -> str:
    s = {k.lower(): v for k, v in stock.headers}
    w = {k.lower(): v for k, v in wasm.headers}
    only_s = sorted(k for k in s if k not in w)
    only_w = sorted(k for k in w if k not in s)
    differ = sorted(k for k in s if k in w and s[k] != w[k] and k not in ("host",))
    return f"only stock: {only_s}; only wasm: {only_w}; different values: {differ}"


def side_by_side(cluster: Cluster, phase: str) -> dict[str, Any]:
    cluster.reconfigure(phase)
    build = cluster.force_build()
    assert build["results"] == 0, build
    seen = both_events(cluster, build["buildid"])
    cluster.settled(f"wasm-{phase}")
    seen = {r.name: r.for_build(build["buildid"]) for r in (cluster.stock, cluster.wasm)}
    for event in ("started", "finished"):
        stock, wasm = seen["stock"][event], seen["wasm"][event]
        assert len(stock) == 1 and len(wasm) == 1, (event, len(stock), len(wasm))
        for who, got in (("stock", stock[0]), ("wasm", wasm[0])):
            stem = WORK / f"{phase}-build{build['number']}-{event}-{who}"
            stem.with_suffix(".json").write_bytes(got.body)
            stem.with_suffix(".headers").write_text("".join(f"{k}: {v}\n" for k, v in got.headers))
        assert stock[0].path == wasm[0].path == f"/{phase}"
        assert (
            dict((k.lower(), v) for k, v in wasm[0].headers)["content-type"] == "application/json"
        )
        assert same_payload(stock[0].body, wasm[0].body), (
            f"{phase} {event} bodies differ:\nstock: {stock[0].body!r}\nwasm:  {wasm[0].body!r}"
        )
        report(
            f"{phase:5} build #{build['number']} {event:8}: bodies "
            f"{'identical' if stock[0].body == wasm[0].body else 'identical but for build request/buildset completion'}, "
            f"{len(wasm[0].body)} bytes; headers {header_diff(stock[0], wasm[0])}"
        )
    return {
        "build": build,
        "finished": json.loads(seen["wasm"]["finished"][0].body),
        "finished_bytes": seen["wasm"]["finished"][0].body,
    }


def wasm_url(cluster: Cluster, phase: str) -> str:
    return f"http://127.0.0.1:{cluster.wasm.port}/{phase}"


def test_plain_side_by_side(cluster: Cluster) -> None:
    got = side_by_side(cluster, "plain")
    doc = got["finished"]
    assert doc["properties"] == {} and "steps" not in doc and "prev_build" not in doc
    www = f"http://127.0.0.1:{cluster.www_port}/"
    assert doc["url"] == f"{www}#/builders/{cluster.builderid}/builds/{doc['number']}"
    # debug=True: the component's stderr reached the master's log, through the host's
    # tracing log and Python's logging.
    assert (
        "[buildbot_status_push.component] status-push: -> POST "
        f"http://127.0.0.1:{cluster.wasm.port}/plain" in cluster.master_log()
    )


def test_full_side_by_side(cluster: Cluster) -> None:
    got = side_by_side(cluster, "full")
    doc = got["finished"]
    assert doc["properties"]["buildername"] == ["greet", "Builder"]
    assert doc["prev_build"] is None or doc["prev_build"]["number"] == doc["number"] - 1
    logs = [log for step in doc["steps"] for log in step.get("logs", [])]
    stdio = [log for log in logs if log["name"] == "stdio" and "greet" == log["stepname"]]
    assert stdio and "Grüße 🚀" in stdio[0]["content"]["content"]
    # Python's json.dumps escapes: U+00FC, U+00DF and the surrogate pair of U+1F680.
    assert b"Gr\\u00fc\\u00dfe \\ud83d\\ude80" in got["finished_bytes"]


OUTAGE = float(os.environ.get("STATUS_PUSH_OUTAGE_SECONDS", "120"))


def delivery_id(r: Request) -> str:
    return dict((k.lower(), v) for k, v in r.headers)["idempotency-key"]


# Each reporter's generator reads the data API by itself when a build finishes, and the
# build request and buildset may complete between two such reads: these fields are
# snapshots of a state that moves, not something a reporter computes.
RACY_FIELDS = {
    "buildrequest": ("complete", "results", "complete_at"),
    "buildset": ("complete", "results", "complete_at"),
}


def same_payload(stock: bytes, mine: bytes) -> bool:
    """Byte-identical, or identical but for RACY_FIELDS, with ours still encoded exactly
    as Python's json.dumps would encode it."""
    if stock == mine:
        return True
    theirs, ours = json.loads(stock), json.loads(mine)
    if json.dumps(ours).encode() != mine:
        return False
    for doc, keys in RACY_FIELDS.items():
        for key in keys:
            for payload in (theirs, ours):
                if isinstance(payload.get(doc), dict):
                    payload[doc].pop(key, None)
    return theirs == ours


def test_outage_every_event_once_in_order(cluster: Cluster) -> None:
    cluster.reconfigure("outage")
    cluster.wasm.stop()  # WasmStatusPush's and stock-lossy's receiver: connection refused
    down_at = time.monotonic()
    builds = [cluster.force_build(b) for b in ("greet", "broken", "greet")]
    assert [b["results"] for b in builds] == [0, 2, 0]
    while time.monotonic() - down_at < OUTAGE:
        time.sleep(1)
        cluster._alive()
    cluster.wasm.start()
    outage = time.monotonic() - down_at
    ids = [b["buildid"] for b in builds]

    def ours() -> list[Request]:
        return [r for r in cluster.wasm.requests if r.path == "/outage" and r.doc()["buildid"] in ids]

    wait_for("WasmStatusPush to deliver all 6 events", lambda: len(ours()) >= 6, 120)
    back_after = time.monotonic() - down_at
    cluster.settled("wasm-outage")
    got = ours()
    assert len(got) == 6, [(r.doc()["buildid"], r.event) for r in got]
    assert len({delivery_id(r) for r in got}) == 6
    exact = 0
    for buildid in ids:
        events = [r.event for r in got if r.doc()["buildid"] == buildid]
        assert events == ["started", "finished"], (buildid, events)
        stock = cluster.stock.for_build(buildid)
        for event in ("started", "finished"):
            mine = [r for r in got if r.doc()["buildid"] == buildid and r.event == event][0]
            assert len(stock[event]) == 1, (buildid, event, len(stock[event]))
            assert same_payload(stock[event][0].body, mine.body), (buildid, event)
            exact += stock[event][0].body == mine.body
    lossy = [r for r in cluster.wasm.requests if r.path == "/lossy" and r.doc()["buildid"] in ids]
    report(
        f"outage of {outage:.0f}s across 3 builds (one failing): WasmStatusPush delivered 6/6 "
        f"exactly once, in per-build order, {exact}/6 bodies byte-identical to the stock "
        f"reporter's (the rest differ only in build request/buildset completion), the last "
        f"{back_after - outage:.1f}s after the receiver returned; stock HttpStatusPush to the "
        f"same receiver delivered {len(lossy)}/6 (lost {6 - len(lossy)})"
    )


def test_kill_minus_9_then_restart_delivers_pending(cluster: Cluster) -> None:
    from buildbot_status_push import Outbox

    cluster.reconfigure("outage")
    cluster.wasm.stop()
    build = cluster.force_build()
    outbox = Outbox(str(cluster.outbox("wasm-outage")))
    wait_for(
        "2 events pending in the outbox",
        lambda: sum(e.build_key.endswith(f"|{build['buildid']}") for e in outbox.pending()) >= 2,
        30,
    )
    cluster.master.send_signal(signal.SIGKILL)  # `buildbot start --nodaemon` is twistd itself
    cluster.master.wait(timeout=30)
    cluster.wasm.start()
    cluster.restart_master()

    def got() -> Optional[dict[str, list[Request]]]:
        seen = cluster.wasm.for_build(build["buildid"])
        mine = {k: [r for r in v if r.path == "/outage"] for k, v in seen.items()}
        return mine if mine["started"] and mine["finished"] else None

    seen = wait_for("the pending events after the restart", got, 90)
    cluster.settled("wasm-outage")
    seen = got() or {}
    assert len(seen["started"]) == 1 and len(seen["finished"]) == 1
    report(
        f"kill -9 of the master with 2 events of build #{build['number']} pending, restart: "
        "both delivered once"
    )


def test_permanent_failure_is_a_dead_letter(cluster: Cluster) -> None:
    cluster.reconfigure("full")
    cluster.wasm.status = 400  # not retryable: one attempt, then a dead letter
    try:
        build = cluster.force_build()
        line = re.compile(
            rf"wasm-full: dead letter: (started|finished) of buildid {build['buildid']} "
            r"\(seq \d+, delivery sp_\w+, 1 attempt\(s\)\): .*400"
        )
        wait_for(
            "the dead letters in twistd.log",
            lambda: sorted(line.findall(cluster.master_log())) == ["finished", "started"],
            30,
        )
        assert len(cluster.wasm.for_build(build["buildid"])["started"]) == 1  # no retry of a 400
    finally:
        cluster.wasm.status = 200
    # The operator's command the wheel installs next to `buildbot` (no Rust needed).
    cli = BIN / "buildbot-status-push"
    assert cli.is_file(), f"{cli} is missing: the wheel installs it"
    out = subprocess.run(
        [str(cli), "dead-letters", "--outbox", str(cluster.outbox("wasm-full"))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("seq\tevent\tbuild\tdelivery_id"), out.stdout
    mine = [ln for ln in out.stdout.splitlines() if f"|{build['buildid']}\t" in ln]
    assert len(mine) == 2 and all("400" in ln for ln in mine), out.stdout
    # Made pending again by the same command, the running reporter's courier sends them.
    out = subprocess.run(
        [str(cli), "redeliver", "--outbox", str(cluster.outbox("wasm-full")), "--all"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout.startswith("pending again: "), (out.stdout, out.stderr)
    wait_for(
        "the redelivered events at the receiver",
        lambda: all(len(v) == 2 for v in cluster.wasm.for_build(build["buildid"]).values()),
        60,
    )
    listed = "both listed and redelivered by `buildbot-status-push`"
    report(
        f"400 from the receiver: build #{build['number']}'s started and finished: one attempt "
        f"each, two dead letters logged once with delivery id and reason; {listed}"
    )


def test_tls_ca_file_inside_buildbot(cluster: Cluster) -> None:
    import ssl

    pki = make_pki(WORK)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server)
    receiver = Receiver("tls", tls=context)
    receiver.start()
    try:
        cluster.tls_port = receiver.port  # type: ignore[attr-defined]
        cluster.reconfigure("tls")
        build = cluster.force_build()

        def arrived() -> Optional[dict[str, list[Request]]]:
            got = receiver.for_build(build["buildid"])
            return got if got["started"] and got["finished"] else None

        got = wait_for("the HTTPS receiver to get both events (caFile)", arrived, 60)
        assert all(r.path == "/tls" for r in got["started"] + got["finished"])
        wait_for(
            "the events without caFile to fail as TLS errors",
            lambda: dead_letter_lines(cluster.master_log(), "wasm-tls-noca", build["buildid"], "TLS")
            == ["finished", "started"],
            60,
        )
        assert not [r for r in receiver.requests if r.path == "/noca"]
    finally:
        receiver.stop()
    report(
        f"TLS with a private CA: caFile delivered build #{build['number']}'s 2 events; "
        "without caFile both are dead letters with a TLS error"
    )


def test_a_buildbot_43_http_status_push_block_works_unchanged(cluster: Cluster) -> None:
    """The same HttpStatusPush(...) keyword arguments (auth, headers, verify, cert,
    skip_encoding, generators with a MessageFormatterFunction) for the stock reporter and
    for WasmStatusPush: the formatter's bytes, identical, the wasm ones over mutual TLS."""
    import ssl

    pki = make_pki(WORK / "mtls")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    receiver = Receiver("mtls", tls=context)
    receiver.start()
    try:
        cluster.tls_port = receiver.port  # type: ignore[attr-defined]
        cluster.reconfigure("compat")
        build = cluster.force_build()

        def arrived() -> Optional[dict[str, dict[str, list[Request]]]]:
            seen = {
                "stock": cluster.stock.for_build(build["buildid"]),
                "wasm": receiver.for_build(build["buildid"]),
            }
            done = all(len(got["started"]) == len(got["finished"]) for got in seen.values()) and (
                len(seen["stock"]["finished"]) == 1 and len(seen["wasm"]["finished"]) == 2
            )
            return seen if done else None

        seen = wait_for("both receivers to get the build's reports", arrived, 60)
        for reporter in ("wasm-compat", "wasm-compat-skip"):
            cluster.settled(reporter)
        seen = {
            "stock": cluster.stock.for_build(build["buildid"]),
            "wasm": receiver.for_build(build["buildid"]),
        }
        for event in ("started", "finished"):
            [stock] = seen["stock"][event]
            [wasm] = [r for r in seen["wasm"][event] if r.path == "/compat"]
            # skip_encoding=True sends the same bytes (the stock reporter cannot take it).
            [skipped] = [r for r in seen["wasm"][event] if r.path == "/skip"]
            assert skipped.body == stock.body
            for who, got in (("stock", stock), ("wasm", wasm)):
                stem = WORK / f"compat-build{build['number']}-{event}-{who}"
                stem.with_suffix(".json").write_bytes(got.body)
            assert wasm.path == "/compat"
            assert wasm.body == stock.body, f"{event}:\nstock: {stock.body!r}\nwasm:  {wasm.body!r}"
            doc = wasm.doc()
            assert doc["note"] == "Grüße 🚀" and isinstance(doc["started_at"], int)
            assert set(doc) == {
                "buildid", "complete", "text", "results", "started_at", "complete_at", "url",
                "owner", "note",
            }, "the formatter's body, not our payload"
            for got in (stock, wasm):
                headers = {k.lower(): v for k, v in got.headers}
                assert headers["authorization"] == "Basic Ym90OnMzY3JldA==", headers
                assert headers["x-team"] == "ci"
                assert headers["content-type"] == "application/json"
        wait_for(
            "the events without a client certificate to fail as TLS errors",
            lambda: dead_letter_lines(
                cluster.master_log(), "wasm-compat-nocert", build["buildid"], "TLS"
            )
            == ["finished", "started"],
            60,
        )
        assert not [r for r in receiver.requests if r.path == "/nocert"]
    finally:
        receiver.stop()
    report(
        f"Buildbot 4.3 HttpStatusPush block (auth, headers, verify, cert, skip_encoding, "
        f"generators): build #{build['number']}'s 2 formatter bodies identical to the stock "
        f"reporter's ({len(wasm.body)} bytes finished), over mutual TLS; without the client "
        "certificate both are dead letters with a TLS error"
    )
