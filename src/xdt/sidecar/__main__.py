"""``python -m xdt.sidecar --config JSON``: run one sidecar until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

from ..refs import KeyRing
from .server import Sidecar, SidecarConfig


async def _run(config: SidecarConfig) -> None:
    keyring = KeyRing.from_env()
    os.environ.pop("XDT_KEYRING", None)  # nothing this process starts should inherit it
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
    args = parser.parse_args(argv)
    asyncio.run(_run(SidecarConfig.from_json(args.config)))
    return 0


sys.exit(main())
