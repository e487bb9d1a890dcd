"""Handlers for the platform tests (loaded by the xdt runtime from this folder)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request

import xdt


def upper(body: bytes) -> bytes:
    return body.upper()


async def first(body: bytes) -> bytes:
    return b"first(" + await xdt.invoke("second", body) + b")"


async def second(body: bytes) -> bytes:
    return b"second(" + await xdt.invoke("legacy", body) + b")"


def third(body: bytes) -> bytes:
    return b"third(" + body + b")"


def boom(body: bytes) -> bytes:
    raise ValueError(f"cannot handle {body.decode()!r}")


def crash(body: bytes) -> bytes:
    if body == b"crash":
        os._exit(17)  # the function process dies mid-request
    return b"alive:" + body


async def calls_missing(body: bytes) -> bytes:
    try:
        await xdt.invoke("no-such-function", body)
    except xdt.FunctionNotFound as exc:
        return f"FunctionNotFound: {exc}".encode()
    return b"no error"


async def slow(body: bytes) -> bytes:
    await asyncio.sleep(float(body or b"0.2"))
    return b"slept " + body


def sync_slow(body: bytes) -> bytes:
    time.sleep(float(body or b"0.2"))
    return b"slept " + body


def environment(body: bytes) -> bytes:
    with open(f"/proc/{os.getpid()}/environ", "rb") as raw:
        environ = raw.read()
    names = sorted(k for k in os.environ if k.startswith("XDT_"))
    return json.dumps({"xdt_names": names, "environ": environ.decode(errors="replace")}).encode()


def hold(body: bytes) -> bytes:
    """Put the body as an object in this instance's sidecar; answer its reference."""
    ttl = os.environ.get("HOLD_TTL", "30")
    request = urllib.request.Request(
        f"{os.environ['XDT_EGRESS']}/objects?pulls=1&ttl={ttl}", data=body, method="POST"
    )
    with urllib.request.urlopen(request) as answer:
        reference: bytes = answer.read()
        return reference


def hold_generated(body: bytes) -> bytes:
    """Put an object of ``int(body)`` bytes made here (bigger than any inline limit)."""
    return hold(b"g" * int(body))


def smuggle(body: bytes) -> bytes:
    """Try to smuggle a second request through the sidecar's egress with an encoded CR/LF."""
    import socket
    from urllib.parse import urlsplit

    egress = urlsplit(os.environ["XDT_EGRESS"])
    path = "/invoke/upper%20HTTP/1.1%0D%0AHost:%20x%0D%0AContent-Length:%205%0D%0A%0D%0AFIRST"
    with socket.create_connection((egress.hostname, egress.port), timeout=10) as raw:
        raw.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx".encode())
        answer = raw.recv(65536)
    return answer.split(b"\r\n", 1)[0]
