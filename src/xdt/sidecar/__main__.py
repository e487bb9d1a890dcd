"""``python -m xdt.sidecar --config JSON``: run one sidecar until SIGTERM or SIGINT.

Secrets never go on the command line (``/proc/<pid>/cmdline`` is readable by every local user)
nor, with ``--secrets-stdin``, in the environment (``/proc/<pid>/environ`` keeps a process's
original environment for its whole life): the platform writes them as one JSON object on stdin,
``{"keyring": TEXT, "redis_url": URL-with-password-or-null}``, and closes it.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import json
import os
import signal
import sys

from .._core.refs import KEYRING_ENV, KeyRing
from .._util.heap import keep_warm
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
        "--secrets-stdin",
        action="store_true",
        help='read {"keyring": ..., "redis_url": ...} as JSON from stdin (not argv or the env)',
    )
    args = parser.parse_args(argv)
    # Not dumpable: other processes of the same user (the function's, without isolation)
    # cannot read this one's memory or environment through /proc.
    ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0)
    os.umask(0o077)  # whatever we create (our sockets) is ours alone unless we say otherwise
    keep_warm()
    config = SidecarConfig.from_json(args.config)
    if args.secrets_stdin:
        secrets = json.loads(sys.stdin.read())
        keyring = KeyRing.from_text(secrets["keyring"], origin="stdin")
        config = dataclasses.replace(config, redis_url=secrets.get("redis_url"))
    else:
        keyring = KeyRing.from_env()
        os.environ.pop(KEYRING_ENV, None)  # nothing this process starts should inherit it
    asyncio.run(_run(config, keyring))
    return 0


sys.exit(main())
