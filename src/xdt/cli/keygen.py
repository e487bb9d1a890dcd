"""``xdt keygen``: make a platform key ring, or rotate one."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from .._core.refs import KeyRing
from ._options import CommandError

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    keygen = commands.add_parser(
        "keygen",
        help="make a platform key ring (or rotate one)",
        description="Print a new key ring, or write it to a file readable only by its owner. "
        "With --rotate, add a fresh primary key to an existing ring: references sealed under "
        "the older keys still open.",
    )
    keygen.add_argument("--out", type=Path, help="write the key ring here (mode 0600)")
    keygen.add_argument("--rotate", type=Path, metavar="FILE", help="rotate this key ring file")
    keygen.add_argument(
        "--force", action="store_true", help="with --out: replace a key ring already there"
    )
    keygen.set_defaults(run=run)


def run(args: argparse.Namespace, console: Console) -> int:
    if args.rotate is not None:
        ring = KeyRing.from_file(args.rotate).rotated()
        target: Path | None = args.out or args.rotate
    else:
        ring = KeyRing.generate()
        target = args.out
    if target is None:
        sys.stdout.write(ring.to_text())
        return 0
    if args.rotate is None and target.exists() and not args.force:
        # Replacing a ring makes every reference sealed under it unopenable: never silently.
        raise CommandError(
            f"{target} already exists: a new key ring there would make every reference sealed "
            "under the old one unopenable. Rotate it with --rotate (old references still "
            "open), or replace it with --force",
            code=2,
        )
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(ring.to_text())
    os.chmod(target, 0o600)
    console.print(
        f"wrote key ring to {target} (primary key {ring.primary_key_id}, "
        f"{len(ring.key_ids)} key(s)); keep it secret, give it only to the platform"
    )
    return 0
