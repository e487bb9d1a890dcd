"""What function code imports: calls to other functions through the instance's own sidecar.

    import xdt

    async def handler(body: bytes) -> bytes:
        thumbnail = await xdt.invoke("resize", body)
        return thumbnail

The sidecar's egress address comes from ``$XDT_EGRESS``, which the platform sets in every
function process. A failed call raises the typed error the platform reported
(:class:`~xdt.FunctionNotFound`, :class:`~xdt.FunctionFailed`, :class:`~xdt.Overloaded`, …).
"""

from __future__ import annotations

import asyncio
import os
import weakref

import aiohttp

from .._errors import InstanceFailed, XdtError
from .._http import error_from_answer

__all__ = ["EGRESS_ENV", "aclose", "egress_url", "invoke"]

EGRESS_ENV = "XDT_EGRESS"

_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
    weakref.WeakKeyDictionary()
)


def egress_url() -> str:
    url = os.environ.get(EGRESS_ENV)
    if not url:
        raise XdtError(
            f"${EGRESS_ENV} is not set: xdt.invoke works inside a function run by the xdt "
            "platform (`xdt up`), whose sidecar sets it"
        )
    return url.rstrip("/")


async def invoke(function: str, data: bytes | bytearray | memoryview = b"") -> bytes:
    """Invoke ``function`` with ``data`` as its request body; its answer body."""
    url = f"{egress_url()}/invoke/{function}"
    try:
        async with _session().post(url, data=bytes(data)) as response:
            body = await response.read()
            if response.status >= 300:
                raise error_from_answer(response.status, response.headers, body, function=function)
            return body
    except aiohttp.ClientError as exc:
        raise InstanceFailed(
            f"this instance's sidecar is unreachable at {url}: {exc}", function=function
        ) from None


async def aclose() -> None:
    """Close this event loop's connection pool (optional; for tidy shutdowns and tests)."""
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.close()


def _session() -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
        )
        _sessions[loop] = session
    return session
