"""Buildbot reporter plugin that runs status-push.wasm (Buildbot's HttpStatusPush as a
WASI 0.2 component) on the status-push host: sandboxed, with TLS options and a durable
outbox. In master.cfg: `reporters.WasmStatusPush(...)`."""

from .host import Host, Outbox, default_wasm_path
from .reporter import WasmStatusPush
from .results import (
    ComponentError,
    ConfigError,
    Delivered,
    DeliverySummary,
    OutboxEntry,
    OutboxError,
    OutboxFull,
    OutboxUnavailable,
    PushFailure,
    Skipped,
)

__all__ = [
    "ComponentError",
    "ConfigError",
    "Delivered",
    "DeliverySummary",
    "Host",
    "Outbox",
    "OutboxEntry",
    "OutboxError",
    "OutboxFull",
    "OutboxUnavailable",
    "PushFailure",
    "Skipped",
    "WasmStatusPush",
    "default_wasm_path",
]
