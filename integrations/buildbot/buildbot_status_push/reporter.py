"""`WasmStatusPush`: a Buildbot reporter that hands each build event to status-push.wasm."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Generator, Optional, Sequence, TypeVar

from buildbot import config, interfaces, util
from buildbot.reporters import utils
from buildbot.reporters.base import ReporterBase
from twisted.internet import defer
from twisted.python import failure, log
from zope.interface import implementer

from .component import (
    ComponentHost,
    ComponentLoadError,
    ConfigError,
    Delivered,
    Outcome,
    PushFailure,
    Skipped,
    Trapped,
    default_wasm_path,
)
from .documents import BUILD_FIELDS, config_json, dumps, event_documents

T = TypeVar("T")


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
    wasm_path: Optional[str] = None

    def component_options(self) -> dict[str, Any]:
        opts = asdict(self)
        del opts["wasm_path"]
        return opts

    def wants_previous_build(self) -> bool:
        # `change` and `problem` compare with prev_build, so the component needs it.
        modes = [self.mode] if isinstance(self.mode, str) else list(self.mode or [])
        return self.wantPreviousBuild or "change" in modes or "problem" in modes

    def wasm(self) -> Path:
        return Path(self.wasm_path) if self.wasm_path else default_wasm_path()


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


class _ComponentThread:
    """One thread that owns one ComponentHost: a wasmtime Store is not thread-safe, and a
    single FIFO thread also keeps every build's events in the order they happened."""

    def __init__(self, wasm: Path, name: str):
        from twisted.internet import reactor  # the one twistd installed, not a default

        self._reactor: Any = reactor
        self.wasm = wasm
        self._name = name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"wasm-{name}")
        self._host: Optional[ComponentHost] = None  # touched by the executor's thread only
        self._config: Optional[str] = None  # last accepted config, to rebuild after a trap

    def _stderr(self, data: bytes) -> None:
        # Called on the executor's thread while the component runs (`debug`).
        text = data.decode("utf-8", "replace").rstrip("\n")
        self._reactor.callFromThread(log.msg, f"{self._name} (component): {text}")

    def _run(self, fn: Callable[[ComponentHost], T]) -> T:
        if self._host is None:
            self._host = ComponentHost(self.wasm, stderr=self._stderr)
            if self._config is not None:
                self._host.configure_json(self._config)
        try:
            return fn(self._host)
        except Trapped:
            # A trapped instance cannot be entered again; the next call gets a fresh one.
            self._host = None
            raise

    def submit(self, fn: Callable[[ComponentHost], T]) -> "defer.Deferred[T]":
        d: defer.Deferred[T] = defer.Deferred()

        def done(fut: Future[T]) -> None:
            exc = fut.exception()
            if exc is None:
                self._reactor.callFromThread(d.callback, fut.result())
            else:
                err = failure.Failure(exc, type(exc), exc.__traceback__)
                self._reactor.callFromThread(d.errback, err)

        self._executor.submit(self._run, fn).add_done_callback(done)
        return d

    def configure(self, config_text: str) -> "defer.Deferred[None]":
        def apply(host: ComponentHost) -> None:
            host.configure_json(config_text)
            self._config = config_text

        return self.submit(apply)

    def close(self) -> "defer.Deferred[None]":
        def drop(_host: ComponentHost) -> None:
            self._host = None  # the Store is freed on the thread that used it

        d = self.submit(drop)
        d.addBoth(lambda _: self._executor.shutdown(wait=False))
        return d


class WasmStatusPush(ReporterBase):
    """Buildbot's HttpStatusPush, with the request built and sent by status-push.wasm."""

    name: Optional[str] = "WasmStatusPush"
    secrets: ClassVar[list[str]] = [
        "serverUrl",
        "user",
        "password",
        "auth",
        "headers",
        "signingSecret",
    ]

    def __init__(self, *args: Any, **kwargs: Any):
        self._thread: Optional[_ComponentThread] = None
        self._debug = False
        self._in_flight: set[defer.Deferred[None]] = set()
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
        # wasmtime-py's wasi:http gives the host no TLS settings: it always verifies against
        # the built-in web PKI roots. Refuse what it cannot honour rather than ignore it.
        if opts.caFile is not None:
            config.error("WasmStatusPush: caFile is not supported by the wasmtime-py host")
        if not opts.verify and isinstance(serverUrl, str) and serverUrl.startswith("https:"):
            config.error("WasmStatusPush: verify=False is not supported by the wasmtime-py host")
        # Validate with the component itself now, so that `buildbot checkconfig` names the
        # bad option. Secrets are not rendered yet: a stand-in takes their place.
        check = {k: _placeholder(v) for k, v in opts.component_options().items()}
        if interfaces.IRenderable.providedBy(serverUrl):
            check["serverUrl"] = "http://127.0.0.1/"
        try:
            ComponentHost(opts.wasm()).configure_json(config_json(check))
        except ComponentLoadError as e:
            config.error(f"WasmStatusPush: {e} (set wasm_path= or $STATUS_PUSH_WASM)")
        except ConfigError as e:
            config.error(f"WasmStatusPush: {e}")
        super().checkConfig(generators=[self._generator(opts)])

    @staticmethod
    def _generator(opts: Options) -> BuildEvents:
        return BuildEvents(opts.wantSteps, opts.wantLogs, opts.wants_previous_build())

    @defer.inlineCallbacks
    def reconfigService(self, serverUrl: Any = None, **kwargs: Any) -> Generator[Any, Any, None]:
        opts = self._options(serverUrl, kwargs)
        self._debug = bool(opts.debug)
        options = opts.component_options()
        if options["buildbotURL"] is None:
            options["buildbotURL"] = self.master.config.buildbotURL
        if self._thread is not None and self._thread.wasm != opts.wasm():
            yield self._drain_and_close()
        if self._thread is None:
            self._thread = _ComponentThread(opts.wasm(), self.name or "WasmStatusPush")
        try:
            yield self._thread.configure(config_json(options))
        except ConfigError as e:
            # Only reachable when a rendered secret is invalid: checkConfig saw the rest.
            raise ValueError(f"{self.name}: invalid configuration: {e}") from e
        yield super().reconfigService(generators=[self._generator(opts)])

    def sendMessage(self, reports: list[dict[str, Any]]) -> "defer.Deferred[None]":
        if self._thread is None:  # stopped: Buildbot stops the consumers first, so unlikely
            log.msg(f"{self.name}: stopped, dropping {len(reports)} event(s)")
            return defer.succeed(None)
        for report in reports:
            event: str = report["event"]
            build: dict[str, Any] = report["build"]

            def push(
                host: ComponentHost, event: str = event, build: dict[str, Any] = build
            ) -> Outcome:
                # Serialising a build with its logs can be large: keep it off the reactor.
                return host.report(event, dumps(event_documents(build)))

            done: defer.Deferred[None] = self._thread.submit(push).addCallbacks(
                self._reported,
                self._failed,
                callbackArgs=(event, build),
                errbackArgs=(event, build),
            )
            self._in_flight.add(done)
            done.addBoth(self._forget, done)
        # Return at once: the reactor and Buildbot's per-build event chain go on while the
        # component delivers (and retries) on its own thread.
        return defer.succeed(None)

    def _forget(self, _: None, done: "defer.Deferred[None]") -> None:
        self._in_flight.discard(done)

    def _describe(self, event: str, build: dict[str, Any]) -> str:
        builder = build.get("builder", {}).get("name", build["builderid"])
        number, buildid = build["number"], build["buildid"]
        return f"{self.name}: {event} of build {builder}#{number} (buildid {buildid})"

    def _reported(self, outcome: Outcome, event: str, build: dict[str, Any]) -> None:
        # Quiet on the common path, like HttpStatusPush; a delivery that needed retries is
        # worth a line, and `debug` tells everything.
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
        elif why.check(Trapped, ComponentLoadError):
            log.msg(f"{what} not delivered: component error: {why.value}")
        else:
            log.err(why, f"{what}: unexpected error")

    @defer.inlineCallbacks
    def _drain_and_close(self) -> Generator[Any, Any, None]:
        # Each pending event is bounded by the component's retry deadline.
        if self._in_flight:
            yield defer.DeferredList(list(self._in_flight))
        if self._thread is not None:
            thread, self._thread = self._thread, None
            yield thread.close()

    @defer.inlineCallbacks
    def stopService(self) -> Generator[Any, Any, None]:
        yield super().stopService()
        yield self._drain_and_close()
