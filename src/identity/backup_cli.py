"""``identity backup`` and ``identity restore``: hot copies of a data folder, on the command line.

    identity backup backups/2026-05-01 --data var      (while the server serves var)
    identity restore backups/2026-05-01 --data var2    (then: identity serve --data var2)

Both read and write files only; neither calls the server. They print the backup's
manifest as JSON; a refusal prints why on stderr and exits with 1.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from identity.backup import BackupError, backup, restore
from identity.config import Settings

__all__ = ["add_backup_parser"]


def _data_dir(args: argparse.Namespace) -> str:
    return str(Settings.load(env=None, data_dir=args.data).data_dir)


def _backup(args: argparse.Namespace) -> int:
    """Copy a data folder into a new folder, safely while a server is serving it."""
    try:
        manifest = backup(_data_dir(args), args.dest)
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(manifest.to_json(), end="")
    return 0


def _restore(args: argparse.Namespace) -> int:
    """Put a backup into a data folder that no server has open (new or empty, or --force)."""
    try:
        manifest = restore(args.backup, _data_dir(args), force=args.force)
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(manifest.to_json(), end="")
    return 0


def add_backup_parser(commands: Any) -> None:
    data_help = "LMDB data folder [var, $IDENTITY_DATA_DIR]"
    p = commands.add_parser(
        "backup", help="hot copy of a data folder (example: identity backup backups/b1 --data var)",
        description=_backup.__doc__)
    p.add_argument("dest", metavar="DEST", help="new or empty folder for the copy and manifest")
    p.add_argument("--data", help=data_help)
    p.set_defaults(run=_backup)

    p = commands.add_parser(
        "restore", help="restore a backup into a data folder (example: identity restore "
                        "backups/b1 --data var2)", description=_restore.__doc__)
    p.add_argument("backup", metavar="BACKUP", help="a folder written by identity backup")
    p.add_argument("--data", help=data_help)
    p.add_argument("--force", action="store_true",
                   help="replace the data of a non-empty folder (never one a server has open)")
    p.set_defaults(run=_restore)
