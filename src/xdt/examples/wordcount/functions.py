"""The word-count workflow's functions. Plain Python: bytes in, bytes out."""

import asyncio
import collections
import json
import time

import xdt

CHUNKS = 4


async def wordcount(body: bytes) -> bytes:
    """Split the text into chunks, count each in its own `count` invocation, merge."""
    words = body.decode().split()
    size = max(1, -(-len(words) // CHUNKS))
    chunks = [" ".join(words[i : i + size]).encode() for i in range(0, len(words), size)]
    partials = await asyncio.gather(*(xdt.invoke("count", chunk) for chunk in chunks))
    total: collections.Counter[str] = collections.Counter()
    for partial in partials:
        total.update(json.loads(partial))
    return json.dumps({"words": sum(total.values()), "top": total.most_common(5)}).encode()


def count(body: bytes) -> bytes:
    time.sleep(0.05)  # stands in for real work, so that load makes the autoscaler add instances
    counts = collections.Counter(word.strip(".,;:!?\"'").lower() for word in body.decode().split())
    return json.dumps(counts).encode()
