"""``identity keys create|list|revoke``: manage API keys (needs an admin key).

    identity keys create --role ingest --label "pos import"
    identity keys list
    identity keys revoke 3f9c0a1b2c4d
    identity keys create --role admin --print-config   # no server: a key for the settings file
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from identity.api_keys import Role, digest_of, new_key
from identity.cli_support import client_command, print_message
from identity.client import IdentityClient

__all__ = ["add_keys_parser"]


def _create(client: IdentityClient, args: argparse.Namespace) -> None:
    print_message(client.create_key(*args.role, label=args.label))


def _print_config(args: argparse.Namespace) -> int:
    """A key made here, with the ``[[api_keys]]`` entry that provisions it: nothing is sent."""
    roles = [Role.parse(r).value for r in args.role]
    key_id, secret, whole = new_key()
    print(f"# key (give it to its user; it is not stored anywhere): {whole}")
    print("[[api_keys]]")
    print(f'id = "{key_id}"')
    print(f"roles = {json.dumps(roles)}")
    print(f'sha256 = "{digest_of(secret).hex()}"')
    if args.label:
        print(f"label = {json.dumps(args.label)}")
    return 0


def add_keys_parser(commands: Any) -> None:
    keys = commands.add_parser("keys", help="manage API keys (admin)", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = keys.add_subparsers(dest="keys_command", required=True)

    create = client_command(sub, "create", "issue a key; its secret is printed once", _create)
    create.add_argument("--role", action="append", required=True,
                        choices=[r.value for r in Role], help="repeat for several roles")
    create.add_argument("--label", default="", help="who or what uses the key")
    create.add_argument("--print-config", action="store_true",
                        help="make the key here and print its settings-file entry instead")
    call = create.get_default("run")
    create.set_defaults(run=lambda args: _print_config(args) if args.print_config else call(args))

    client_command(sub, "list", "every key, never a secret",
                   lambda client, _args: print_message(client.list_keys()))
    revoke = client_command(sub, "revoke", "calls with the key fail from now on",
                            lambda client, args: print_message(client.revoke_key(args.key_id)))
    revoke.add_argument("key_id", help="the part after idk_, as in `identity keys list`")
