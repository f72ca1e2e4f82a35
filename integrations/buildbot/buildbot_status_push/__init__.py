"""Buildbot reporter plugin that runs status-push.wasm (Buildbot's HttpStatusPush as a
WASI 0.2 component) with wasmtime-py. In master.cfg: `reporters.WasmStatusPush(...)`."""

from .component import ConfigError, Delivered, PushFailure, Skipped, default_wasm_path
from .reporter import WasmStatusPush

__all__ = [
    "ConfigError",
    "Delivered",
    "PushFailure",
    "Skipped",
    "WasmStatusPush",
    "default_wasm_path",
]
