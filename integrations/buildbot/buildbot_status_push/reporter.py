"""`WasmStatusPush`: a Buildbot reporter that hands each build event to status-push.wasm."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Generator, Optional, Sequence

from buildbot import config, interfaces, util
from buildbot.reporters import utils
from buildbot.reporters.base import ReporterBase
from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool
from twisted.python import failure, log
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from .documents import BUILD_FIELDS, config_json, dumps, event_documents
from .host import CONFIG_KEYS, RELAY_ONLY_KEYS, Outbox, Reporter, default_wasm_path, shared_host
from .results import (
    ComponentError,
    ConfigError,
    Delivered,
    Outcome,
    OutboxEntry,
    OutboxError,
    PushFailure,
    Skipped,
)

# Builds delivered at once: each stuck build holds one thread for one pass (its own
# retries, bounded by retryDeadlineSeconds), the others go on.
DELIVERY_THREADS = 8
# Waits between delivery passes of a build whose event is still pending.
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0
# How often the outbox is read for builds this master has no delivery loop for: events
# another master left behind in a shared (PostgreSQL) outbox, dead letters made pending
# again by `status-push redeliver`.
SWEEP_SECONDS = 10.0


# The options the plugin keeps for itself; every other option is the component's.
PLUGIN_OPTIONS = ("wasm_path", "outbox", "generators")
# The component's options a reporter takes: every configuration key but the relay's.
COMPONENT_OPTIONS = tuple(k for k in CONFIG_KEYS if k not in RELAY_ONLY_KEYS)


@dataclass(frozen=True)
class Options:
    """The reporter's options: the seed's HttpStatusPush names, then ours.

    Everything but `wasm_path` goes to the component's `parse-config` under the same name.
    """

    serverUrl: Any
    user: Any = None
    password: Any = None
    auth: Any = None
    headers: Any = None
    format_fn: Optional[str] = None
    builders: Optional[list[str]] = None
    wantProperties: bool = False
    wantSteps: bool = False
    wantLogs: bool = False
    wantPreviousBuild: bool = False
    debug: bool = False
    verify: bool = True
    skipEncoding: bool = False
    buildbotURL: Optional[str] = None  # None: the master's own c['buildbotURL']
    tags: Optional[list[str]] = None
    branches: Optional[list[str]] = None
    schedulers: Optional[list[str]] = None
    mode: Any = None
    connectTimeoutSeconds: Optional[float] = None
    timeoutSeconds: Optional[float] = None
    maxAttempts: Optional[int] = None
    retryDeadlineSeconds: Optional[float] = None
    signingScheme: Optional[str] = None
    signingSecret: Any = None
    caFile: Optional[str] = None
    deadLetterAfterSeconds: Optional[int] = None
    maxBodyBytes: Optional[int] = None
    wasm_path: Optional[str] = None
    # A file path, or a postgresql:// URL shared by several masters; "default":
    # `status-push-<name>.sqlite` in the master's basedir; None: off.
    outbox: Any = "default"
    generators: Any = None

    def component_options(self) -> dict[str, Any]:
        # The component's keys come from their one source (the native module's
        # CONFIG_KEYS); the plugin's own options (PLUGIN_OPTIONS) stay here.
        opts = asdict(self)
        return {key: opts[key] for key in COMPONENT_OPTIONS}

    def wants_previous_build(self) -> bool:
        # `change` and `problem` compare with prev_build, so the component needs it.
        modes = [self.mode] if isinstance(self.mode, str) else list(self.mode or [])
        return self.wantPreviousBuild or "change" in modes or "problem" in modes

    def wasm(self) -> Path:
        return Path(self.wasm_path) if self.wasm_path else default_wasm_path()


class _TwistedLog(logging.Handler):
    """Python `logging` records to Twisted's log (`twistd.log` in a master), with the
    logger's name as the log's system: `[buildbot_status_push.component] status-push: ...`."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log.msg(record.getMessage(), system=record.name)
        except Exception:
            self.handleError(record)


def route_host_log_to_twisted() -> None:
    """Sends the native host's log (logger `buildbot_status_push`: the component's `debug`
    lines, host warnings) to Twisted's log, once per process. A master that configured
    that logger itself (a handler of its own) keeps its configuration."""
    logger = logging.getLogger("buildbot_status_push")
    if logger.handlers:
        return
    logger.addHandler(_TwistedLog())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _placeholder(value: Any) -> Any:
    """A stand-in for a secret or Interpolate, which is only rendered at reconfig time."""
    if interfaces.IRenderable.providedBy(value):
        return "rendered-later"
    if isinstance(value, (list, tuple)):
        return [_placeholder(v) for v in value]
    if isinstance(value, dict):
        return {k: _placeholder(v) for k, v in value.items()}
    return value


@implementer(interfaces.IReportGenerator)
class BuildEvents(util.ComparableMixin):
    """Turns `builds/*/new` and `builds/*/finished` into reports for `sendMessage`.

    It does not filter: builders, tags, branches, schedulers and mode are the component's
    job, so a filtered event costs the data-API reads but never a request.
    """

    wanted_event_keys: ClassVar[list[tuple[Any, ...]]] = [
        ("builds", None, "new"),
        ("builds", None, "finished"),
    ]
    compare_attrs: ClassVar[Sequence[str]] = ["want_steps", "want_logs", "want_previous_build"]

    def __init__(self, want_steps: bool, want_logs: bool, want_previous_build: bool):
        self.want_steps = want_steps or want_logs
        self.want_logs = want_logs
        self.want_previous_build = want_previous_build

    def check(self) -> None:
        pass

    def generate_name(self) -> str:
        return "BuildEvents"

    @defer.inlineCallbacks
    def generate(
        self, master: Any, reporter: Any, key: tuple[str, ...], msg: dict[str, Any]
    ) -> Generator[Any, Any, dict[str, Any]]:
        finished = key[2] == "finished"
        # Every consumer of this mq message gets the same dict, and getDetailsForBuild
        # writes into it; start from the build's own fields so that neither this reporter
        # nor another one (a stock HttpStatusPush) sees what the other added.
        build = {k: msg[k] for k in BUILD_FIELDS}
        yield utils.getDetailsForBuild(
            master,
            build,
            want_properties=True,
            want_steps=self.want_steps,
            want_previous_build=finished and self.want_previous_build,
            want_logs=self.want_logs,
            want_logs_content=self.want_logs,
        )
        return {"event": "finished" if finished else "started", "build": build}


def _events(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(event, build dict) pairs of one report: ours ({event, build}) or a Buildbot report
    generator's ({builds: [...]}, e.g. BuildStatusGenerator)."""
    if "event" in report:
        return [(report["event"], report["build"])]
    return [("finished" if b.get("complete") else "started", b) for b in report.get("builds", [])]


class WasmStatusPush(ReporterBase):
    """Buildbot's HttpStatusPush, with the request built and sent by status-push.wasm on the
    status-push host: sandboxed to `serverUrl`'s origin, and every event kept in a durable
    outbox until it is delivered or becomes a dead letter."""

    name: Optional[str] = "WasmStatusPush"
    secrets: ClassVar[list[str]] = [
        "serverUrl",
        "user",
        "password",
        "auth",
        "headers",
        "signingSecret",
        "outbox",  # a postgresql:// URL may carry a password
    ]

    def __init__(self, *args: Any, **kwargs: Any):
        self._reporter: Optional[Reporter] = None  # only without an outbox
        self._outbox: Optional[Outbox] = None
        self._outbox_at: Optional[str] = None  # what `outbox=` said, for reconfigs
        self._sweeper: Optional[task.LoopingCall] = None
        self._config: Optional[str] = None
        self._debug = False
        self._pool: Optional[ThreadPool] = None
        self._active: dict[str, defer.Deferred[None]] = {}  # build key -> its delivery loop
        self._again: set[str] = set()  # new events arrived while a pass was running
        self._sleeps: set[defer.Deferred[None]] = set()
        self._stopping = False
        self._direct: dict[str, defer.Deferred[None]] = {}  # without an outbox: per-build chains
        super().__init__(*args, **kwargs)

    @staticmethod
    def _options(serverUrl: Any, kwargs: dict[str, Any]) -> Options:
        try:
            return Options(serverUrl, **kwargs)
        except TypeError as e:  # an unknown or misspelt option
            raise TypeError(f"WasmStatusPush: {e}") from None

    def checkConfig(self, serverUrl: Any = None, **kwargs: Any) -> None:
        opts = self._options(serverUrl, kwargs)
        if opts.format_fn is not None and not isinstance(opts.format_fn, str):
            config.error(
                "WasmStatusPush: format_fn must be a Jinja template string (the component "
                "renders it with `build` = the payload), not a Python function"
            )
        if (
            opts.outbox is not None
            and not isinstance(opts.outbox, (str, os.PathLike))
            and not interfaces.IRenderable.providedBy(opts.outbox)
        ):
            config.error(
                "WasmStatusPush: outbox must be a file path, a postgresql:// URL or None"
            )
        # Validate with the component itself now, so that `buildbot checkconfig` names the
        # bad option. Secrets are not rendered yet: a stand-in takes their place.
        check = {k: _placeholder(v) for k, v in opts.component_options().items()}
        if interfaces.IRenderable.providedBy(serverUrl):
            check["serverUrl"] = "http://127.0.0.1/"
        try:
            shared_host(opts.wasm()).check_config(config_json(check))
        except ComponentError as e:
            config.error(f"WasmStatusPush: {e} (set wasm_path= or $STATUS_PUSH_WASM)")
        except ConfigError as e:
            config.error(f"WasmStatusPush: {e}")
        super().checkConfig(generators=self._generators(opts))

    @staticmethod
    def _generators(opts: Options) -> list[Any]:
        if opts.generators is not None:
            return list(opts.generators)
        return [BuildEvents(opts.wantSteps, opts.wantLogs, opts.wants_previous_build())]

    def _outbox_location(self, opts: Options) -> Optional[str]:
        """A file path or a PostgreSQL URL; relative paths are the master's basedir's."""
        if opts.outbox is None:
            return None
        if opts.outbox == "default":
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", self.name or "WasmStatusPush")
            return str(Path(self.master.basedir) / f"status-push-{safe}.sqlite")
        text = os.fspath(opts.outbox)
        if text.startswith(("postgresql://", "postgres://")):
            return text
        return str(Path(self.master.basedir) / text)

    def _threads(self) -> ThreadPool:
        if self._pool is None:
            self._pool = ThreadPool(1, DELIVERY_THREADS, f"status-push-{self.name}")
            self._pool.start()
        return self._pool

    def _in_thread(self, fn: Any, *args: Any) -> "defer.Deferred[Any]":
        from twisted.internet import reactor

        return deferToThreadPool(reactor, self._threads(), fn, *args)

    @defer.inlineCallbacks
    def reconfigService(self, serverUrl: Any = None, **kwargs: Any) -> Generator[Any, Any, None]:
        opts = self._options(serverUrl, kwargs)
        route_host_log_to_twisted()
        self._debug = bool(opts.debug)
        self._stopping = False
        options = opts.component_options()
        if options["buildbotURL"] is None:
            options["buildbotURL"] = self.master.config.buildbotURL
        text = config_json(options)
        self._host = shared_host(opts.wasm())
        location = self._outbox_location(opts)
        try:
            if location is None:
                self._reporter = yield self._in_thread(self._host.reporter, text)
            else:
                yield self._in_thread(self._host.check_config, text)
        except ConfigError as e:
            # Only reachable when a rendered secret is invalid: checkConfig saw the rest.
            raise ValueError(f"{self.name}: invalid configuration: {e}") from e
        self._config = text
        if location is None:
            if self._outbox is not None or not getattr(self, "_said_no_outbox", False):
                log.msg(
                    f"{self.name}: outbox=None: events are kept in memory only; a master "
                    "restart or an outage longer than retryDeadlineSeconds loses them"
                )
                self._said_no_outbox = True
            self._outbox = None
            self._outbox_at = None
        elif self._outbox is None or self._outbox_at != location:
            try:
                self._outbox = yield self._in_thread(Outbox, location)
            except OutboxError as e:
                # The message names the location without its password.
                raise ValueError(f"{self.name}: {e}") from None
            self._outbox_at = location
            log.msg(f"{self.name}: outbox {self._outbox.location}")
            # Events left pending by a crash or a stop go first.
            yield self._sweep(first=True)
        if self._outbox is not None and self._sweeper is None:
            self._sweeper = task.LoopingCall(self._sweep)
            self._sweeper.start(SWEEP_SECONDS, now=False).addErrback(
                log.err, f"{self.name}: outbox sweep stopped"
            )
        yield super().reconfigService(generators=self._generators(opts))

    @defer.inlineCallbacks
    def _sweep(self, first: bool = False) -> Generator[Any, Any, None]:
        """Starts a delivery loop for every build with pending events and none running."""
        outbox = self._outbox
        if outbox is None or self._stopping:
            return
        try:
            pending: list[OutboxEntry] = yield self._in_thread(outbox.pending)
        except (OutboxError, ComponentError) as e:
            log.msg(f"{self.name}: cannot read the outbox, will retry: {e}")
            return
        keys = [k for k in dict.fromkeys(e.build_key for e in pending) if k not in self._active]
        if keys:
            # Later sweeps find only what no loop here holds: another master's events, or
            # dead letters made pending again.
            picked = sum(1 for e in pending if e.build_key in keys)
            log.msg(
                f"{self.name}: delivering {picked} pending event(s) of {len(keys)} build(s) "
                f"from the outbox{'' if first else ' (left by another master, or redelivered)'}"
            )
        for key in keys:
            self._kick(key)

    @defer.inlineCallbacks
    def sendMessage(self, reports: list[dict[str, Any]]) -> Generator[Any, Any, None]:
        for report in reports:
            for event, build in _events(report):
                if self._outbox is None:
                    self._push_direct(event, build)
                    continue
                # Durable before sendMessage returns; serialising a build with its logs
                # can be large, so that happens off the reactor too.
                try:
                    _seq, key = yield self._in_thread(self._write, event, build)
                except (ConfigError, PushFailure) as e:
                    log.msg(f"{self._describe(event, build)} rejected by the component: {e}")
                    continue
                except (OutboxError, ComponentError) as e:
                    log.msg(f"{self._describe(event, build)} not queued: {e}")
                    continue
                self._kick(key)

    def _write(self, event: str, build: dict[str, Any]) -> tuple[int, str]:
        assert self._outbox is not None and self._config is not None
        return self._outbox.write(self._host, self._config, event, dumps(event_documents(build)))

    def _kick(self, key: str) -> None:
        if self._stopping:
            return
        if key in self._active:
            self._again.add(key)
            return
        d = self._deliver(key)
        self._active[key] = d

        def done(result: Any) -> Any:
            # Return the result, never `d` itself (which `pop` would): a Deferred whose
            # callback returns it stalls for good, and stopService waits on it.
            self._active.pop(key, None)
            return result

        d.addBoth(done)

    @defer.inlineCallbacks
    def _deliver(self, key: str) -> Generator[Any, Any, None]:
        """Delivers one build's events in order, pass after pass with backoff, until none
        is pending; other builds run their own loops, so a stuck build delays no other."""
        wait = FIRST_RETRY_SECONDS
        outbox = self._outbox
        while not self._stopping and outbox is not None:
            self._again.discard(key)
            try:
                summary, dead = yield self._in_thread(outbox.deliver_build, self._host, key)
            except (OutboxError, ComponentError) as e:
                log.msg(f"{self.name}: delivery of {key} failed, will retry: {e}")
                summary, dead = None, []
            for entry in dead:
                self._dead_letter(entry)
            if key in self._again:
                # An event was written during the pass, maybe after it looked: look again
                # now rather than after a wait.
                continue
            if summary is not None and summary.pending == 0:
                return
            if self._debug and summary is not None:
                log.msg(f"{self.name}: {key}: {summary.pending} pending, next pass in {wait:.0f}s")
            from twisted.internet import reactor

            sleep = task.deferLater(reactor, wait, lambda: None)
            self._sleeps.add(sleep)
            try:
                yield sleep
            except defer.CancelledError:
                return
            finally:
                self._sleeps.discard(sleep)
            wait = min(wait * 2, MAX_RETRY_SECONDS)

    def _dead_letter(self, entry: OutboxEntry) -> None:
        buildid = entry.build_key.rsplit("|", 1)[-1]
        log.msg(
            f"{self.name}: dead letter: {entry.event} of buildid {buildid} (seq {entry.seq}, "
            f"delivery {entry.delivery_id or '-'}, {entry.attempts} attempt(s)): "
            f"{entry.last_error}; list with `status-push dead-letters --outbox "
            f"{self._outbox.location if self._outbox else '?'}`"
        )

    def _push_direct(self, event: str, build: dict[str, Any]) -> None:
        """Without an outbox: one call per event (the component's own retries), in order
        within a build."""
        key = str(build.get("buildid"))
        reporter = self._reporter
        assert reporter is not None
        documents = dumps(event_documents(build))
        before = self._direct.get(key)
        # One Deferred per event, started when the build's previous one is done, so each
        # waits for its predecessor without sharing (and changing) its result.
        d: defer.Deferred[Any] = defer.Deferred()
        d.addCallback(lambda _: self._in_thread(reporter.report, event, documents))
        d.addCallbacks(
            self._reported, self._failed, callbackArgs=(event, build), errbackArgs=(event, build)
        )

        def done(result: Any) -> None:
            if self._direct.get(key) is d:
                del self._direct[key]

        d.addBoth(done)
        self._direct[key] = d
        if before is None:
            d.callback(None)
        else:

            def start(result: Any) -> Any:
                d.callback(None)
                return result

            before.addBoth(start)

    def _describe(self, event: str, build: dict[str, Any]) -> str:
        builder = build.get("builder", {}).get("name", build.get("builderid"))
        number, buildid = build.get("number"), build.get("buildid")
        return f"{self.name}: {event} of build {builder}#{number} (buildid {buildid})"

    def _reported(self, outcome: Outcome, event: str, build: dict[str, Any]) -> None:
        if isinstance(outcome, Delivered) and (outcome.attempts > 1 or self._debug):
            log.msg(
                f"{self._describe(event, build)} delivered: HTTP {outcome.status} after "
                f"{outcome.attempts} attempt(s) (delivery {outcome.delivery_id})"
            )
        elif isinstance(outcome, Skipped) and self._debug:
            log.msg(f"{self._describe(event, build)} skipped: filtered out by {outcome.reason}")

    def _failed(self, why: failure.Failure, event: str, build: dict[str, Any]) -> None:
        what = self._describe(event, build)
        if why.check(PushFailure):
            log.msg(f"{what} not delivered: push-failure {why.value}")
        elif why.check(ConfigError):
            log.msg(f"{what} rejected by the component: invalid event: {why.value}")
        elif why.check(ComponentError):
            log.msg(f"{what} not delivered: component error: {why.value}")
        else:
            log.err(why, f"{what}: unexpected error")

    @defer.inlineCallbacks
    def stopService(self) -> Generator[Any, Any, None]:
        yield super().stopService()
        # A clean stop leaves pending events in the outbox for the next start: end the
        # waits, let passes already running finish (each bounded by retryDeadlineSeconds).
        self._stopping = True
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None
        for sleep in list(self._sleeps):
            sleep.cancel()
        running = list(self._active.values()) + list(self._direct.values())
        if running:
            yield defer.DeferredList(running, consumeErrors=True)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.stop()
