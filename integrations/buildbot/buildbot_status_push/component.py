"""Runs status-push.wasm with wasmtime-py: the second runtime the tests check the same
.wasm on (the plugin itself runs on the native host, `_native`). Needs the `wasmtime`
package (`pip install buildbot-status-push[wasmtime-py]`).

Turns the component's WIT results into the types of `results.py`.

Nothing here knows about Buildbot or Twisted: it is the host side of the component's
contract (`wit/world.wit`), usable from any Python program.

Threading: a wasmtime `Store` (and everything instantiated in it) must only ever be used
from one thread. `ComponentHost` enforces this by remembering the thread that created it.
The compiled `Component` and its `Engine` are shareable, so they are compiled once per
process and cached.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Optional, Union

from wasmtime import Engine, Store, WasiConfig, WasmtimeError
from wasmtime.component import Component, Func, Linker, Record, Variant

from .host import default_wasm_path
from .results import ConfigError, Delivered, Outcome, PushFailure, Skipped

__all__ = ["ComponentHost", "default_wasm_path", "ConfigError", "Delivered", "Outcome", "PushFailure", "Skipped"]

REPORTER = "status-push:reporter/reporter@0.1.0"
DOCUMENTS = "status-push:reporter/documents@0.1.0"

class ComponentLoadError(Exception):
    """The .wasm could not be read, compiled or instantiated."""


class Trapped(Exception):
    """The component trapped (a bug in it, or a host limit); the instance is discarded."""


def _field(record: Record, name: str) -> Any:
    # wasmtime-py names record attributes with the WIT (kebab-case) names.
    return getattr(record, name)


def _push_error_detail(error: Variant) -> str:
    payload = error.payload
    if payload is None:
        return ""
    if isinstance(payload, str):
        return payload
    if error.tag == "http-status":
        retry_after = _field(payload, "retry-after")
        status = f"HTTP {_field(payload, 'status')}"
        return status if retry_after is None else f"{status}, Retry-After: {retry_after}"
    if error.tag == "invalid-input":
        return f"{payload.key}: {payload.message}"
    if error.tag == "format":
        return f"{payload.message} at line {payload.line}, column {payload.column}"
    return repr(vars(payload))


_compiled: dict[tuple[str, int], tuple[Engine, Component]] = {}
_compile_lock = threading.Lock()


def _compile(path: Path) -> tuple[Engine, Component]:
    # Compiling ~1 MB of wasm takes about a second: do it once per process and file version.
    try:
        key = (str(path.resolve()), path.stat().st_mtime_ns)
    except OSError as e:
        raise ComponentLoadError(f"cannot read {path}: {e}") from e
    with _compile_lock:
        hit = _compiled.get(key)
        if hit is None:
            engine = Engine()
            try:
                hit = (engine, Component.from_file(engine, str(path)))
            except WasmtimeError as e:
                raise ComponentLoadError(f"cannot compile {path}: {e}") from e
            _compiled[key] = hit
        return hit


class ComponentHost:
    """One instance of the component in its own Store. Use it from one thread only."""

    def __init__(
        self, wasm_path: Union[str, Path], stderr: Optional[Callable[[bytes], None]] = None
    ):
        self._thread = threading.get_ident()
        engine, component = _compile(Path(wasm_path))
        linker = Linker(engine)
        # The component imports only wasi:http/proxy's pieces; add_wasip2 supplies
        # wasi:io, clocks, random and cli/stderr, add_wasi_http the outgoing handler.
        linker.add_wasip2()
        linker.add_wasi_http()
        self._store = Store(engine)
        wasi = WasiConfig()
        if stderr is not None:
            wasi.stderr_custom = stderr
        self._store.set_wasi(wasi)
        self._store.set_wasi_http()
        try:
            instance = linker.instantiate(self._store, component)
        except WasmtimeError as e:
            raise ComponentLoadError(f"cannot instantiate {wasm_path}: {e}") from e

        def export(interface: str, name: str) -> Func:
            iface = instance.get_export_index(self._store, interface)
            idx = None if iface is None else instance.get_export_index(self._store, name, iface)
            func = None if idx is None else instance.get_func(self._store, idx)
            if func is None:
                raise ComponentLoadError(f"{wasm_path} does not export {interface}#{name}")
            return func

        self._parse_config = export(DOCUMENTS, "parse-config")
        self._parse_event = export(DOCUMENTS, "parse-event")
        self._configure = export(REPORTER, "configure")
        self._started = export(REPORTER, "on-build-started")
        self._finished = export(REPORTER, "on-build-finished")

    def _call(self, func: Func, *args: Any) -> Any:
        if threading.get_ident() != self._thread:
            raise RuntimeError("a wasmtime Store must be used from the thread that created it")
        try:
            return func(self._store, *args)
        except WasmtimeError as e:
            raise Trapped(str(e)) from e

    def configure_json(self, config_json: str) -> None:
        """`parse-config` then `configure`; raises ConfigError naming the option."""
        # result<config, input-error>: both arms are records, so wasmtime-py tags them.
        parsed = self._call(self._parse_config, config_json)
        if parsed.tag == "err":
            raise ConfigError(parsed.payload.key, parsed.payload.message)
        # result<_, input-error>: untagged by wasmtime-py, `None` is ok.
        err = self._call(self._configure, parsed.payload)
        if err is not None:
            raise ConfigError(err.key, err.message)

    def report(self, event: str, documents_json: str) -> Outcome:
        """`parse-event` then `on-build-started`/`-finished`; raises ConfigError or PushFailure."""
        parsed = self._call(self._parse_event, documents_json)
        if parsed.tag == "err":
            raise ConfigError(parsed.payload.key, parsed.payload.message)
        func = self._started if event == "started" else self._finished
        result = self._call(func, parsed.payload)
        if result.tag == "err":
            failure = result.payload
            error: Variant = failure.error
            raise PushFailure(
                kind=error.tag,
                detail=_push_error_detail(error),
                retryable=failure.retryable,
                attempts=failure.attempts,
                delivery_id=_field(failure, "delivery-id"),
            )
        outcome = result.payload
        # `outcome` is delivered(record) | skipped(enum): disjoint Python types, so
        # wasmtime-py hands back the payload itself without the case name.
        if isinstance(outcome, str):
            return Skipped(outcome)
        return Delivered(outcome.status, outcome.attempts, _field(outcome, "delivery-id"))
