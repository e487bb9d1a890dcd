"""``python -m xdt.sidecar``: run one sidecar until SIGTERM or SIGINT.

Its :class:`~.config.Launch` — the configuration and the key ring — arrives as one JSON
document on stdin, which the platform then closes: nothing of it is on the command line or in
the environment, where other local users could read it. Once every face listens the sidecar
prints one JSON line with its ports (the handshake the instance manager reads).

``--knative``: the serving container of a Knative pod (:mod:`.knative`): its launch comes from
the pod's environment and the key ring's Secret, and SIGTERM drains before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys

from .._core.errors import ConfigError
from .._http.contract import current_request_id
from .._util.heap import keep_warm
from .._util.logs import RateLimitedLog, rate_limit_loop_errors, stamp_output
from .._util.process import raise_fd_limit
from .app import Sidecar
from .config import Launch
from .knative import GRACE_MARGIN, drained, launch_from_env, serving

_PR_SET_DUMPABLE = 4


async def _run(launch: Launch) -> None:
    loop = asyncio.get_running_loop()
    rate_limit_loop_errors(loop, RateLimitedLog())  # a flood must not become a log flood
    sidecar = Sidecar(launch.config, launch.keyring)
    await sidecar.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps(sidecar.ports()), flush=True)
    closing = False
    try:
        await stop.wait()
        knative = launch.config.knative
        if knative is not None:  # Knative's SIGTERM: drain first (the pod's grace period)
            ends = loop.time() + knative.grace - GRACE_MARGIN
            sidecar.ingress.drain()
            print(f"xdt sidecar: draining (at most {knative.grace:g} s)", file=sys.stderr)
            done = await drained(
                lambda: sidecar.ingress.open, lambda: sidecar.store.stats.objects, knative.grace
            )
            print(
                "xdt sidecar: drained" if done else "xdt sidecar: the grace period is over",
                file=sys.stderr, flush=True,
            )  # fmt: skip
            # Closing waits for handlers (one may still be reading a body): never past the
            # grace period, after which Kubernetes kills us anyway.
            closing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sidecar.close(), max(0.5, ends - loop.time()))
    finally:
        if not closing:
            await sidecar.close()


# Its payload threads (boto3's, asyncio.to_thread's) share two malloc arenas: see keep_warm.
SIDECAR_ARENAS = 2


def main() -> int:
    # Not dumpable: other processes of the same user (the function's, without isolation)
    # cannot read this one's memory or environment through /proc.
    ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0)
    os.umask(0o077)  # whatever we create (our sockets) is ours alone unless we say otherwise
    keep_warm(arenas=SIDECAR_ARENAS)
    raise_fd_limit()
    if sys.argv[1:] == ["--knative"]:
        try:
            launch = launch_from_env(os.environ)
        except ConfigError as exc:
            print(f"xdt sidecar: {exc}", file=sys.stderr)
            return 2
    elif sys.argv[1:]:
        print("usage: python -m xdt.sidecar [--knative]", file=sys.stderr)
        return 2
    else:
        launch = Launch.from_json(sys.stdin.read())
    # Its stderr is the instance log: stamped like the function's lines, named apart.
    stamp_output(f"{launch.config.instance}/sidecar", current_request_id, names=("stderr",))
    if launch.config.knative is not None:
        print(f"xdt sidecar: {serving(os.environ)}", file=sys.stderr, flush=True)
    asyncio.run(_run(launch))
    return 0


sys.exit(main())
