"""``identity segment ...``: segments from JSON files, through the same client calls.

    identity segment count tv.json --as-of 2026-06-15T12:00:00+00:00
    identity segment export tv.json --channel email > members.jsonl
    identity segment save tv-viewers tv.json --description "viewed TVs in 30 days"
    identity segment count --name tv-viewers
    identity segment explain P42 --name tv-viewers
    identity segment list | get NAME | delete NAME
    identity segment cohorts [--as-of ...]
    identity segment tag email:a@example.com vip --value gold

A file holds the JSON form of ``identity.v1.Condition``, for example
``{"all": [{"event": {"filter": {"type": "view", "category": "Electronics/TV"},
"window": {"from_days_ago": 30, "to_days_ago": 0}}}]}``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any


from identity.cli_support import client_command, print_message
from identity.client import IdentityClient

__all__ = ["add_segment_parser"]


def _tree(args: argparse.Namespace) -> dict | None:
    return json.loads(Path(args.file).read_text()) if getattr(args, "file", None) else None


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _count(client: IdentityClient, args: argparse.Namespace) -> None:
    print_message(client.count_segment(_tree(args), name=args.name or "", as_of=_when(args.as_of)))


def _export(client: IdentityClient, args: argparse.Namespace) -> None:
    for member in client.export_segment(_tree(args), name=args.name or "",
                                        as_of=_when(args.as_of), channel=args.channel or 0,
                                        reachable_only=args.reachable_only):
        print(json.dumps({"person_id": member.person_id, "address": member.address}))


def _save(client: IdentityClient, args: argparse.Namespace) -> None:
    print_message(client.save_segment(args.segment, _tree(args), args.description))


def _explain(client: IdentityClient, args: argparse.Namespace) -> None:
    print_message(client.explain_membership(args.person_id, _tree(args), name=args.name or "",
                                    as_of=_when(args.as_of)))


def _cohorts(client: IdentityClient, args: argparse.Namespace) -> None:
    print_message(client.cohort_matrix(as_of=_when(args.as_of)))


def _tag(client: IdentityClient, args: argparse.Namespace) -> None:
    print_message(client.set_tag(args.identifier, args.tag, args.value, clear=args.clear))


def add_segment_parser(sub: Any) -> None:
    """Add ``identity segment`` with its subcommands to the top-level ``sub`` parsers."""
    segment = sub.add_parser("segment", help="count, export, save and explain segments",
                             description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = segment.add_subparsers(dest="segment_command", required=True)

    def command(name: str, help_text: str,
                run: Callable[[IdentityClient, argparse.Namespace], None]) -> argparse.ArgumentParser:
        return client_command(commands, name, help_text, run)

    def target(p: argparse.ArgumentParser) -> None:
        p.add_argument("file", nargs="?", help="JSON file with the condition tree")
        p.add_argument("--name", help="a saved segment instead of a file")
        p.add_argument("--as-of", help="ISO 8601 time the segment is evaluated at [now]")

    target(command("count", "count members (example: identity segment count tv.json)", _count))
    export = command("export", "print members as JSON lines "
                               "(example: identity segment export tv.json --channel email)",
                     _export)
    target(export)
    export.add_argument("--channel", help="identifier kind to print as the address (email...)")
    export.add_argument("--reachable-only", action="store_true",
                        help="leave out members without that kind")
    save = command("save", "save a tree under a name "
                           "(example: identity segment save tv-viewers tv.json)", _save)
    save.add_argument("segment", help="the name")
    save.add_argument("file", help="JSON file with the condition tree")
    save.add_argument("--description", default="")
    get = command("get", "show a saved segment", lambda c, a: print_message(c.get_segment(a.segment)))
    get.add_argument("segment")
    command("list", "list saved segments", lambda c, a: print_message(c.list_segments()))
    delete = command("delete", "delete a saved segment",
                     lambda c, a: print_message(c.delete_segment(a.segment)))
    delete.add_argument("segment")
    explain = command("explain", "why a person is (not) a member "
                                 "(example: identity segment explain P42 --name tv-viewers)",
                      _explain)
    explain.add_argument("person_id")
    target(explain)
    cohorts = command("cohorts", "persons per RF cohort cell", _cohorts)
    cohorts.add_argument("--as-of", help="ISO 8601 time [now]")
    tag = command("tag", "set a behaviour tag (example: identity segment tag "
                         "email:a@example.com vip --value gold)", _tag)
    tag.add_argument("identifier", metavar="KIND:VALUE")
    tag.add_argument("tag")
    tag.add_argument("--value", default="")
    tag.add_argument("--clear", action="store_true", help="remove the tag instead")
