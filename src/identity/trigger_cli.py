"""``identity trigger ...``: ask before sending, record sends, filter audiences, read rules.

    identity trigger check email:anna@example.com --trigger abandoned_cart --channel email \\
        --product K-1 --event-time 2026-06-03T08:00:00+00:00 [--reserve --key cart-42]
    identity trigger sent device_id:d-1 --channel push --trigger abandoned_cart --product K-1
    identity trigger audience --trigger price_drop --channel push --product K-5 \\
        [--segment tv-viewers] [ids.txt]           # one kind:value per line; - for stdin
    identity trigger rules | rule --trigger abandoned_cart [--campaign spring]
    identity trigger set-rule rule.json            # the JSON form of identity.v1.TriggerRule

Each reply prints as JSON; ``audience`` prints one line per recipient, then the summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from google.protobuf.json_format import ParseDict

from identity.cli_support import client_command, message_dict, print_message
from identity.client import IdentityClient, message_channel, trigger_kind
from identity.v1 import triggers_pb2

__all__ = ["add_trigger_parser"]

AUDIENCE_BATCH = 1000


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _check(client: IdentityClient, args: argparse.Namespace) -> None:
    print_message(client.check_trigger(
        args.identifier, args.trigger, args.channel, products=args.product,
        categories=args.category, campaign=args.campaign, now=_when(args.now),
        event_time=_when(args.event_time), reserve=args.reserve, idempotency_key=args.key))


def _sent(client: IdentityClient, args: argparse.Namespace) -> None:
    print_message(client.record_send(
        args.identifier, args.channel, trigger=args.trigger or 0, products=args.product,
        categories=args.category, campaign=args.campaign, sent_at=_when(args.at),
        idempotency_key=args.key, failed=args.failed))


def _identifier_batches(source: str | None):
    """Lines of ``kind:value`` from a file (or stdin), in batches; blank lines skipped."""
    if not source:
        return
    stream = sys.stdin if source == "-" else open(source, encoding="utf-8")
    with stream:
        batch: list[str] = []
        for line in stream:
            if line.strip():
                batch.append(line.strip())
            if len(batch) == AUDIENCE_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch


def _audience(client: IdentityClient, args: argparse.Namespace) -> None:
    settings = triggers_pb2.AudienceSettings(
        trigger=trigger_kind(args.trigger), channel=message_channel(args.channel),
        product_ids=args.product, categories=args.category, campaign=args.campaign,
        reserve=args.reserve, idempotency_key=args.key)
    for name, when in (("now", args.now), ("event_time", args.event_time)):
        if when:
            getattr(settings, name).FromDatetime(_when(when))
    for reply in client.filter_audience(settings, _identifier_batches(args.file),
                                        segments=args.segment):
        for recipient in reply.recipients:
            print(json.dumps(message_dict(recipient), ensure_ascii=False))
        if reply.HasField("summary"):
            print_message(reply.summary)


def _set_rule(client: IdentityClient, args: argparse.Namespace) -> None:
    rule = ParseDict(json.loads(Path(args.file).read_text()), triggers_pb2.TriggerRule())
    print_message(client.set_trigger_rule(rule))


def _subject(p: argparse.ArgumentParser) -> None:
    p.add_argument("--product", action="append", default=[], help="product id (repeatable)")
    p.add_argument("--category", action="append", default=[], help="category (repeatable)")
    p.add_argument("--campaign", default="", help="campaign name")
    p.add_argument("--key", default="", help="idempotency key")


def _asking(p: argparse.ArgumentParser, triggers: str) -> None:
    """What ``check`` and ``audience`` both ask about: the trigger, channel, times, subject."""
    p.add_argument("--trigger", required=True, help=triggers)
    p.add_argument("--channel", required=True, help="email, push or sms")
    p.add_argument("--now", help="decide as of this time, ISO 8601 [now]")
    p.add_argument("--event-time", help="when the triggering event happened, ISO 8601")
    p.add_argument("--reserve", action="store_true", help="on SEND, record the send too")
    _subject(p)


def add_trigger_parser(commands: Any) -> None:
    top = commands.add_parser("trigger", help="ask before sending; sends, audiences, rules",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="trigger_command", required=True)

    check = client_command(sub, "check", "SEND, SUPPRESS or DEFER, with every reason", _check)
    check.add_argument("identifier", metavar="KIND:VALUE")
    _asking(check, "e.g. abandoned_cart, price_drop")

    sent = client_command(sub, "sent", "record a message that went out (counts against caps)",
                          _sent)
    sent.add_argument("identifier", metavar="KIND:VALUE")
    sent.add_argument("--channel", required=True, help="email, push or sms")
    sent.add_argument("--trigger", help="the trigger kind it was for, if any")
    sent.add_argument("--at", help="when it was sent, ISO 8601 [now]")
    sent.add_argument("--failed", action="store_true", help="the send failed: release it")
    _subject(sent)

    audience = client_command(sub, "audience", "persons to message, deduplicated, every rule "
                                               "applied", _audience)
    audience.add_argument("file", nargs="?", help="identifiers, one kind:value a line (- stdin)")
    audience.add_argument("--segment", action="append", default=[], help="saved segment name")
    _asking(audience, "e.g. price_drop, reactivation")

    client_command(sub, "rules", "every trigger rule set by RPC or the settings file",
                   lambda client, _args: print_message(client.list_trigger_rules()))
    rule = client_command(sub, "rule", "the rule that applies to a trigger and campaign",
                          lambda client, args: print_message(
                              client.get_trigger_rule(args.trigger or 0, args.campaign)))
    rule.add_argument("--trigger", help="trigger kind [any]")
    rule.add_argument("--campaign", default="", help="campaign name")
    set_rule = client_command(sub, "set-rule", "set a rule from its JSON form (admin)",
                              _set_rule)
    set_rule.add_argument("file", help="JSON of identity.v1.TriggerRule")
