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
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import requests
from support import Receiver, Request, free_port, wait_for

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
        # A small environment: the worker writes its whole environment into the step's log,
        # which the full phase sends to the receivers.
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "STATUS_PUSH_WASM": str(WASM),
        }

    def _settings(self, phase: str) -> None:
        settings = {
            "phase": phase,
            "www_port": self.www_port,
            "pb_port": self.pb_port,
            "stock_port": self.stock.port,
            "wasm_port": self.wasm.port,
            "command": COMMAND,
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
        r = requests.get(f"{self.api}/{path}", timeout=10, **kwargs)
        r.raise_for_status()
        return r.json()

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

    def force_build(self) -> dict[str, Any]:
        """Forces a build through the REST API (the force scheduler) and waits for its end."""
        r = requests.post(
            f"{self.api}/forceschedulers/force",
            json={
                "jsonrpc": "2.0",
                "method": "force",
                "id": 1,
                "params": {"builderid": str(self.builderid), "reason": "e2e", "owner": "e2e"},
            },
            timeout=10,
        )
        r.raise_for_status()
        assert "error" not in r.json(), r.json()
        _bsid, brids = r.json()["result"]
        brid = list(brids.values())[0]

        def finished() -> Optional[dict[str, Any]]:
            builds = self._get(f"buildrequests/{brid}/builds")["builds"]
            return builds[0] if builds and builds[0]["complete"] else None

        return wait_for(f"build request {brid} to finish", finished, 90)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=45)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
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
    time.sleep(1)  # a duplicate would arrive right behind the first copy
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
        assert stock[0].body == wasm[0].body, (
            f"{phase} {event} bodies differ:\nstock: {stock[0].body!r}\nwasm:  {wasm[0].body!r}"
        )
        report(
            f"{phase:5} build #{build['number']} {event:8}: bodies identical, "
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
    # debug=True: the component's stderr reached the master's log, credentials redacted.
    assert (
        f"wasm-plain (component): status-push: -> POST http://127.0.0.1:{cluster.wasm.port}/plain"
        in cluster.master_log()
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


def test_outage_wasm_retries_stock_loses(cluster: Cluster) -> None:
    cluster.reconfigure("full")  # maxAttempts=8, retryDeadlineSeconds=30
    failures_before = cluster.master_log().count("Got exception when handling reporter events")
    cluster.stock.stop()
    cluster.wasm.stop()
    down_at = time.monotonic()
    build = cluster.force_build()
    buildid = build["buildid"]
    # The stock reporter tries each event once: wait until both attempts have failed.
    wait_for(
        "HttpStatusPush to fail on the started and finished events",
        lambda: (
            cluster.master_log().count("Got exception when handling reporter events")
            >= failures_before + 2
        ),
        30,
    )
    time.sleep(3)  # a real outage, not a blip: the component keeps retrying meanwhile
    # The master stays responsive while the component retries on its own thread.
    t = time.monotonic()
    cluster._get("builders")
    api_ms = (time.monotonic() - t) * 1000
    assert api_ms < 2000, f"REST API took {api_ms:.0f} ms during the outage"
    cluster.stock.start()
    cluster.wasm.start()
    outage = time.monotonic() - down_at

    def delivered() -> Optional[dict[str, list[Request]]]:
        got = cluster.wasm.for_build(buildid)
        return got if got["started"] and got["finished"] else None

    wasm = wait_for("WasmStatusPush to deliver after the outage", delivered, 40)
    back_after = time.monotonic() - down_at
    time.sleep(2)  # give a late stock request (there must be none) a chance to show up
    stock = cluster.stock.for_build(buildid)
    assert stock == {"started": [], "finished": []}, "HttpStatusPush delivered during an outage?"
    assert len(wasm["started"]) == 1 and len(wasm["finished"]) == 1
    assert wasm["finished"][0].doc()["results"] == 0
    retried = re.findall(
        rf"wasm-full: (\w+) of build greet#{build['number']} \(buildid {buildid}\) "
        r"delivered: HTTP 200 after (\d+) attempt\(s\)",
        cluster.master_log(),
    )
    assert retried, "no retried delivery was logged"
    report(
        f"outage build #{build['number']}: receivers down {outage:.1f}s; HttpStatusPush "
        f"delivered 0/2 events (2 errors in twistd.log); WasmStatusPush delivered 2/2, "
        f"the last {back_after:.1f}s after the outage began; retried: "
        + ", ".join(f"{ev} after {n} attempts" for ev, n in retried)
        + f"; REST API answered in {api_ms:.0f} ms during the outage"
    )


def test_permanent_failure_is_logged_not_raised(cluster: Cluster) -> None:
    cluster.reconfigure("full")
    cluster.wasm.status = 400  # not retryable: one attempt, then a typed failure in the log
    try:
        build = cluster.force_build()
        line = re.compile(
            rf"wasm-full: (started|finished) of build greet#{build['number']} "
            rf"\(buildid {build['buildid']}\) not delivered: push-failure http-status: HTTP 400 "
            r"\(permanent, 1 attempt\(s\), delivery sp_\w+\)"
        )
        logged = wait_for(
            "the typed failures in twistd.log",
            lambda: sorted(set(line.findall(cluster.master_log()))) == ["finished", "started"],
            30,
        )
        assert logged
        assert len(cluster.wasm.for_build(build["buildid"])["started"]) == 1  # no retry of a 400
    finally:
        cluster.wasm.status = 200
    report(
        f"400 from the receiver: build #{build['number']}'s started and finished logged as "
        "'push-failure http-status: HTTP 400 (permanent, 1 attempt(s), ...)', no traceback"
    )
