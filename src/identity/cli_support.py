"""Pieces every ``identity`` subcommand shares: client subcommands and how replies print.

Replies print as JSON with field names as in the .proto, zero values included, so
"count": 0 reads as zero, not as missing.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from collections.abc import Callable
from typing import Any

from google.protobuf.json_format import MessageToDict

from identity.client import IdentityClient
from identity.transport import DEV_KEY_FILE

__all__ = ["DEFAULT_ADDRESS", "api_key_for", "client_command", "message_dict", "print_message"]

DEFAULT_ADDRESS = "127.0.0.1:50051"


def api_key_for(given: str | None) -> str:
    """The key given, else ``$IDENTITY_API_KEY``, else the local server's development key."""
    if given:
        return given
    if os.environ.get("IDENTITY_API_KEY"):
        return os.environ["IDENTITY_API_KEY"]
    dev_key = Path(os.environ.get("IDENTITY_DATA_DIR", "var")) / DEV_KEY_FILE
    return dev_key.read_text().strip() if dev_key.exists() else ""


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
    p.add_argument("--address", default=os.environ.get("IDENTITY_ADDRESS", DEFAULT_ADDRESS),
                   help=f"server [{DEFAULT_ADDRESS}, $IDENTITY_ADDRESS]")
    p.add_argument("--api-key", help="API key [$IDENTITY_API_KEY, else the development key "
                                     "in $IDENTITY_DATA_DIR or var/]")
    p.add_argument("--tls-ca", help="CA certificate (PEM) to check the server's: turns TLS on")
    p.add_argument("--tls-cert", help="client certificate (PEM) for mutual TLS")
    p.add_argument("--tls-key", help="client certificate's key (PEM) for mutual TLS")

    def call(args: argparse.Namespace) -> int:
        with IdentityClient(args.address, api_key=api_key_for(args.api_key), tls_ca=args.tls_ca,
                            tls_cert=args.tls_cert, tls_key=args.tls_key) as client:
            run(client, args)
        return 0

    p.set_defaults(run=call)
    return p
