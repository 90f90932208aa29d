"""The ``identity`` command: run the server and talk to it.

    identity serve --data var --address 127.0.0.1:50051
    identity link customer_id:C-1 email:anna@example.com phone:+447700900123 --source web
    identity resolve email:anna@example.com
    identity resolve --person-id C-1
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime

import grpc

from identity.app import App
from identity.audit_cli import add_audit_parser
from identity.backup_cli import add_backup_parser
from identity.cli_support import client_command, print_message
from identity.client import IdentityClient
from identity.config import Settings
from identity.keys_cli import add_keys_parser
from identity.trigger_cli import add_trigger_parser
from identity.logs import LOG_FORMATS, configure as configure_logs
from identity.segment_cli import add_segment_parser

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    from identity.server import serve

    configure_logs(args.log_format)
    settings = Settings.load(args.config, address=args.address, data_dir=args.data,
                             map_size=args.map_size, phone_region=args.phone_region,
                             tls_cert=args.tls_cert, tls_key=args.tls_key,
                             tls_client_ca=args.tls_client_ca, insecure=args.insecure or None)
    serve(App.open(settings), settings.address, metrics_address=args.metrics_address)
    return 0


def _link(client: IdentityClient, args: argparse.Namespace) -> None:
    observed = datetime.fromisoformat(args.at) if args.at else None
    print_message(client.link(*args.identifiers, source=args.source, observed_at=observed,
                              request_id=args.request_id))


def _resolve(client: IdentityClient, args: argparse.Namespace) -> None:
    if args.person_id:
        print_message(client.resolve_person(args.person_id))
    elif args.identifier:
        print_message(client.resolve(args.identifier))
    else:
        raise SystemExit("give an identifier (kind:value) or --person-id")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="identity", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server (example: identity serve --data var)")
    serve.add_argument("--address", help="host:port to listen on [127.0.0.1:50051, $IDENTITY_ADDRESS]")
    serve.add_argument("--data", help="LMDB data folder [var, $IDENTITY_DATA_DIR]")
    serve.add_argument("--map-size", help="initial LMDB map size, e.g. 4GiB [1GiB; grows when full]")
    serve.add_argument("--phone-region", help="region for national phone numbers [US]")
    serve.add_argument("--config", help="TOML settings file (limits, blocklist, ...)")
    serve.add_argument("--tls-cert", help="server certificate chain (PEM): turns TLS on")
    serve.add_argument("--tls-key", help="the certificate's private key (PEM)")
    serve.add_argument("--tls-client-ca", help="CA bundle (PEM) clients' certificates must chain "
                                               "to: turns mutual TLS on")
    serve.add_argument("--insecure", action="store_true",
                       help="allow plaintext on a non-loopback address (TLS ends at a proxy)")
    serve.add_argument("--metrics-address", default=os.environ.get("IDENTITY_METRICS_ADDRESS"),
                       help="host:port for Prometheus to scrape /metrics, e.g. 127.0.0.1:9464 "
                            "[off; $IDENTITY_METRICS_ADDRESS]")
    serve.add_argument("--log-format", choices=LOG_FORMATS,
                       default=os.environ.get("IDENTITY_LOG_FORMAT", "text"),
                       help="log lines as text or one JSON object per line [text; "
                            "$IDENTITY_LOG_FORMAT]")
    serve.set_defaults(run=_serve)

    link = client_command(sub, "link", "link identifiers seen together (example: identity link "
                                       "customer_id:C-1 email:a@example.com)", _link)
    link.add_argument("identifiers", nargs="+", metavar="KIND:VALUE")
    link.add_argument("--source", default="cli", help="source system [cli]")
    link.add_argument("--at", help="when they were seen, ISO 8601 [now]")
    link.add_argument("--request-id", default="", help="your id for this request")

    resolve = client_command(sub, "resolve", "who is this identifier (example: identity "
                                             "resolve email:a@example.com)", _resolve)
    resolve.add_argument("identifier", nargs="?", metavar="KIND:VALUE")
    resolve.add_argument("--person-id", help="resolve a person id instead (current or retired)")
    client_command(sub, "stats", "what the server holds: persons, identifiers, links, events, "
                                 "LMDB sizes, uptime (example: identity stats)",
                   lambda client, _args: print_message(client.stats()))
    add_audit_parser(sub)
    add_keys_parser(sub)
    add_trigger_parser(sub)
    add_segment_parser(sub)
    add_backup_parser(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
