"""The functions ``xdt bench soak`` deploys (and the fault tests): every pattern, every answer
a list of digests that the client checks against its own.

This file is function code, written on the public SDK only; the soak copies it into a folder
every user can read and deploys it with ``xdt up``. Payloads are made from a seed, so the client
computes each expected answer itself (:func:`expected` is shared with it).
"""

from __future__ import annotations

import json
import random

import xxhash

import xdt

REDUCERS = 2  # shuffle: each of `fan` mappers puts this many partitions

_cache: dict[tuple[int, int], bytes] = {}
_CACHE_BYTES = 256 << 20  # per process: the payloads of the sizes in use, not every one seen
_BLOCK = 64 << 10


def make(size: int, seed: int) -> bytes:
    """The payload of ``seed``: the same bytes in every process. Each 64 KiB block is the
    seed's random block rotated by its index, so that no two blocks are alike (a misplaced
    block changes the digest) and 64 MiB takes tens of ms, not the 300 ms of ``randbytes``."""
    data = _cache.get((size, seed))
    if data is None:
        twice = memoryview(random.Random(seed).randbytes(_BLOCK) * 2)
        buffer = bytearray(size)
        for i, start in enumerate(range(0, size, _BLOCK)):
            turn = i * 61 % _BLOCK
            end = min(start + _BLOCK, size)
            buffer[start:end] = twice[turn : turn + end - start]
        data = bytes(buffer)
        if sum(map(len, _cache.values())) + size > _CACHE_BYTES:
            _cache.clear()
        _cache[(size, seed)] = data
    return data


def describe(data: bytes | memoryview) -> str:
    return f"{len(data)}:{xxhash.xxh3_128_hexdigest(data)}"


def partitions(data: bytes, count: int) -> list[bytes]:
    step = len(data) // count
    return [data[i * step : (i + 1) * step] for i in range(count)]


def expected(pattern: str, size: int, seed: int, fan: int) -> list[str]:
    """What :func:`soak` answers for this order when every byte arrived as sent."""
    if pattern == "1to1":
        return [describe(make(size, seed))]
    if pattern == "broadcast":
        return [describe(make(size, seed))] * fan
    if pattern in ("scatter", "gather"):
        return [describe(make(size, seed + i)) for i in range(fan)]
    if pattern == "shuffle":
        by_mapper = [partitions(make(size, seed + m), REDUCERS) for m in range(fan)]
        return [describe(b"".join(parts[r] for parts in by_mapper)) for r in range(REDUCERS)]
    raise ValueError(f"unknown pattern {pattern!r}")


# -- the functions ---------------------------------------------------------------------------


def digest(body: bytes) -> bytes:
    return describe(body).encode()


async def put(body: bytes) -> bytes:
    """A gather producer: stores its payload, answers only the reference. (An order with a
    ``ttl`` is a hoarder's: objects nobody will pull, kept that long.)"""
    order = json.loads(body)
    data = make(order["size"], order["seed"])
    return (await xdt.put(data, ttl=order.get("ttl"))).encode()


async def gather_digest(body: bytes) -> bytes:
    return json.dumps([describe(d) for d in await xdt.gather(json.loads(body))]).encode()


async def mapper(body: bytes) -> bytes:
    order = json.loads(body)
    parts = partitions(make(order["size"], order["seed"]), REDUCERS)
    return json.dumps([await xdt.put(part) for part in parts]).encode()


async def reducer(body: bytes) -> bytes:
    return describe(b"".join(await xdt.gather(json.loads(body)))).encode()


async def take(body: bytes) -> bytes:
    """Get whatever reference it is handed (a hostile client's forgeries): what happened."""
    try:
        data = await xdt.get(body.decode(errors="replace"))
    except xdt.XdtError as error:
        return json.dumps({"refused": error.code}).encode()
    return json.dumps({"got": len(data)}).encode()


async def soak(body: bytes) -> bytes:
    """The driver: runs one order's pattern; the digests its callees computed."""
    order = json.loads(body)
    pattern, size, seed, fan = order["pattern"], order["size"], order["seed"], order["fan"]
    if pattern == "1to1":
        answers = [await xdt.invoke("digest", make(size, seed))]
    elif pattern == "scatter":
        answers = await xdt.scatter("digest", [make(size, seed + i) for i in range(fan)])
    elif pattern == "broadcast":
        answers = await xdt.broadcast("digest", make(size, seed), fan)
    elif pattern == "gather":
        orders = [json.dumps({"size": size, "seed": seed + i}).encode() for i in range(fan)]
        references = [r.decode() for r in await xdt.scatter("put", orders)]
        gathered = await xdt.invoke("gather-digest", json.dumps(references).encode())
        return gathered
    elif pattern == "shuffle":
        orders = [json.dumps({"size": size, "seed": seed + m}).encode() for m in range(fan)]
        by_mapper = [json.loads(a) for a in await xdt.scatter("mapper", orders)]
        by_reducer = [json.dumps([refs[r] for refs in by_mapper]).encode() for r in range(REDUCERS)]
        answers = await xdt.scatter("reducer", by_reducer)
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    return json.dumps([a.decode() for a in answers]).encode()
