"""`buildbot-status-push`: an operator's view of a reporter's outbox on a master installed
from the wheel (no Rust, no `status-push` CLI): list dead letters and pending events, and
make dead letters pending again for the reporter's courier to deliver.

    buildbot-status-push dead-letters --outbox /opt/buildbot/master/status-push-wasm.sqlite
    buildbot-status-push redeliver --outbox postgresql://… --outbox-key-file KEY --id sp_…

The output and flags are `status-push dead-letters` / `redeliver`'s.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from .host import OUTBOX_KEY_FILE_ENV, Outbox
from .results import OutboxEntry, OutboxError

HEADER = "seq\tevent\tbuild\tdelivery_id\tattempts\tqueued_at\treason"


def _line(e: OutboxEntry) -> str:
    return "\t".join(
        str(v)
        for v in (
            e.seq,
            e.event.capitalize(),  # as the CLI prints it: Started, Finished
            e.build_key,
            e.delivery_id,
            e.attempts,
            e.created_at,
            e.last_error or "",
        )
    )


def _open(args: argparse.Namespace) -> Outbox:
    key: Optional[str] = None
    if args.outbox_key_file:
        with open(args.outbox_key_file, encoding="utf-8") as f:
            key = f.read()
    return Outbox(args.outbox, key)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="buildbot-status-push", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("dead-letters", "list dead letters, oldest first"),
        ("pending", "list pending events, in delivery order"),
        ("redeliver", "make dead letters pending again"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--outbox", required=True, metavar="FILE|URL")
        sub.add_argument(
            "--outbox-key-file",
            metavar="PATH",
            default=os.environ.get(OUTBOX_KEY_FILE_ENV),
            help=f"the outbox key file (default: ${OUTBOX_KEY_FILE_ENV}; for a SQLite outbox, "
            "FILE.key beside it)",
        )
        if name == "redeliver":
            which = sub.add_mutually_exclusive_group(required=True)
            which.add_argument("--id", help="a dead letter's seq or delivery id")
            which.add_argument("--all", action="store_true", help="every dead letter")
            sub.add_argument(
                "--force",
                action="store_true",
                help="send a superseded dead letter anyway (it would arrive out of order)",
            )
    args = parser.parse_args(argv)
    try:
        outbox = _open(args)
        if args.command in ("dead-letters", "pending"):
            entries = outbox.dead_letters() if args.command == "dead-letters" else outbox.pending()
            print(HEADER)
            for entry in entries:
                print(_line(entry))
            return 0
        if args.all:
            revived = outbox.redeliver(force=args.force)
        elif args.id.isdigit():
            revived = outbox.redeliver(int(args.id), force=args.force)
        else:
            revived = outbox.redeliver(delivery_id=args.id, force=args.force)
        print(f"pending again: {revived} (the reporter's courier delivers them)")
        return 0
    except (OutboxError, OSError) as e:
        print(f"buildbot-status-push: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
