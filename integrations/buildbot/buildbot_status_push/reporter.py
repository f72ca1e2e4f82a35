"""`WasmStatusPush`: a Buildbot reporter that hands each build event to status-push.wasm."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, fields
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
from .host import (
    CONFIG_KEYS,
    OUTBOX_KEY_FILE_ENV,
    RELAY_ONLY_KEYS,
    Courier,
    Outbox,
    Reporter,
    check_outbox_key,
    default_wasm_path,
    shared_host,
)
from .results import (
    ComponentError,
    ConfigError,
    Delivered,
    Outcome,
    OutboxEntry,
    OutboxError,
    OutboxFull,
    OutboxUnavailable,
    PushFailure,
    Skipped,
)

# Delivery is the host library's courier (the same as `status-push deliver`): it claims,
# orders, backs off and keeps circuits on its own threads. The plugin only writes events,
# wakes it, and stops it.
# Threads that write events (and, without an outbox, report them): writes never wait
# behind deliveries, which run in the courier.
WRITER_THREADS = 4
# Calls in flight at a stop get this long to finish; the rest stays pending.
STOP_GRACE_SECONDS = 5.0
# Events kept in memory while the outbox cannot be written (a database failing over, a
# full disk), written in order once it can; beyond it each further event is dropped with
# one log line.
UNWRITTEN_LIMIT = 10_000
# How often unwritten events are tried again, and the outbox's health is logged.
RETRY_WRITE_SECONDS = 5.0
HEALTH_SECONDS = 60.0


# Buildbot 4.3's HttpStatusPush spellings with no configuration key of their own: the
# plugin turns them into the component's (`cert` into clientCertFile/clientKeyFile,
# `skip_encoding` into skipEncoding; `verify` as a path into caFile, trusted alone).
BUILDBOT_SPELLINGS = ("cert", "skip_encoding")
# The options the plugin keeps for itself; every other option is the component's.
PLUGIN_OPTIONS = ("wasm_path", "outbox", "outboxKey", "generators", *BUILDBOT_SPELLINGS)
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
    # True, False, or a CA bundle's path (requests' `verify`, as Buildbot 4.3 takes it).
    verify: Any = True
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
    # None: the system's roots are trusted beside caFile's, unless `verify` names a CA
    # bundle, which requests trusts alone.
    trustSystemRoots: Optional[bool] = None
    clientCertFile: Optional[str] = None
    clientKeyFile: Optional[str] = None
    deadLetterAfterSeconds: Optional[int] = None
    deadLetterRetentionDays: Optional[int] = None
    maxPendingEvents: Optional[int] = None
    maxBodyBytes: Optional[int] = None
    wasm_path: Optional[str] = None
    # A file path, or a postgresql:// URL shared by several masters; "default":
    # `status-push-<name>.sqlite` in the master's basedir; None: off.
    outbox: Any = "default"
    # The outbox key's text (a key file's content, `status-push keygen` writes one;
    # util.Secret works): its rows are sealed under it. None: $STATUS_PUSH_OUTBOX_KEY_FILE,
    # else for a file outbox FILE.key beside it; a PostgreSQL outbox needs one.
    outboxKey: Any = None
    generators: Any = None
    # Buildbot 4.3's: a client certificate for mutual TLS, as requests takes it: one PEM
    # file holding the certificate and its key, or a (certificate, key) pair of files.
    cert: Any = None
    # Buildbot 4.3's: the JSON handed to the HTTP library as text rather than bytes; that
    # JSON is ASCII, so the bytes sent are the same (as with skipEncoding).
    skip_encoding: Any = None

    def component_options(self) -> dict[str, Any]:
        # The component's keys come from their one source (the native module's
        # CONFIG_KEYS); the plugin's own options (PLUGIN_OPTIONS) stay here, Buildbot's
        # spellings turned into the keys they mean.
        opts = asdict(self)
        out = {key: opts[key] for key in COMPONENT_OPTIONS}
        if isinstance(self.verify, (str, os.PathLike)):
            out["verify"], out["caFile"] = True, os.fspath(self.verify)
            if self.trustSystemRoots is None:
                out["trustSystemRoots"] = False
        if isinstance(self.cert, (str, os.PathLike)):
            out["clientCertFile"] = os.fspath(self.cert)
        elif isinstance(self.cert, (tuple, list)) and len(self.cert) == 2:
            out["clientCertFile"], out["clientKeyFile"] = (os.fspath(f) for f in self.cert)
        if self.skip_encoding is not None:
            out["skipEncoding"] = bool(self.skip_encoding) or bool(self.skipEncoding)
        return out

    def spelling_problem(self) -> Optional[str]:
        """Why Buildbot 4.3's `verify`, `cert` or `skip_encoding` cannot be taken, or None."""
        path = (str, os.PathLike)
        if self.verify is not None and not isinstance(self.verify, (bool, *path)):
            return "verify must be True, False or the path of a CA bundle (as requests takes it)"
        if isinstance(self.verify, path):
            if not os.fspath(self.verify):
                return "verify: the CA bundle path is empty"
            if self.caFile is not None:
                return "verify names a CA bundle and caFile names another: give one of them"
        cert = self.cert
        pair = isinstance(cert, (tuple, list)) and len(cert) == 2
        if cert is not None and not (
            (isinstance(cert, path) and os.fspath(cert))
            or (pair and all(isinstance(f, path) and os.fspath(f) for f in cert))
        ):
            return (
                "cert must be the path of a PEM file holding the client certificate and its "
                "key, or a (certificate, key) pair of paths, as requests takes it"
            )
        if cert is not None and (self.clientCertFile or self.clientKeyFile):
            return "cert and clientCertFile/clientKeyFile name the same thing: give one of them"
        if self.skip_encoding is not None and not isinstance(self.skip_encoding, bool):
            return "skip_encoding must be True or False"
        return None

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


def _has_renderable(value: Any) -> bool:
    if interfaces.IRenderable.providedBy(value):
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_renderable(v) for v in value)
    if isinstance(value, dict):
        return any(_has_renderable(v) for v in value.values())
    return False


def _unusable_outbox_path(text: str) -> Optional[str]:
    """Why an absolute outbox file path cannot be used, or None (a relative one is the
    master's basedir's, known only once it runs; a URL is checked when it connects)."""
    if text.startswith(("postgresql://", "postgres://")) or not os.path.isabs(text):
        return None
    path = Path(text)
    if path.exists():
        return None if path.is_file() else "is not a regular file"
    if not path.parent.is_dir():
        return f"cannot be created: {path.parent} is not a directory"
    if not os.access(path.parent, os.W_OK):
        return f"cannot be created: {path.parent} is not writable"
    return None


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


def _as_spelt(error: ConfigError, opts: Options) -> str:
    """A configuration error under the name the master.cfg used: `verify` and `cert` are
    spelt caFile and clientCertFile/clientKeyFile by the component."""
    spelt = {
        "caFile": "verify" if isinstance(opts.verify, (str, os.PathLike)) else None,
        "clientCertFile": "cert" if opts.cert is not None else None,
        "clientKeyFile": "cert" if opts.cert is not None else None,
    }.get(error.key)
    return f"{spelt} ({error.key}): {error.message}" if spelt else str(error)


def _events(
    report: dict[str, Any],
) -> list[tuple[str, dict[str, Any], Optional[Any]]]:
    """(event, build dict, formatted body) of one report: ours ({event, build}) or a
    Buildbot report generator's ({builds: [...], body, type}, e.g. BuildStatusGenerator).

    A generator's body that is a dict or a list is what the stock HttpStatusPush sends
    (`json=body`), so it is sent, as the report's one request. Any other body, a text
    formatter's (Buildbot's default MessageFormatter), the stock reporter does not send
    at all: such a generator only chooses the builds, each reported with our payload."""
    if "event" in report:
        return [(report["event"], report["build"], None)]
    builds = report.get("builds") or []
    body = report.get("body")
    if isinstance(body, (dict, list)) and builds:
        # A buildset's report is one request too: its first build names it.
        first = builds[0]
        finished = all(b.get("complete") for b in builds)
        return [("finished" if finished else "started", first, body)]
    return [("finished" if b.get("complete") else "started", b, None) for b in builds]


def formatted_documents(build: dict[str, Any], body: Any) -> str:
    """The documents of a report with its formatter's body: the build's documents say which
    build it is (filters, delivery id); its steps and previous build are in the body if
    the formatter wanted them, so they are left out."""
    documents = event_documents(build)
    documents["steps"] = []
    documents["prev_build"] = None
    documents["body"] = body
    return dumps(documents)


class WasmStatusPush(ReporterBase):
    """Buildbot's HttpStatusPush, with the request built and sent by status-push.wasm on the
    status-push host: sandboxed to `serverUrl`'s origin, and every event kept in a durable
    outbox until it is delivered or becomes a dead letter."""

    name: Optional[str] = "WasmStatusPush"
    # How often the outbox's health is logged while something is wrong (a subclass may
    # say otherwise: the tests do, to see the line without waiting a minute).
    health_seconds: ClassVar[float] = HEALTH_SECONDS
    secrets: ClassVar[list[str]] = [
        "serverUrl",
        "user",
        "password",
        "auth",
        "headers",
        "signingSecret",
        "outbox",  # a postgresql:// URL may carry a password
        "outboxKey",
    ]

    def __init__(self, *args: Any, **kwargs: Any):
        self._reporter: Optional[Reporter] = None  # only without an outbox
        self._outbox: Optional[Outbox] = None
        # What `outbox=` and `outboxKey=` said (the key as a hash), for reconfigs.
        self._outbox_at: Optional[tuple[str, Optional[str]]] = None
        self._courier: Optional[Courier] = None
        self._config: Optional[str] = None
        self._debug = False
        self._pool: Optional[ThreadPool] = None
        self._stopping = False
        self._direct: dict[str, defer.Deferred[None]] = {}  # without an outbox: per-build chains
        # Events the outbox refused to take for now, oldest first: (event, documents).
        self._unwritten: collections.deque[tuple[str, str]] = collections.deque()
        self._writing = False
        self._retry_writes: Optional[task.LoopingCall] = None
        # An outbox whose database did not answer at (re)configuration: (location, key),
        # opened by the retry loop as soon as it answers.
        self._opening: Optional[tuple[str, Optional[str]]] = None
        self._said_closed = 0.0  # when the log last said it still cannot be opened
        self._took_kept = False  # whether the events kept at the last stop were taken up
        self._health: Optional[task.LoopingCall] = None
        self._full: Optional[OutboxFull] = None  # the last refusal at maxPendingEvents
        super().__init__(*args, **kwargs)

    @staticmethod
    def _options(serverUrl: Any, kwargs: dict[str, Any]) -> Options:
        try:
            return Options(serverUrl, **kwargs)
        except TypeError as e:  # an unknown or misspelt option
            raise TypeError(f"WasmStatusPush: {e}") from None

    def checkConfig(self, serverUrl: Any = None, **kwargs: Any) -> None:
        opts = self._options(serverUrl, kwargs)
        problem = opts.spelling_problem()
        if problem:
            config.error(f"WasmStatusPush: {problem}")
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
        # Buildbot renders only the options in `secrets`: a renderable anywhere else would
        # reach the component as an object, so it is refused here, by name.
        for option in fields(opts):
            if option.name not in self.secrets and option.name != "generators":
                if _has_renderable(getattr(opts, option.name)):
                    config.error(
                        f"WasmStatusPush: {option.name} cannot be a renderable "
                        "(util.Secret, util.Interpolate, ...): Buildbot renders only "
                        + ", ".join(self.secrets)
                    )
        location = opts.outbox
        if isinstance(location, (str, os.PathLike)) and location != "default":
            problem = _unusable_outbox_path(os.fspath(location))
            if problem:
                config.error(f"WasmStatusPush: outbox {os.fspath(location)!r} {problem}")
        key = opts.outboxKey
        if isinstance(key, str):
            try:
                check_outbox_key(key)
            except OutboxError as e:
                config.error(f"WasmStatusPush: outboxKey: {e}")
        elif key is not None and not interfaces.IRenderable.providedBy(key):
            config.error("WasmStatusPush: outboxKey must be the key file's text (util.Secret)")
        shared = isinstance(location, str) and location.startswith(
            ("postgresql://", "postgres://")
        )
        if shared and key is None and not os.environ.get(OUTBOX_KEY_FILE_ENV):
            config.error(
                "WasmStatusPush: a PostgreSQL outbox needs the outbox key its masters share: "
                "make one with `status-push keygen PATH` and give it as "
                f"outboxKey=util.Secret(...) (or {OUTBOX_KEY_FILE_ENV}=PATH)"
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
            config.error(f"WasmStatusPush: {_as_spelt(e, opts)}")
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
            return str(Path(self.master.basedir) / f"status-push-{self._safe_name()}.sqlite")
        text = os.fspath(opts.outbox)
        if text.startswith(("postgresql://", "postgres://")):
            return text
        return str(Path(self.master.basedir) / text)

    def _safe_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", self.name or "WasmStatusPush")

    def _kept_path(self) -> Path:
        """Where the events still waiting in memory at a stop are kept for the next start."""
        return Path(self.master.basedir) / f"status-push-{self._safe_name()}.unwritten.jsonl"

    def _threads(self) -> ThreadPool:
        if self._pool is None:
            self._pool = ThreadPool(1, WRITER_THREADS, f"status-push-{self.name}")
            self._pool.start()
        return self._pool

    def _in_thread(self, fn: Any, *args: Any) -> "defer.Deferred[Any]":
        return deferToThreadPool(self.master.reactor, self._threads(), fn, *args)

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
        previous = self._config
        self._host = shared_host(opts.wasm())
        location = self._outbox_location(opts)
        key = opts.outboxKey
        # What opened the outbox: its location and which key (never the key itself).
        opened_as = (location, hashlib.sha256(key.encode()).hexdigest() if key else None)
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
            old, self._outbox, self._outbox_at, self._opening = self._outbox, None, None, None
            yield self._stop_courier()
            if old is not None:
                yield self._say_what_remains(old)
        elif self._outbox is None or self._outbox_at != opened_as:
            # Only another location leaves events behind (a new key reopens the same one).
            moved = self._outbox_at is not None and self._outbox_at[0] != location
            old = self._outbox if moved else None
            try:
                outbox = yield self._in_thread(Outbox, location, key)
            except OutboxUnavailable as e:
                # A database that is down for now must not stop the master: events wait
                # in memory (bounded) until it answers, then go to it in order.
                log.msg(
                    f"{self.name}: {e}; events are kept in memory and the outbox is tried "
                    f"again every {RETRY_WRITE_SECONDS:.0f}s"
                )
                outbox = None
            except OutboxError as e:
                # The message names the location without its password, never the key.
                raise ValueError(f"{self.name}: {e}") from None
            yield self._stop_courier()
            if old is not None:
                yield self._say_what_remains(old)
            self._outbox, self._outbox_at = outbox, opened_as
            if outbox is None:
                self._opening = (location, key)
                self._retry_soon()
            else:
                self._opening = None
                log.msg(f"{self.name}: outbox {outbox.location}")
        if self._outbox is not None and previous is not None and previous != text:
            # A rotated password, token or signing secret reaches the events this reporter
            # already queued; dead letters stay dead until redelivered.
            try:
                resealed, unopened = yield self._in_thread(
                    self._outbox.reseal, self._host, text
                )
            except (OutboxError, ComponentError) as e:
                log.msg(f"{self.name}: queued events keep their configuration: {e}")
            else:
                if resealed or unopened:
                    log.msg(
                        f"{self.name}: the new configuration applies to {resealed} queued "
                        f"event(s) and dead letter(s)"
                        + (f"; {unopened} not sealed by this outbox's key" if unopened else "")
                    )
        if location is not None and not self._took_kept:
            self._took_kept = True
            yield self._take_kept()
        self._start_delivery()
        yield super().reconfigService(generators=self._generators(opts))

    @defer.inlineCallbacks
    def _take_kept(self) -> Generator[Any, Any, None]:
        """The events that waited in memory at the last stop go to the outbox first, in
        order, ahead of any queued since; their file goes once all are written."""
        path = self._kept_path()
        try:
            kept, unreadable = yield self._in_thread(_read_kept, path)
        except OSError as e:
            log.msg(f"{self.name}: the events kept at the last stop in {path} cannot be read: {e}")
            return
        if not kept and not unreadable:
            return
        self._unwritten.extendleft(reversed(kept))
        log.msg(
            f"{self.name}: {len(kept)} event(s) kept in {path} at the last stop are written "
            "to the outbox first"
            + (f"; {unreadable} unreadable line(s) skipped" if unreadable else "")
        )
        self._retry_soon()

    def _start_delivery(self) -> None:
        """The courier and the health checks of an open outbox, once."""
        if self._outbox is not None and self._courier is None:
            # Events left pending by a crash, a stop or another master go first: the
            # courier finds them in the outbox itself.
            self._courier = Courier(
                self._host, self._outbox, self._on_dead_letter, STOP_GRACE_SECONDS
            )
        if self._outbox is not None and self._health is None:
            self._health = task.LoopingCall(self._log_health)
            self._health.clock = self.master.reactor
            self._health.start(self.health_seconds, now=False).addErrback(
                log.err, f"{self.name}: outbox health checks stopped"
            )

    @defer.inlineCallbacks
    def _say_what_remains(self, old: Outbox) -> Generator[Any, Any, None]:
        """After `outbox=` changed: what the old outbox still holds, which this reporter no
        longer delivers."""
        try:
            pending, dead, _oldest, _open = yield self._in_thread(old.counts)
        except (OutboxError, ComponentError) as e:
            log.msg(f"{self.name}: the previous outbox {old.location} cannot be read: {e}")
            return
        if pending or dead:
            log.msg(
                f"{self.name}: the previous outbox {old.location} still holds {pending} "
                f"pending event(s) and {dead} dead letter(s), which this reporter no longer "
                f"delivers; `status-push deliver --outbox {old.location}` delivers them"
            )

    @defer.inlineCallbacks
    def _open_deferred(self) -> Generator[Any, Any, bool]:
        """Opens the outbox whose database did not answer before; whether it is open."""
        if self._outbox is not None:
            return True
        if self._opening is None:
            return False
        location, key = self._opening
        try:
            outbox = yield self._in_thread(Outbox, location, key)
        except OutboxError as e:
            # Once a minute while it is down (every time if it now refuses for good).
            now = self.master.reactor.seconds()
            if not isinstance(e, OutboxUnavailable) or now - self._said_closed >= self.health_seconds:
                self._said_closed = now
                log.msg(
                    f"{self.name}: outbox still cannot be opened ({len(self._unwritten)} "
                    f"event(s) wait in memory): {e}"
                )
            return False
        if self._opening != (location, key):  # reconfigured meanwhile
            return False
        self._outbox, self._opening = outbox, None
        log.msg(f"{self.name}: outbox {outbox.location} (its database answers again)")
        self._start_delivery()
        return True

    @defer.inlineCallbacks
    def sendMessage(self, reports: list[dict[str, Any]]) -> Generator[Any, Any, None]:
        for report in reports:
            for event, build, body in _events(report):
                # With the `wamp` message queue every master sees every master's builds:
                # each event is reported by the master that ran the build, once.
                if build.get("masterid", self.master.masterid) != self.master.masterid:
                    continue
                direct = self._outbox_at is None  # outbox=None
                if body is not None:
                    # On the reactor: a generator's build dict is the one every reporter
                    # of the master is handed, and another may be writing into it.
                    documents = formatted_documents(build, body)
                elif direct:
                    documents = None
                else:
                    # Serialising a build with its logs can be large: off the reactor.
                    documents = yield self._in_thread(
                        lambda b=build: dumps(event_documents(b))
                    )
                if direct:
                    self._push_direct(event, build, documents)
                    continue
                yield self._write_in_order(event, documents, build)

    @defer.inlineCallbacks
    def _write_in_order(
        self, event: str, documents: str, build: dict[str, Any]
    ) -> Generator[Any, Any, None]:
        """Durable before sendMessage returns; while the outbox refuses writes, events wait
        in memory, in order, and are written when it takes them again."""
        if self._unwritten or self._writing or self._outbox is None:
            self._keep_unwritten(event, documents, build)
            return
        try:
            yield self._in_thread(self._write, event, documents)
        except (ConfigError, PushFailure) as e:
            log.msg(f"{self._describe(event, build)} rejected by the component: {e}")
            return
        except OutboxFull as e:
            # Not one line per event: the health check says it once a minute, with counts.
            if self._full is None:
                log.msg(f"{self.name}: {e}; events wait in memory until it has room")
            self._full = e
            self._keep_unwritten(event, documents, build)
            return
        except (OutboxError, ComponentError) as e:
            log.msg(f"{self._describe(event, build)} kept in memory, outbox unavailable: {e}")
            self._keep_unwritten(event, documents, build)
            return
        self._full = None
        if self._courier is not None:
            self._courier.wake()

    def _keep_unwritten(self, event: str, documents: str, build: dict[str, Any]) -> None:
        if len(self._unwritten) >= UNWRITTEN_LIMIT:
            log.msg(
                f"{self._describe(event, build)} dropped: {UNWRITTEN_LIMIT} events already wait "
                "in memory for the outbox"
            )
            return
        self._unwritten.append((event, documents))
        self._retry_soon()

    def _retry_soon(self) -> None:
        """Starts the loop that opens the outbox and writes what waits in memory."""
        if self._retry_writes is None:
            self._retry_writes = task.LoopingCall(self._write_unwritten)
            self._retry_writes.clock = self.master.reactor
            self._retry_writes.start(RETRY_WRITE_SECONDS, now=False).addErrback(
                log.err, f"{self.name}: retrying unwritten events stopped"
            )

    @defer.inlineCallbacks
    def _write_unwritten(self) -> Generator[Any, Any, None]:
        """Writes the events kept in memory, oldest first, until the outbox refuses again."""
        if self._writing:
            return
        self._writing = True
        written = 0
        try:
            opened = yield self._open_deferred()
            while opened and self._unwritten:
                event, documents = self._unwritten[0]
                try:
                    yield self._in_thread(self._write, event, documents)
                except (ConfigError, PushFailure) as e:
                    log.msg(f"{self.name}: an unwritten {event} event is refused: {e}")
                except OutboxFull as e:
                    self._full = e
                    return
                except (OutboxError, ComponentError) as e:
                    if self._debug:
                        log.msg(f"{self.name}: outbox still unavailable: {e}")
                    return
                self._unwritten.popleft()
                self._full = None
                written += 1
        finally:
            self._writing = False
            if written:
                log.msg(
                    f"{self.name}: wrote {written} event(s) kept in memory to the outbox; "
                    f"{len(self._unwritten)} still waiting"
                )
                if self._courier is not None:
                    self._courier.wake()
            if not self._unwritten and self._outbox is not None:
                if self._took_kept:
                    # Every event kept at the last stop is in the outbox now.
                    with contextlib.suppress(FileNotFoundError):
                        self._kept_path().unlink()
                if self._retry_writes is not None:
                    if self._retry_writes.running:
                        self._retry_writes.stop()
                    self._retry_writes = None

    def _write(self, event: str, documents: str) -> tuple[int, str]:
        assert self._outbox is not None and self._config is not None
        return self._outbox.write(self._host, self._config, event, documents)

    def _on_dead_letter(self, entry: OutboxEntry) -> None:
        # Called on a host thread: log from the reactor.
        self.master.reactor.callFromThread(self._dead_letter, entry)

    @defer.inlineCallbacks
    def _log_health(self) -> Generator[Any, Any, None]:
        """Once a minute, while something is wrong: what waits, and which destinations fail."""
        outbox = self._outbox
        if outbox is None:
            return
        try:
            pending, dead, oldest, open_circuits = yield self._in_thread(outbox.counts)
            circuits = yield self._in_thread(outbox.circuits) if open_circuits else []
        except (OutboxError, ComponentError) as e:
            log.msg(f"{self.name}: cannot read the outbox: {e}")
            return
        if self._full is not None and self._unwritten:
            log.msg(
                f"{self.name}: outbox full: {self._full.pending} events pending at its "
                f"maxPendingEvents of {self._full.cap}; {len(self._unwritten)} event(s) wait "
                "in memory for room"
            )
        elif self._unwritten:
            log.msg(f"{self.name}: {len(self._unwritten)} event(s) wait in memory for the outbox")
        for destination, failures, waiting, last_error in circuits:
            log.msg(
                f"{self.name}: circuit open: {destination} ({failures} failed call(s) in a row, "
                f"{waiting} pending): {last_error or ''}"
            )
        if self._debug and (pending or dead):
            log.msg(f"{self.name}: outbox: {pending} pending, {dead} dead letter(s)")

    @defer.inlineCallbacks
    def _stop_courier(self) -> Generator[Any, Any, None]:
        courier, self._courier = self._courier, None
        if courier is not None:
            yield self._in_thread(courier.stop)

    def _dead_letter(self, entry: OutboxEntry) -> None:
        buildid = entry.build_key.rsplit("|", 1)[-1]
        log.msg(
            f"{self.name}: dead letter: {entry.event} of buildid {buildid} (seq {entry.seq}, "
            f"delivery {entry.delivery_id or '-'}, {entry.attempts} attempt(s)): "
            f"{entry.last_error}; list with `buildbot-status-push dead-letters --outbox "
            f"{self._outbox.location if self._outbox else '?'}`"
        )

    def _push_direct(
        self, event: str, build: dict[str, Any], documents: Optional[str] = None
    ) -> None:
        """Without an outbox: one call per event (the component's own retries), in order
        within a build."""
        key = str(build.get("buildid"))
        reporter = self._reporter
        assert reporter is not None
        if documents is None:
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
        # A clean stop leaves pending events in the outbox for the next start: calls in
        # flight get STOP_GRACE_SECONDS, the rest stays pending.
        began = self.master.reactor.seconds()
        self._stopping = True
        for loop in (self._health, self._retry_writes):
            if loop is not None and loop.running:
                loop.stop()
        self._health = self._retry_writes = None
        yield self._stop_courier()
        running = list(self._direct.values())
        if running:
            yield defer.DeferredList(running, consumeErrors=True)
        left = ""
        if self._outbox is not None:
            try:
                pending, dead, _oldest, _open = yield self._in_thread(self._outbox.counts)
                left = f"; {pending} event(s) pending, {dead} dead letter(s) in the outbox"
            except (OutboxError, ComponentError) as e:
                left = f"; the outbox cannot be read: {e}"
        if self._unwritten:
            path, waiting = self._kept_path(), list(self._unwritten)
            try:
                yield self._in_thread(_keep, path, waiting)
                left += (
                    f"; {len(waiting)} event(s) never written to it are kept in {path}, "
                    "written to it first at the next start"
                )
            except OSError as e:
                left += f"; {len(waiting)} event(s) never written to it are lost ({path}: {e})"
        log.msg(f"{self.name}: stopped in {self.master.reactor.seconds() - began:.1f}s{left}")
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.stop()


def _keep(path: Path, events: list[tuple[str, str]]) -> None:
    """Writes `events` to `path` whole or not at all (owner only: builds' documents)."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for event, documents in events:
            f.write(json.dumps({"event": event, "documents": documents}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def _read_kept(path: Path) -> tuple[list[tuple[str, str]], int]:
    """The events `_keep` wrote to `path`, in order, and how many lines it could not read."""
    kept: list[tuple[str, str]] = []
    unreadable = 0
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return kept, 0
    for line in lines:
        try:
            record = json.loads(line)
            kept.append((str(record["event"]), str(record["documents"])))
        except (ValueError, KeyError, TypeError):
            unreadable += 1
    return kept, unreadable
