"""``identity audit ...``: the admins' tools on the command line, over the AuditService RPCs.

    identity audit explain email:a@example.com device_id:tablet-7
    identity audit log --since 2026-01-01 --outcome refused_conflict --json
    identity audit report --max-size 30            (table; --json for scripts)
    identity audit picture email:a@example.com --out person.png
    identity audit split --identifier phone:+442079460000 --actor ann --reason "call centre"
    identity audit block phone:+442079460000 --apply --actor ann --reason "call centre"
    identity audit forget --person-id C-1001 --actor ann --reason "erasure request 2026-17"
    identity audit check --data var            (offline: exit code 1 when broken)

Every command but ``check`` calls the server; none touches LMDB. Changes print one
line per person they committed; Ctrl-C stops a bulk split between persons. ``check``
reads the data folder itself, read-only, so it also runs beside a live server.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any


from identity.cli_support import client_command, message_dict, print_message
from identity.client import IdentityClient
from identity.identifiers import Kind
from identity.linklog import Outcome
from identity.picture import render
from identity.progress import ProgressBar

__all__ = ["add_audit_parser"]


def _ident(message: Any) -> str:
    return f"{Kind(message.kind).label}:{message.value}"


def _when(ms_message: Any) -> str:
    return datetime.fromtimestamp(ms_message.seconds).isoformat(sep=" ")


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def _person(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "identifier", None):
        return {"who": args.identifier}
    if getattr(args, "person_id", None):
        return {"person_id": args.person_id}
    raise SystemExit("give an identifier (kind:value) or --person-id")


def _explain(client: IdentityClient, args: argparse.Namespace) -> None:
    reply = client.explain(args.a, args.b)
    if args.json:
        print_message(reply)
    elif not reply.same_person:
        print(f"not one person: {args.a} is {reply.person_id}, {args.b} is {reply.other_person_id}")
    else:
        print(f"one person: {reply.person_id}")
        _table([[_ident(s.left), _ident(s.right), str(s.link.link_seq), s.link.source,
                 _when(s.link.observed_at), s.link.request_id] for s in reply.steps],
               ["from", "to", "link", "source", "observed", "request id"])


def _log(client: IdentityClient, args: argparse.Namespace) -> None:
    since = datetime.fromisoformat(args.since) if args.since else None
    outcomes = [int(Outcome[o.upper()]) for o in args.outcome]
    for batch in client.merge_log(since=since, sources=args.source, outcomes=outcomes,
                                  blocked_only=args.blocked, include_actions=args.actions):
        for item in batch.links:
            if args.json:
                print(json.dumps(message_dict(item), ensure_ascii=False))
            else:
                ids = " ".join(_ident(i) for i in item.identifiers)
                cut = f" [removed by action {item.removed_by_action}]" if item.removed_by_action else ""
                print(f"{item.link.link_seq:>8} {_when(item.link.observed_at)} "
                      f"{Outcome(item.link.outcome).label:<16} {item.link.source:<12} {ids}"
                      f"{' (' + item.detail + ')' if item.detail else ''}{cut}")
        for action in batch.actions:
            if args.json:
                print(json.dumps(message_dict(action), ensure_ascii=False))
            else:
                print(f"action {action.action_seq}: {_when(action.at)} {action.actor} "
                      f"{action.reason!r} {' '.join(action.person_ids)} {action.note}")


def _report(client: IdentityClient, args: argparse.Namespace) -> None:
    thresholds = {k: v for k, v in (("max_size", args.max_size), ("min_degree", args.min_degree),
                                    ("degree_factor", args.degree_factor),
                                    ("bridge_min_side", args.bridge_min_side),
                                    ("limit", args.limit)) if v}
    findings: list[Any] = []
    with ProgressBar() as bar:
        for message in client.suspicious_report(**thresholds):
            if message.finished:
                findings = list(message.findings)
            else:
                bar.update(message.progress.stage, message.progress.done, message.progress.total)
    if args.json:
        print(json.dumps([message_dict(f) for f in findings], indent=2, ensure_ascii=False))
        return
    from identity.report import FindingKind

    _table([[f"{f.score:.1f}", FindingKind(f.kind).label, f.person_id, f.detail,
             " ".join(str(s) for s in f.link_seqs[:5])] for f in findings],
           ["score", "finding", "person", "evidence", "links"])


def _picture(client: IdentityClient, args: argparse.Namespace) -> None:
    graph = client.person_graph(**_person(args))
    nodes = [(n.node, Kind(n.identifier.kind).label, n.identifier.value) for n in graph.nodes]
    edges = [(e.left, e.right, e.source) for e in graph.edges]
    print(render(args.out, f"person {graph.person_id}", nodes, edges))


def _print_split(reply: Any) -> None:
    pieces = ", ".join(f"{p.person_id} ({p.identifiers})" for p in reply.pieces)
    print(f"action {reply.action_seq}: {reply.person_id_before} -> {pieces}")


def _split(client: IdentityClient, args: argparse.Namespace) -> None:
    kwargs: dict[str, Any] = {"actor": args.actor, "reason": args.reason}
    if args.link:
        kwargs["link_seq"] = args.link
    elif args.identifier:
        kwargs["identifier_"] = args.identifier
    elif args.source:
        kwargs["source"] = args.source
        if args.person or args.person_id:
            kwargs.update(person=args.person, person_id=args.person_id or "")
    else:
        raise SystemExit("give --link, --identifier or --source")
    stream = client.split(**kwargs)
    try:
        with ProgressBar() as bar:
            for reply in stream:
                bar.update("split", reply.done, reply.total)
                if not bar.enabled or reply.pieces and len(reply.pieces) > 1:
                    _print_split(reply)
    except KeyboardInterrupt:
        stream.cancel()  # persons already split stay split: each was its own transaction
        print("interrupted: the persons listed above were split, the rest untouched",
              file=sys.stderr)


def _block(client: IdentityClient, args: argparse.Namespace) -> None:
    reply = client.block(args.value, actor=args.actor, reason=args.reason, apply=args.apply)
    print(f"action {reply.action_seq}: blocked {args.value}")
    if reply.HasField("split"):
        _print_split(reply.split)


def _forget(client: IdentityClient, args: argparse.Namespace) -> None:
    reply = client.forget(**_person(args), actor=args.actor, reason=args.reason)
    print(f"action {reply.action_seq}: erased {reply.identifiers} identifiers, "
          f"{reply.links} links, {reply.events} events")


def _check(args: argparse.Namespace) -> int:
    """Check the identity graph's invariants in a data folder, read-only (also beside a live
    server); list what is broken and exit with 1, or print ok and exit with 0."""
    from identity.integrity import check
    from identity.store import read_only

    try:
        with read_only(args.data) as tx:
            problems = check(tx, limit=args.limit)
            counts = {name: tx.count(name) for name in ("nodes", "persons", "links")}
    except (OSError, KeyError) as exc:
        print(f"error: cannot read {args.data}: {exc}", file=sys.stderr)
        return 2
    summary = ", ".join(f"{n} {name}" for name, n in counts.items())
    if not problems:
        print(f"ok: no problems in {args.data} ({summary})")
        return 0
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problems in {args.data} ({summary})", file=sys.stderr)
    return 1


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def _who(p: argparse.ArgumentParser) -> None:
    p.add_argument("--actor", default=_user(), help="who asks (logged) [your login]")
    p.add_argument("--reason", required=True, help="why (logged)")


def add_audit_parser(sub: Any) -> None:
    """Add ``identity audit`` with its subcommands to the top-level ``sub`` parsers."""
    audit = sub.add_parser("audit", help="explain, report, split, block, forget (admins)",
                           description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = audit.add_subparsers(dest="audit_command", required=True)

    def command(name: str, help_text: str,
                run: Callable[[IdentityClient, argparse.Namespace], None]) -> argparse.ArgumentParser:
        return client_command(commands, name, help_text, run)

    p = command("explain", "why two identifiers are one person (example: identity audit "
                           "explain email:a@example.com phone:+447700900123)", _explain)
    p.add_argument("a", metavar="KIND:VALUE")
    p.add_argument("b", metavar="KIND:VALUE")
    p.add_argument("--json", action="store_true", help="JSON for scripts")

    p = command("log", "links and admin actions since a time (example: identity audit log "
                       "--since 2026-01-01 --outcome merged)", _log)
    p.add_argument("--since", help="ISO 8601 time [the beginning]")
    p.add_argument("--source", action="append", default=[], help="only this source (repeatable)")
    p.add_argument("--outcome", action="append", default=[],
                   choices=[o.label for o in Outcome], help="only this outcome (repeatable)")
    p.add_argument("--blocked", action="store_true", help="only links with blocklisted values")
    p.add_argument("--actions", action="store_true", help="also splits, blocks and forgets")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = command("report", "persons that look glued by junk evidence (example: identity audit "
                          "report --json)", _report)
    p.add_argument("--max-size", type=int, help="flag persons with more identifiers [50]")
    p.add_argument("--min-degree", type=int, help="flag identifiers linked to this many [5]")
    p.add_argument("--degree-factor", type=float, help="... and this many times the median [4]")
    p.add_argument("--bridge-min-side", type=int, help="flag bridges leaving this many a side [2]")
    p.add_argument("--limit", type=int, help="at most this many findings [1000]")
    p.add_argument("--json", action="store_true", help="JSON for scripts")

    p = command("picture", "draw one person's identity graph (example: identity audit picture "
                           "email:a@example.com --out person.svg)", _picture)
    p.add_argument("identifier", nargs="?", metavar="KIND:VALUE")
    p.add_argument("--person-id", help="the person by id instead")
    p.add_argument("--out", default="person.png", help="PNG or SVG file [person.png]")

    p = command("split", "remove evidence and split what it glued (example: identity audit split "
                         "--identifier phone:+442079460000 --reason 'call centre')", _split)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--link", type=int, help="remove this link (its seq in the log)")
    target.add_argument("--identifier", metavar="KIND:VALUE",
                        help="take this identifier out of every link so far")
    target.add_argument("--source", help="remove every link from this source")
    p.add_argument("--person", metavar="KIND:VALUE", help="with --source: only this person")
    p.add_argument("--person-id", help="with --source: only this person id")
    _who(p)

    p = command("block", "never merge through a junk value again (example: identity audit "
                         "block phone:+442079460000 --apply --reason 'call centre')", _block)
    p.add_argument("value", metavar="KIND:VALUE")
    p.add_argument("--apply", action="store_true", help="also split what it already glued")
    _who(p)

    p = command("forget", "erase a person on request (example: identity audit forget "
                          "--person-id C-1001 --reason 'erasure request 17')", _forget)
    p.add_argument("identifier", nargs="?", metavar="KIND:VALUE")
    p.add_argument("--person-id", help="the person by id instead")
    _who(p)

    p = commands.add_parser("check", help="check the graph's invariants in a data folder, "
                                          "read-only (example: identity audit check --data var)",
                            description=_check.__doc__)
    p.add_argument("--data", default="var", help="LMDB data folder [var]")
    p.add_argument("--limit", type=int, default=1000, help="list at most this many problems")
    p.set_defaults(run=_check)
