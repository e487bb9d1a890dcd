"""The same function code for every transfer mode (the pattern tests run it in all four).

Payloads are made from a seed, so a test can compute every expected answer itself.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

import xdt


def make(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def describe(data: bytes) -> str:
    return f"{len(data)}:{hashlib.sha256(data).hexdigest()[:16]}"


def digest(body: bytes) -> bytes:
    return describe(body).encode()


def produce(body: bytes) -> bytes:
    """A large answer: travels back by the function's mode."""
    order = json.loads(body)
    return make(order["size"], order["seed"])


async def one_to_one(body: bytes) -> bytes:
    order = json.loads(body)
    sent = await xdt.invoke("digest", make(order["size"], order["seed"]))
    produced = await xdt.invoke("produce", body)
    return json.dumps([sent.decode(), describe(produced)]).encode()


async def scatter(body: bytes) -> bytes:
    order = json.loads(body)
    payloads = [make(order["size"], order["seed"] + i) for i in range(order["n"])]
    return json.dumps([a.decode() for a in await xdt.scatter("digest", payloads)]).encode()


async def broadcast(body: bytes) -> bytes:
    order = json.loads(body)
    answers = await xdt.broadcast("digest", make(order["size"], order["seed"]), order["n"])
    return json.dumps([a.decode() for a in answers]).encode()


async def put_ref(body: bytes) -> bytes:
    """A producer for gather: stores its data and answers only the reference."""
    order = json.loads(body)
    return (await xdt.put(make(order["size"], order["seed"]))).encode()


async def consume_refs(body: bytes) -> bytes:
    return json.dumps([describe(d) for d in await xdt.gather(json.loads(body))]).encode()


async def gather(body: bytes) -> bytes:
    """Driver: N producers put, the references go to one consumer; the driver never holds
    the payloads, and says how many bytes it did hold."""
    order = json.loads(body)
    orders = [
        json.dumps({"size": order["size"], "seed": order["seed"] + i}).encode()
        for i in range(order["n"])
    ]
    references = [r.decode() for r in await xdt.scatter("put-ref", orders)]
    answer = await xdt.invoke("consume-refs", json.dumps(references).encode())
    held = sum(len(r) for r in references) + len(answer)
    return json.dumps({"result": json.loads(answer), "driver_held_bytes": held}).encode()


async def mapper(body: bytes) -> bytes:
    """Puts R partitions of its data; answers their references."""
    order = json.loads(body)
    data = make(order["size"], order["seed"])
    step = len(data) // order["r"]
    parts = [data[i * step : (i + 1) * step] for i in range(order["r"])]
    return json.dumps([await xdt.put(part) for part in parts]).encode()


async def reducer(body: bytes) -> bytes:
    parts = await xdt.gather(json.loads(body))
    return describe(b"".join(parts)).encode()


async def shuffle(body: bytes) -> bytes:
    """Driver: M mappers × R reducers; references forwarded, bytes never through here."""
    order = json.loads(body)
    orders = [
        json.dumps({"size": order["size"], "seed": order["seed"] + m, "r": order["r"]}).encode()
        for m in range(order["m"])
    ]
    by_mapper = [json.loads(a) for a in await xdt.scatter("mapper", orders)]
    by_reducer = [json.dumps([refs[r] for refs in by_mapper]).encode() for r in range(order["r"])]
    answers = await xdt.scatter("reducer", by_reducer)
    held = sum(len(b) for b in by_reducer) + sum(len(a) for a in answers)
    return json.dumps({"result": [a.decode() for a in answers], "driver_held_bytes": held}).encode()


async def put_get(body: bytes) -> bytes:
    order = json.loads(body)
    data = make(order["size"], order["seed"])
    reference = await xdt.put(data)
    return json.dumps([describe(await xdt.get(reference)), len(reference)]).encode()


async def try_get(body: bytes) -> bytes:
    """Get a reference; answer what happened (the typed error, as function code sees it)."""
    try:
        data = await xdt.get(body.decode())
    except xdt.XdtError as exc:
        return json.dumps({"error": type(exc).__name__, "message": str(exc)}).encode()
    return json.dumps({"ok": describe(data)}).encode()


async def put_only(body: bytes) -> bytes:
    order = json.loads(body)
    data = make(order["size"], order["seed"])
    return (await xdt.put(data, pulls=order.get("pulls", 1), ttl=order.get("ttl"))).encode()


def _in_place(body: bytes) -> Any:
    """The order's payload, written straight into an xdt.buffer()."""
    order = json.loads(body)
    size = order["size"]
    payload = xdt.buffer(size)
    payload.writable()[:size] = make(size, order["seed"])
    return payload


async def filled_in_place(body: bytes) -> bytes:
    """The writable buffer API: the payload is written straight into a memfd."""
    return await xdt.invoke("digest", _in_place(body))


def sync_patterns(body: bytes) -> bytes:
    """A plain def handler: the same calls through xdt.sdk.sync."""
    from xdt import sync

    order = json.loads(body)
    data = make(order["size"], order["seed"])
    one = sync.invoke("digest", data).decode()
    many = [a.decode() for a in sync.scatter("digest", [data, data[::-1]])]
    got = describe(sync.get(sync.put(data)))
    gathered = [describe(d) for d in sync.gather([sync.put(data), sync.put(data[::-1])])]
    wide = [a.decode() for a in sync.broadcast("digest", data, 3)]
    return json.dumps([one, many, got, gathered, wide]).encode()


async def via_http(body: bytes) -> bytes:
    """Sends a big payload to a `command` function (any HTTP server)."""
    order = json.loads(body)
    return await xdt.invoke("http-digest", make(order["size"], order["seed"]))


_kept_views: list[memoryview] = []
_kept_arrays: list[tuple[object, str]] = []  # (numpy array over a view, its digest then)


def view_digest(body: memoryview) -> bytes:
    """Zero-copy receive: the payload as a read-only view (the parameter's annotation)."""
    try:
        body[:1] = b"x"
        writable = True
    except TypeError:
        writable = False
    stale = "none"
    if _kept_views:  # the view an earlier call kept: released when that call returned
        try:
            bytes(_kept_views.pop()[:1])
            stale = "readable"
        except ValueError:
            stale = "released"
    _kept_views.append(body)
    import numpy

    # An array over an earlier call's view outlives it, and still shows that payload.
    array_kept = all(describe(a.tobytes()) == was for a, was in _kept_arrays)  # type: ignore[attr-defined]
    _kept_arrays[:] = [(numpy.frombuffer(body, dtype=numpy.uint8), describe(bytes(body)))]
    return json.dumps(
        {
            "digest": describe(bytes(body)),
            "writable": writable,
            "over": type(body.obj).__name__,  # mmap: the memfd itself; bytes: a private copy
            "stale": stale,
            "array_kept": array_kept,
        }
    ).encode()


async def view_broadcast(body: bytes) -> bytes:
    """Zero copy end to end: written in place, one object, several views of it at once."""
    answers = await xdt.broadcast("view-digest", _in_place(body), 3)
    return json.dumps([json.loads(a) for a in answers]).encode()


async def sync_on_the_loop(body: bytes) -> bytes:
    """xdt.sync from an async handler would block the loop it needs: a clear error."""
    from xdt import sync

    try:
        sync.invoke("digest", body)
    except xdt.XdtError as exc:
        return str(exc).encode()
    return b"no error"


async def view_one(body: bytes) -> bytes:
    """Written in place, sent to one view-taking callee."""
    return await xdt.invoke("view-digest", _in_place(body))
