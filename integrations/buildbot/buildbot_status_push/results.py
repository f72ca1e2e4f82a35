"""What the status-push host hands back to Python: outcomes, outbox records and errors.

The native host (`buildbot_status_push._native`) raises and returns these; the wasmtime-py
host (`component.py`) uses the same outcome and error types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union


@dataclass(frozen=True)
class Delivered:
    """`outcome.delivered`: the receiver answered 2xx."""

    status: int
    attempts: int
    delivery_id: str


@dataclass(frozen=True)
class Skipped:
    """`outcome.skipped`: the configuration filtered the event out; nothing was sent."""

    reason: str  # builder | tags | branch | scheduler | results


Outcome = Union[Delivered, Skipped]


@dataclass(frozen=True)
class ConfigError(Exception):
    """`input-error`: which option (seed spelling, or JSON path of an event field) and why."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


@dataclass(frozen=True)
class PushFailure(Exception):
    """`push-failure`: the event was not delivered.

    `kind` is the `push-error` case name (`unreachable`, `timeout`, `http-status`, `tls`,
    ...); `detail` is its payload rendered as text.
    """

    kind: str
    detail: str
    retryable: bool
    attempts: int
    delivery_id: str

    def __str__(self) -> str:
        what = f"{self.kind}: {self.detail}" if self.detail else self.kind
        how = "retryable" if self.retryable else "permanent"
        return f"{what} ({how}, {self.attempts} attempt(s), delivery {self.delivery_id or '-'})"


class ComponentError(Exception):
    """The component could not be loaded or instantiated, or it trapped (a bug in it, or a
    sandbox limit: memory, time)."""


class OutboxError(Exception):
    """The outbox file could not be opened, read or written, or has no such dead letter."""


class OutboxUnavailable(OutboxError):
    """The outbox's database is unreachable, restarting or busy: the same call may succeed
    later with nothing changed."""


class OutboxFull(OutboxError):
    """The outbox holds its `maxPendingEvents`: the event was not queued (the caller still
    has it)."""

    def __init__(self, message: str, pending: int, cap: int):
        super().__init__(message)
        self.pending = pending
        self.cap = cap


@dataclass(frozen=True)
class DeliverySummary:
    """One delivery run: events delivered (or skipped), made dead letters, still pending."""

    delivered: int
    dead: int
    pending: int


@dataclass(frozen=True)
class OutboxEntry:
    """A pending event or a dead letter, as `status-push dead-letters` lists it."""

    seq: int
    build_key: str  # buildbotURL|buildid: events with the same key are delivered in order
    event: str  # started | finished
    delivery_id: str
    created_at: int  # UNIX seconds
    attempts: int
    last_error: Optional[str]
