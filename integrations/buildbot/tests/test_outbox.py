"""The outbox in a real master when things go wrong around it (tests/outbox.cfg):

- its PostgreSQL server stops during a build and starts again: both events arrive, in order,
  once each (the one the outbox refused waited in memory);
- the master starts while that server is down: it runs, keeps events in memory, and opens
  the outbox when the server returns;
- the master stops and starts again while that server is down: the events waiting in
  memory are kept in a file at the stop and written first once the server returns;
- it holds its `maxPendingEvents`: further events wait in memory, the log says so with the
  counts (not a line per event), and every event arrives once the receiver is back;
- a reconfig that moves `outbox=` says how many events the old one still holds;
- the master stops with 100 builds' events for a receiver that hangs: the reporter's
  `stopService` returns within 10 s and leaves every event pending.

Buildbot's own database is SQLite, so the master keeps running while the outbox's
PostgreSQL server is down.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
from postgres import Postgres
from support import (
    HangingReceiver,
    Master,
    Receiver,
    Request,
    free_port,
    master_env,
    wait_for,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
WORK = HERE.parent / ".e2e" / "outbox"
REPORT = HERE.parent / ".e2e" / "report.txt"
WASM = Path(os.environ.get("STATUS_PUSH_WASM", REPO / "target" / "status-push.wasm"))
QUICK = ("q0", "q1", "q2", "q3")


def report(line: str) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    with REPORT.open("a", encoding="utf-8") as f:
        f.write(line + "\n")


class Setup:
    def __init__(self, pg: Postgres) -> None:
        self.pg = pg
        self.pg_receiver = Receiver("pg")
        self.pg_receiver.start()
        self.full_receiver = Receiver("full", port=free_port())  # started later: refused
        self.hanging = HangingReceiver()
        env = master_env(WASM)
        self.master = Master("master", "w1", env, WORK, HERE / "outbox.cfg")

    def start(self) -> None:
        m = self.master
        m.create(
            {
                "db_url": "sqlite:///state.sqlite",
                "outbox_url": self.pg.url("outbox"),
                "pg_receiver_port": self.pg_receiver.port,
                "full_receiver_port": self.full_receiver.port,
                "hanging_port": self.hanging.port,
                "secrets": {
                    "outbox_key": base64.b64encode(os.urandom(32)).decode(),
                    "token1": "first",
                    "token2": "second",
                },
            }
        )
        m.start()
        m.start_worker()
        wait_for("the worker to connect", lambda: m.get("workers")["workers"][0]["connected_to"], 60)

    def stop(self) -> None:
        self.master.stop()
        self.pg_receiver.stop()
        self.full_receiver.stop()
        self.hanging.stop()

    def build(self, brid: int) -> Optional[dict[str, Any]]:
        builds = self.master.get(f"buildrequests/{brid}/builds")["builds"]
        return builds[0] if builds else None

    def finished_build(self, brid: int, timeout: float = 90) -> dict[str, Any]:
        return wait_for(
            f"build request {brid} to finish",
            lambda: (b := self.build(brid)) is not None and b["complete"] and b,
            timeout,
        )

    def outbox_rows(self, reporter: str) -> int:
        """Events (pending or dead) in a reporter's default SQLite outbox."""
        with sqlite3.connect(self.master.dir / f"status-push-{reporter}.sqlite", timeout=30) as db:
            return int(db.execute("SELECT count(*) FROM events").fetchone()[0])


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    assert WASM.is_file(), f"{WASM} is missing: build it with `cargo xtask wasm`"
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    pg = Postgres.start("outbox")
    s = Setup(pg)
    try:
        pg.createdb("outbox")
        s.start()
        yield s
    finally:
        s.stop()
        (WORK / "postgres.log").write_text(pg.log())
        pg.stop()
    entries = re.split(r"\n(?=\d{4}-\d\d-\d\d )", s.master.log())
    ours = [e for e in entries if "Traceback" in e and "buildbot_status_push" in e]
    assert not ours, "the plugin raised:\n" + "\n".join(ours)


def delivery_id(r: Request) -> str:
    return dict((k.lower(), v) for k, v in r.headers)["idempotency-key"]


def in_order_once(requests: list[Request], buildids: list[int]) -> None:
    """Each build's started then finished, each delivery id once."""
    ours = [r for r in requests if r.doc().get("buildid") in buildids]
    counts = Counter(delivery_id(r) for r in ours)
    assert all(n == 1 for n in counts.values()), [(r.event, delivery_id(r)) for r in ours]
    for buildid in buildids:
        events = [r.event for r in ours if r.doc()["buildid"] == buildid]
        assert events == ["started", "finished"], (buildid, events)


def test_database_stopped_during_a_build_then_back(setup: Setup) -> None:
    m, pg, receiver = setup.master, setup.pg, setup.pg_receiver
    brid = m.force("slow")  # runs 4 s
    build = wait_for("the build to start", lambda: setup.build(brid), 60)
    buildid = build["buildid"]
    wait_for("started at the receiver", lambda: receiver.for_build(buildid)["started"], 60)
    # Delivered and settled: stopping the server between the two would leave `started`
    # pending, to be sent again (at least once, with its delivery id) when it returns. (A
    # crash rather than a stop may also undo the last settlements, which are committed
    # without waiting for the flush: docs/delivery-and-outbox.md.)
    wait_for(
        "`started` settled",
        lambda: pg.sql("SELECT count(*) FROM status_push_events", "outbox") == "0",
        30,
        0.05,
    )

    pg.pause()  # the build is still running: `finished` finds the database gone
    try:
        setup.finished_build(brid)
        kept = f"wasm-pg: finished of build slow#{build['number']} (buildid {buildid}) kept in memory"
        wait_for("the plugin to keep `finished` in memory", lambda: kept in m.log(), 30)
        assert not receiver.for_build(buildid)["finished"]
    finally:
        pg.resume()
    back = time.monotonic()

    wait_for("finished at the receiver", lambda: receiver.for_build(buildid)["finished"], 60)
    took = time.monotonic() - back
    wait_for(
        "the outbox to empty",
        lambda: pg.sql("SELECT count(*) FROM status_push_events", "outbox") == "0",
        30,
    )
    in_order_once(list(receiver.requests), [buildid])
    assert f"wasm-pg: wrote 1 event(s) kept in memory to the outbox" in m.log()
    report(
        f"outbox on PostgreSQL, server stopped during a build: `finished` kept in memory, "
        f"written and delivered {took:.1f}s after the server returned; started, finished once each"
    )


def test_master_starts_while_its_outbox_database_is_down(setup: Setup) -> None:
    m, pg, receiver = setup.master, setup.pg, setup.pg_receiver
    pg.pause()
    try:
        m.restart()  # a database that is down for now does not stop the master
        m.alive()
        wait_for(
            "the plugin to say it keeps events in memory",
            lambda: "events are kept in memory and the outbox is tried again" in m.log(),
            30,
        )
        wait_for(
            "the worker to reconnect",
            lambda: m.get("workers")["workers"][0]["connected_to"],
            60,
        )
        build = setup.finished_build(m.force("slow"))
        assert not receiver.for_build(build["buildid"])["started"]
    finally:
        pg.resume()
    wait_for(
        "both events at the receiver once the database is back",
        lambda: receiver.for_build(build["buildid"])["finished"],
        60,
    )
    wait_for(
        "the outbox to empty",
        lambda: pg.sql("SELECT count(*) FROM status_push_events", "outbox") == "0",
        30,
    )
    in_order_once(list(receiver.requests), [build["buildid"]])
    assert "(its database answers again)" in m.log()
    report(
        "master started with its outbox's PostgreSQL server down: it ran a build, kept both "
        "events in memory, and delivered them once, in order, when the server returned"
    )


def test_a_stop_while_the_database_is_down_keeps_what_waits_in_memory(setup: Setup) -> None:
    m, pg, receiver = setup.master, setup.pg, setup.pg_receiver
    kept = m.dir / "status-push-wasm-pg.unwritten.jsonl"
    pg.pause()
    try:
        build = setup.finished_build(m.force("slow"))
        buildid = build["buildid"]
        wait_for(
            "`started` kept in memory",
            lambda: f"(buildid {buildid}) kept in memory, outbox unavailable" in m.log(),
            30,
        )
        time.sleep(2)  # `finished` is reported just after the build ends
        m.restart()
        stopped = re.search(
            r"wasm-pg: stopped in [\d.]+s;.* (\d+) event\(s\) never written to it are kept "
            rf"in {re.escape(str(kept))}, written to it first at the next start",
            m.log(),
        )
        assert stopped and stopped.group(1) == "2", stopped
        assert kept.stat().st_mode & 0o777 == 0o600
        wait_for(
            "the kept events taken up at the start",
            lambda: f"wasm-pg: 2 event(s) kept in {kept} at the last stop are written to the "
            "outbox first" in m.log(),
            30,
        )
        assert not receiver.for_build(buildid)["started"]
    finally:
        pg.resume()
    wait_for("finished at the receiver", lambda: receiver.for_build(buildid)["finished"], 60)
    wait_for("the kept file to go once all is written", lambda: not kept.exists(), 30)
    in_order_once(list(receiver.requests), [buildid])
    report(
        "master stopped and started while its outbox's PostgreSQL server was down: the two "
        "events waiting in memory were kept in a file, taken up first, delivered once, in order"
    )


def test_a_full_outbox_keeps_events_in_memory_and_says_so(setup: Setup) -> None:
    m, receiver = setup.master, setup.full_receiver
    # Two builds, four events, for an outbox of 2 whose receiver is down.
    brids = [m.force("slow"), m.force("slow")]
    buildids = [setup.finished_build(brid, 120)["buildid"] for brid in brids]
    refused = "wasm-full: outbox "
    wait_for(
        "the plugin to say the outbox is full",
        lambda: re.search(r"wasm-full: outbox full: 2 events pending at its maxPendingEvents "
                          r"of 2; (\d+) event\(s\) wait in memory for room", m.log()),
        30,
    )
    log = m.log()
    said = [line for line in log.splitlines() if refused in line and "maxPendingEvents" in line]
    # One line when it fills, then one per health check: never one per refused event.
    assert sum("this event was not queued" in line for line in said) == 1, said
    assert not re.search(r"wasm-full: \S+ of build .* kept in memory", log)

    # A rotated token, by reconfig, while events wait: it reaches them (#23).
    m.reconfigure(full_token="token2")
    wait_for(
        "the new configuration to reach the queued events",
        lambda: re.search(r"wasm-full: the new configuration applies to [1-9]\d* queued", m.log()),
        30,
    )

    receiver.start()
    everyone = [b["buildid"] for b in m.get("builds")["builds"]]

    def all_in() -> bool:
        got = [receiver.for_build(b) for b in everyone]
        return all(g["started"] and g["finished"] for g in got)

    wait_for("every build's events at the full outbox's receiver", all_in, 120)
    # Nothing pending any more (nor in memory: every event arrived): the count is final.
    wait_for("its outbox to empty", lambda: setup.outbox_rows("wasm-full") == 0, 30)
    in_order_once(list(receiver.requests), everyone)
    assert set(buildids) <= set(everyone)
    tokens = {dict((k.lower(), v) for k, v in r.headers).get("authorization") for r in receiver.requests}
    assert tokens == {"Bearer second"}, tokens
    report(
        f"maxPendingEvents=2 with the receiver down: {len(everyone) * 2} events of "
        f"{len(everyone)} builds kept (outbox or memory), all delivered once, in order"
    )


def test_moving_the_outbox_says_what_the_old_one_holds(setup: Setup) -> None:
    m = setup.master
    # The hanging receiver never answered: every build's events are still pending there.
    pending = setup.outbox_rows("wasm-hang")
    assert pending > 0
    m.reconfigure(hang_outbox="moved.sqlite")
    said = re.compile(
        r"wasm-hang: the previous outbox \S*status-push-wasm-hang\.sqlite still holds "
        rf"{pending} pending event\(s\) and 0 dead letter\(s\), which this reporter no "
        r"longer delivers; `status-push deliver --outbox \S+` delivers them"
    )
    wait_for("the line about the previous outbox", lambda: said.search(m.log()), 30)
    # Back: the events are there, and its courier takes them up again.
    m.reconfigure(hang_outbox="default")
    assert setup.outbox_rows("wasm-hang") == pending
    report(f"outbox= moved by a reconfig: the log names the {pending} events left in the old one")


def test_stop_with_100_builds_and_a_hanging_receiver(setup: Setup) -> None:
    m, hanging = setup.master, setup.hanging
    quick = {b["builderid"] for b in m.get("builders")["builders"] if b["name"] in QUICK}
    for _ in range(25):
        for name in QUICK:
            m.force(name)

    def done() -> bool:
        builds = [b for b in m.get("builds")["builds"] if b["builderid"] in quick]
        return len(builds) == 100 and all(b["complete"] for b in builds)

    wait_for("100 quick builds to finish", done, 300, 1.0)
    builds = len(m.get("builds")["builds"])
    wait_for(
        "every build's events in the hanging receiver's outbox",
        lambda: setup.outbox_rows("wasm-hang") == 2 * builds,
        60,
        0.5,
    )
    assert hanging.connections >= 1  # calls are in flight, hanging

    assert m.proc is not None
    stopping = time.monotonic()
    m.proc.terminate()  # SIGTERM: a clean stop
    m.proc.wait(timeout=60)
    exited = time.monotonic() - stopping
    # The last stop's line (the master was restarted before).
    stops = list(re.finditer(r"wasm-hang: stopped in ([\d.]+)s; (\d+) event\(s\) pending", m.log()))
    assert stops, "no `stopped in` line from wasm-hang"
    stopped = stops[-1]
    assert float(stopped.group(1)) <= 10, stopped.group(0)
    assert int(stopped.group(2)) == 2 * builds, stopped.group(0)
    # Nothing was lost: every event is still in the outbox for the next start.
    assert setup.outbox_rows("wasm-hang") == 2 * builds
    report(
        f"stop with {builds} builds' events for a hanging receiver: the reporter stopped in "
        f"{stopped.group(1)}s (the master exited in {exited:.1f}s), {2 * builds} events left pending"
    )
