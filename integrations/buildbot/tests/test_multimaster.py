"""Multi-master: two real Buildbot masters share Buildbot's database and WasmStatusPush's
outbox on one PostgreSQL server (started by this test, see postgres.py). The receiver is
down while each master runs a build (the destination's circuit opens); master 1 is killed
with SIGKILL and never restarted; the receiver returns: master 2's courier delivers master
1's pending events with its own (what master 1 held comes free within one lease, and the
destination is probed at least every 10 s), each once, in per-build order, within 15 s.

Builders b1 and b2 are configured on both masters; worker w1 attaches to master 1 and w2
to master 2, so b1's build runs on master 1 and b2's on master 2.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
from postgres import Postgres
from support import Master, Receiver, Request, free_port, master_env, wait_for

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
WORK = HERE.parent / ".e2e" / "multimaster"
REPORT = HERE.parent / ".e2e" / "report.txt"
WASM = Path(os.environ.get("STATUS_PUSH_WASM", REPO / "target" / "status-push.wasm"))

# Buildbot's tables and the outbox's (status_push_*) in one database.
DATABASE = "buildbot"


def report(line: str) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    with REPORT.open("a", encoding="utf-8") as f:
        f.write(line + "\n")


def delivery_id(r: Request) -> str:
    return dict((k.lower(), v) for k, v in r.headers)["idempotency-key"]


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    pg = Postgres.start("multimaster")
    try:
        pg.createdb(DATABASE)
        yield pg
    finally:
        (WORK / "postgres.log").write_text(pg.log())
        pg.stop()


class Cluster:
    def __init__(self, pg: Postgres) -> None:
        self.pg = pg
        self.receiver = Receiver("multimaster", port=free_port())  # started later: refused
        env = master_env(WASM)
        cfg = HERE / "multimaster.cfg"
        self.m1 = Master("m1", "w1", env, WORK, cfg)
        self.m2 = Master("m2", "w2", env, WORK, cfg)
        self.settings = {
            # SQLAlchemy 2.1's default PostgreSQL driver is psycopg 3: Buildbot gets psycopg2.
            "db_url": pg.url(DATABASE, "postgresql+psycopg2"),
            "outbox_url": pg.url(DATABASE),
            "receiver_port": self.receiver.port,
            # util.Secret("outbox_key"), as a master would keep it (SecretInAFile).
            "secrets": {"outbox_key": base64.b64encode(os.urandom(32)).decode()},
        }

    def start(self) -> None:
        # One after the other: the first creates Buildbot's schema and registers the
        # builders; the second finds them.
        for m in (self.m1, self.m2):
            m.create(self.settings)
            m.start()
        for m in (self.m1, self.m2):
            m.start_worker()

        def connected() -> bool:
            workers = {w["name"]: w for w in self.m2.get("workers")["workers"]}
            return all(workers.get(n, {}).get("connected_to") for n in ("w1", "w2"))

        wait_for("both workers to connect", connected, 60)

    def sql(self, sql: str) -> str:
        return self.pg.sql(sql, DATABASE)

    def stop(self) -> None:
        for m in (self.m2, self.m1):
            m.stop()
        self.receiver.stop()


@pytest.fixture(scope="module")
def cluster(postgres: Postgres) -> Iterator[Cluster]:
    assert WASM.is_file(), f"{WASM} is missing: build it with `cargo xtask wasm`"
    c = Cluster(postgres)
    try:
        c.start()
        yield c
    finally:
        c.stop()
    # Whatever happened to the deliveries, the plugin never raised in a master.
    for m in (c.m1, c.m2):
        entries = re.split(r"\n(?=\d{4}-\d\d-\d\d )", m.log())
        ours = [e for e in entries if "Traceback" in e and "buildbot_status_push" in e]
        assert not ours, f"the plugin raised in {m.name}:\n" + "\n".join(ours)


def test_surviving_master_delivers_dead_masters_events(cluster: Cluster) -> None:
    m1, m2, receiver = cluster.m1, cluster.m2, cluster.receiver
    started = time.monotonic()

    # The receiver is down (nothing listens on its port): one build on each master.
    brids = {m1.name: m1.force("b1"), m2.name: m2.force("b2")}

    def finished(m: Master, brid: int) -> Optional[dict[str, Any]]:
        builds = m.get(f"buildrequests/{brid}/builds")["builds"]
        return builds[0] if builds and builds[0]["complete"] else None

    builds = {
        m.name: wait_for(f"{m.name}'s build to finish", lambda m=m: finished(m, brids[m.name]), 90)
        for m in (m1, m2)
    }
    assert all(b["results"] == 0 for b in builds.values()), builds
    # Each build ran on the master its worker is attached to.
    masters = {m["masterid"]: m["name"] for m in m2.get("masters")["masters"]}
    for m in (m1, m2):
        ran_on = masters[builds[m.name]["masterid"]]
        assert ran_on.endswith(str(m.dir)), (m.name, ran_on)
    keys = {m.name: f"{m.url}|{builds[m.name]['buildid']}" for m in (m1, m2)}

    # Both masters wrote started and finished to the shared outbox, none delivered.
    wait_for(
        "4 pending events in the shared outbox",
        lambda: cluster.sql("SELECT count(*) FROM status_push_events WHERE NOT dead") == "4",
        60,
    )
    per_build = cluster.sql(
        "SELECT build_key, string_agg(event, ',' ORDER BY seq) FROM status_push_events "
        "WHERE NOT dead GROUP BY build_key ORDER BY build_key"
    )
    assert per_build.splitlines() == sorted(f"{keys[n]}|started,finished" for n in keys), per_build

    # The receiver's origin is one destination for both masters: its circuit is open.
    wait_for(
        "the destination's circuit to open",
        lambda: cluster.sql("SELECT count(*) FROM status_push_destinations WHERE failures > 0")
        == "1",
        60,
        0.1,
    )
    # Kill master 1 mid-outage: whatever it held (a probe's claim) comes free within one
    # lease, and master 2's courier delivers its events.
    assert m1.proc is not None
    m1.kill()
    killed = time.monotonic()
    m2_log_at_kill = len(m2.log())
    outage = killed - started

    # The receiver returns.
    receiver.start()
    back = time.monotonic()

    def arrived(m: Master) -> Optional[dict[str, list[Request]]]:
        got = receiver.for_build(builds[m.name]["buildid"])
        return got if got["started"] and got["finished"] else None

    seen_at: dict[str, float] = {}

    def all_arrived() -> bool:
        for m in (m1, m2):
            if m.name not in seen_at and arrived(m):
                seen_at[m.name] = time.monotonic() - back
        m2.alive()
        return len(seen_at) == 2

    wait_for("both builds' events at the receiver", all_arrived, 120, 0.2)
    # Nothing pending in the shared outbox: nothing can be sent again, the count is final.
    wait_for(
        "the shared outbox to hold nothing pending",
        lambda: cluster.sql("SELECT count(*) FROM status_push_events WHERE NOT dead") == "0",
        60,
    )

    ids = {builds[m.name]["buildid"]: m.name for m in (m1, m2)}
    ours = [r for r in list(receiver.requests) if r.doc().get("buildid") in ids]
    counts = Counter(delivery_id(r) for r in ours)
    duplicates = sum(n - 1 for n in counts.values())
    print(
        f"\nrequests {len(ours)}, distinct delivery ids {len(counts)}, duplicates {duplicates}; "
        "since the receiver returned: "
        + ", ".join(f"{n} {t:.1f}s" for n, t in sorted(seen_at.items()))
    )
    for buildid, name in ids.items():
        mine = [r for r in ours if r.doc()["buildid"] == buildid]
        assert [r.event for r in mine] == ["started", "finished"], (name, [r.event for r in mine])
        # Each master's own configuration (its serverUrl) travelled with its events.
        assert all(r.path == f"/{name}" for r in mine), (name, [r.path for r in mine])
        assert mine[1].doc()["complete"] and mine[1].doc()["results"] == 0
    assert duplicates == 0 and len(counts) == 4, counts
    assert cluster.sql("SELECT count(*) FROM status_push_events") == "0"

    # A failing destination is probed at least every 10 s, and a dead host's claims run
    # out within one lease (10 s): both builds are in within 15 s of the receiver's return.
    assert max(seen_at.values()) <= 15, seen_at
    # Master 2's courier posted master 1's events after the kill.
    log = m2.log()
    after_kill = log[m2_log_at_kill:]
    post_m1 = f"status-push: -> POST http://127.0.0.1:{receiver.port}/m1"
    assert post_m1 in after_kill, f"no {post_m1!r} in m2's log after the kill"
    assert "status-push: <- 200" in after_kill

    report(
        f"multi-master on PostgreSQL: m1 killed (-9) during a {outage:.0f}s receiver "
        f"outage (the destination's circuit open); m2 "
        f"delivered m1's 2 events {seen_at['m1']:.1f}s after the receiver returned "
        f"(its own {seen_at['m2']:.1f}s), 4/4 once each, in per-build order, outbox empty"
    )
