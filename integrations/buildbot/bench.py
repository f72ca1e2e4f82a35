#!/usr/bin/env python3
"""Benchmark (not a test): N build events through WasmStatusPush and through Buildbot 4.3's
stock HttpStatusPush, over the same reporter code path, to one loopback receiver.

Both reporters run in a Buildbot fake master (`buildbot.test.fake.fakemaster.make_master`)
with a real data API over Buildbot's fake database (in-memory SQLite) and the real Twisted
reactor (real threads, real sockets). Each event is handed to the reporter as the message
queue does (`mq.callConsumer`), so it goes through `ReporterBase._got_event`, the report
generator (`getDetailsForBuild` on the data API) and `sendMessage`. Events are fed with at
most `--window` in the reporter at once (a master with window/2 builds running); a run
ends when the receiver has answered all N POSTs, so the figures include delivery, not
just queueing (WasmStatusPush: its outbox is on, the default).

The receiver is a separate process (a threaded HTTP/1.1 keep-alive server on 127.0.0.1),
so its CPU is not counted; CPU per event is this process's (`time.process_time`: all its
threads, the native host's included).

    .venv/bin/python bench.py --events 2000 [--window 20] [--order stock,wasm,wasm-memory]
                              [--history 1000] [--profile]
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


# --- the receiver (a child process) ---------------------------------------------------------


def receiver_main() -> None:
    lock = threading.Lock()
    # Since the last /reset: events answered, connections accepted, connections that
    # carried events (a keep-alive connection opened before the reset counts as used).
    stats = {"events": 0, "opened": 0, "used": 0}
    generation = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        counted_in = -1

        def log_message(self, *args: Any) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            with lock:
                stats["opened"] += 1

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                stats["events"] += 1
                if self.counted_in != generation[0]:
                    self.counted_in = generation[0]
                    stats["used"] += 1
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            with lock:
                if self.path == "/reset":
                    stats.update(events=0, opened=0, used=0)
                    generation[0] += 1
                else:
                    stats["opened"] -= 1  # this query's own connection
                body = json.dumps(stats).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True

    def orphaned() -> None:
        # stdin is a pipe from the bench: EOF when it ends, however it ends (--max-seconds
        # ends it with os._exit, which runs no `finally`), so no receiver is left behind.
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=orphaned, daemon=True).start()
    print(server.server_address[1], flush=True)
    server.serve_forever()


# --- the master side --------------------------------------------------------------------------


def stats(port: int, path: str = "/stats") -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


class Case(unittest.TestCase):
    """What Buildbot's fakes need of a test case: assertions and cleanups (run by us)."""

    def runTest(self) -> None:
        pass

    def __init__(self) -> None:
        super().__init__("runTest")
        self.bench_cleanups: list[Any] = []

    def addCleanup(self, fn: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N802
        self.bench_cleanups.append((fn, args, kwargs))

    async def cleanup(self) -> None:
        while self.bench_cleanups:
            fn, args, kwargs = self.bench_cleanups.pop()
            result = fn(*args, **kwargs)
            if hasattr(result, "__await__") or hasattr(result, "addCallback"):
                await result


def rows(builds: int, history: int, masterid: int) -> list[Any]:
    """The builds the run reports (ids history+1 .. history+builds), after `history` earlier
    successful builds of the same builder and sourcestamp, all run by master `masterid`
    (WasmStatusPush reports only its own master's builds)."""
    from buildbot.test import fakedb

    out = [
        fakedb.Master(id=masterid),
        fakedb.Worker(id=13, name="wrk"),
        fakedb.Builder(id=79, name="Builder0", description="The main builder"),
        fakedb.SourceStamp(id=234, branch="master", revision="d34db33fd43db33f",
                           project="p", repository="https://example.org/repo",
                           codebase="", created_at=10000000),
    ]
    for i in range(1, history + builds + 1):
        out += [
            fakedb.Buildset(id=i, external_idstring=f"extid-{i}", reason="bench",
                            submitted_at=10000000, complete=1, complete_at=10000010, results=0),
            fakedb.BuildsetSourceStamp(buildsetid=i, sourcestampid=234),
            fakedb.BuildRequest(id=i, buildsetid=i, builderid=79, submitted_at=10000000,
                                complete=1, complete_at=10000010, results=0),
            fakedb.Build(id=i, number=i, builderid=79, buildrequestid=i, workerid=13,
                         masterid=masterid, started_at=10000001, complete_at=10000009,
                         state_string="build successful", results=0),
        ]
        if i <= history:
            continue
        out += [
            fakedb.BuildProperty(buildid=i, name=n, value=v, source=s)
            for n, v, s in [("buildername", "Builder0", "Builder"), ("buildnumber", i, "Build"),
                            ("branch", "master", "Build"), ("revision", "d34db33f", "Build"),
                            ("workername", "wrk", "Worker")]
        ]
    return out


def stock_reporter(url: str) -> Any:
    from buildbot.reporters.generators.build import BuildStatusGenerator
    from buildbot.reporters.http import HttpStatusPush
    from buildbot.reporters.message import MessageFormatterFunction

    # What WasmStatusPush sends by default (tests/master.cfg's "plain" stock reporter).
    formatter = MessageFormatterFunction(lambda ctx: ctx["build"], "json", want_properties=False)
    generator = BuildStatusGenerator(mode="all", report_new=True, message_formatter=formatter)
    return HttpStatusPush(url, generators=[generator])


def wasm_reporter(url: str) -> Any:
    from buildbot_status_push import WasmStatusPush

    return WasmStatusPush(url)  # defaults: the outbox on, in the master's basedir


def wasm_memory_reporter(url: str) -> Any:
    from buildbot_status_push import WasmStatusPush

    # outbox=None: one component call per event, nothing on disk (for comparison only).
    return WasmStatusPush(url, name="WasmStatusPushNoOutbox", outbox=None)


async def run_one(master: Any, reporter: Any, events: int, window: int, history: int,
                  port: int, profile: bool) -> dict[str, float]:
    from twisted.internet import reactor, task, threads

    await reporter.setServiceParent(master)
    stats(port, "/reset")
    builds = [await master.data.get(("builds", i))
              for i in range(history + 1, history + events // 2 + 1)]
    # As a master with window/2 builds running: their started events, then their finished.
    half = max(window // 2, 1)
    order = []
    for start in range(0, len(builds), half):
        group = builds[start : start + half]
        order += [(("builds", str(b["buildid"]), "new"), dict(b)) for b in group]
        order += [(("builds", str(b["buildid"]), "finished"), dict(b)) for b in group]
    order = order[:events]
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    fed = [0]
    watchdog = task.LoopingCall(
        lambda: print(f"{reporter.name}: {fed[0]}/{len(order)} events handed over after "
                      f"{time.perf_counter() - t0:.0f}s, receiver {stats(port)}",
                      file=sys.stderr))
    t0, c0 = time.perf_counter(), time.process_time()
    watchdog.start(10, now=False)
    for i in range(0, len(order), window):
        for key, msg in order[i : i + window]:
            master.mq.callConsumer(key, msg)
        await master.mq.wait_consumed()
        fed[0] = min(i + window, len(order))
    queued = time.perf_counter() - t0
    while True:
        seen = await threads.deferToThread(stats, port)
        if seen["events"] >= events:
            break
        await task.deferLater(reactor, 0.005, lambda: None)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    watchdog.stop()
    if prof is not None:
        prof.disable()
    await reporter.disownServiceParent()
    result = {
        "events": seen["events"],
        "wall": wall,
        "queued": queued,
        "cpu": cpu,
        "opened": seen["opened"],
        "used": seen["used"],
    }
    if prof is not None:
        import io
        import pstats

        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(18)
        result["profile"] = out.getvalue()
    return result


async def bench(args: argparse.Namespace, port: int) -> dict[str, dict[str, float]]:
    from buildbot.test.fake import fakemaster
    from buildbot.util import httpclientservice

    # buildbot.test makes every warning an error; the Twisted/Alembic releases in the lock
    # (newer than Buildbot 4.3) emit deprecation warnings (as tests/fixtures/buildbot/record.py).
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    case = Case()
    master = await fakemaster.make_master(case, wantData=True, wantRealReactor=True)
    master.config.buildbotURL = "http://buildbot.example.org/"
    master.mq.verifyMessages = False
    await master.startService()
    # As BuildMaster does (the fake master has none).
    master.httpservice = await httpclientservice.HTTPClientService.getService(master, "")
    await master.db.insert_test_data(
        rows((args.events + 1) // 2, args.history, master.masterid))
    url = f"http://127.0.0.1:{port}/status"
    results = {}
    try:
        kinds = {"stock": stock_reporter, "wasm": wasm_reporter,
                 "wasm-memory": wasm_memory_reporter}
        for name in args.order.split(","):
            results[name] = await run_one(master, kinds[name](url), args.events, args.window,
                                          args.history, port, args.profile and name == "wasm")
    finally:
        await master.stopService()
        await case.cleanup()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2000, help="events per reporter")
    ap.add_argument("--window", type=int, default=20, help="events in the reporter at once")
    ap.add_argument("--history", type=int, default=1000,
                    help="successful builds of the builder before the run's builds. The stock "
                    "reporter (getResponsibleUsersForBuild -> getChangesForBuild -> "
                    "getPrevSuccessfulBuild) reads up to 1000 of the builder's earlier "
                    "successful builds per event: with >= 1000 every event costs the same, as "
                    "on a builder with a long history; with 0 the cost grows with each build "
                    "the run itself adds (what this script did before)")
    ap.add_argument("--order", default="stock,wasm",
                    help="reporters, in the order run: stock, wasm (outbox on), wasm-memory "
                    "(outbox=None, for comparison)")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile the reactor thread during the WasmStatusPush run")
    ap.add_argument("--max-seconds", type=float, default=300,
                    help="give up (printing every thread's stack) after this long")
    ap.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.receiver:
        receiver_main()
        return 0
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # A hung run prints every thread's stack and ends instead of waiting forever.
    faulthandler.dump_traceback_later(args.max_seconds, exit=True)
    os.environ.setdefault("STATUS_PUSH_WASM",
                          os.path.join(HERE, "..", "..", "target", "status-push.wasm"))
    rx = subprocess.Popen([sys.executable, __file__, "--receiver"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
    work = tempfile.mkdtemp(prefix="sp-bench-")
    cwd = os.getcwd()
    try:
        port = int(rx.stdout.readline())
        os.chdir(work)  # the fake master's basedir (and the outbox) go here
        from twisted.internet import defer, task

        results: dict[str, Any] = {}

        async def go(_reactor: Any) -> None:
            results.update(await bench(args, port))

        try:
            task.react(lambda r: defer.ensureDeferred(go(r)))
        except SystemExit as e:
            if e.code:
                return int(e.code)
    finally:
        os.chdir(cwd)
        rx.terminate()
        rx.wait()
        rx.stdin.close()
        rx.stdout.close()
        shutil.rmtree(work, ignore_errors=True)

    from buildbot_status_push import _native

    print(f"{args.events} events per reporter, window {args.window}, receiver 127.0.0.1 "
          f"(one process, HTTP/1.1 keep-alive); native module {_native.__file__}")
    for name, r in results.items():
        label = {"stock": "HttpStatusPush (stock)", "wasm": "WasmStatusPush (outbox on)",
                 "wasm-memory": "WasmStatusPush outbox=None"}[name]
        print(f"{label:27s}: {r['events']} delivered in {r['wall']:.2f}s = "
              f"{r['events'] / r['wall']:.0f} events/s; CPU {1000 * r['cpu'] / r['events']:.2f} "
              f"ms/event; TCP connections: {r['opened']} opened, {r['used']} used; all queued after "
              f"{r['queued']:.2f}s")
    s = results.get("stock")
    for name in ("wasm", "wasm-memory"):
        w = results.get(name)
        if s and w:
            rate = (w["events"] / w["wall"]) / (s["events"] / s["wall"])
            cpu = (w["cpu"] / w["events"]) / (s["cpu"] / s["events"])
            print(f"ratio {name}/stock: {rate:.2f}x events/s, {cpu:.2f}x CPU per event")
    if "profile" in results.get("wasm", {}):
        print(results["wasm"]["profile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
