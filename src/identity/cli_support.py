"""Pieces every ``identity`` subcommand shares: client subcommands and how replies print.

Replies print as JSON with field names as in the .proto, zero values included, so
"count": 0 reads as zero, not as missing.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from google.protobuf.json_format import MessageToDict

from identity.client import IdentityClient

__all__ = ["DEFAULT_ADDRESS", "client_command", "message_dict", "print_message"]

DEFAULT_ADDRESS = "127.0.0.1:50051"


def message_dict(message: Any) -> dict:
    return MessageToDict(message, preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True)


def print_message(message: Any) -> None:
    print(json.dumps(message_dict(message), indent=2, ensure_ascii=False))


def client_command(commands: Any, name: str, help_text: str,
                   run: Callable[[IdentityClient, argparse.Namespace], None]
                   ) -> argparse.ArgumentParser:
    """A subcommand that opens a client on ``--address`` and calls ``run(client, args)``."""
    p = commands.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--address", default=DEFAULT_ADDRESS, help=f"server [{DEFAULT_ADDRESS}]")

    def call(args: argparse.Namespace) -> int:
        with IdentityClient(args.address) as client:
            run(client, args)
        return 0

    p.set_defaults(run=call)
    return p
