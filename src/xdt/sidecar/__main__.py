"""``python -m xdt.sidecar --config JSON``: run one sidecar until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import signal
import sys

from .._heap import keep_warm
from ..refs import KEYRING_ENV, KeyRing
from .server import Sidecar, SidecarConfig

_PR_SET_DUMPABLE = 4


async def _run(config: SidecarConfig, keyring: KeyRing) -> None:
    sidecar = Sidecar(config, keyring)
    await sidecar.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps(sidecar.ports()), flush=True)  # the handshake the instance manager reads
    try:
        await stop.wait()
    finally:
        await sidecar.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xdt.sidecar")
    parser.add_argument("--config", required=True, help="SidecarConfig as JSON")
    parser.add_argument(
        "--keyring-stdin", action="store_true", help="read the key ring from stdin (not the env)"
    )
    args = parser.parse_args(argv)
    # Not dumpable: other processes of the same user (the function's) cannot read this one's
    # memory or environment through /proc.
    ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0)
    keep_warm()
    if args.keyring_stdin:
        keyring = KeyRing.from_text(sys.stdin.read(), origin="stdin")
    else:
        keyring = KeyRing.from_env()
        os.environ.pop(KEYRING_ENV, None)  # nothing this process starts should inherit it
    asyncio.run(_run(SidecarConfig.from_json(args.config), keyring))
    return 0


sys.exit(main())
