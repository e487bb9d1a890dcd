"""MR's functions: plain Python on the public SDK; the transfer mode is the spec's business.

The job is the ad-revenue aggregation of the uservisits benchmark (the paper's input):
``SELECT SUBSTR(sourceIP, 1, 8), SUM(adRevenue) FROM uservisits GROUP BY 1`` — revenue per
/16 source network.

    mr-driver   sends each mapper its part of the input, then each reducer the references
                to its partitions — references only: it never holds shuffled data
    mr-mapper   reads its input part (made from the seed: a stand-in for reading it from
                storage, which costs the same in every mode), and puts one partition per
                reducer — every (network, revenue) record, not pre-summed
    mr-reducer  pulls its partition from every mapper and sums revenue per network

Records are binary (numpy): a visit is 32 bytes of input, 12 of shuffle (a uint32 key, an
int64 revenue in micro-dollars, so that sums are exact in any order). The order: ``{"mappers":
8, "reducers": 2, "rows": 100000, "seed": 1}``; the answer: the groups, the total and a digest
of every (network, revenue) pair.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

import xdt

VISIT = np.dtype(
    [("source_ip", "<u4"), ("dest_url", "<u8"), ("visit_date", "<i4"),
     ("ad_revenue", "<i8"), ("duration", "<i4"), ("country", "<u4")]
)  # fmt: skip
SHUFFLED = np.dtype([("network", "<u4"), ("revenue", "<i8")])
TTL = 900.0  # partitions wait for the slowest mapper: longer than the default object_ttl


async def driver(body: bytes) -> bytes:
    order = json.loads(body)
    parts = [
        json.dumps({"part": m, "rows": order["rows"], "seed": order["seed"],
                    "reducers": order["reducers"]}).encode()
        for m in range(order["mappers"])
    ]  # fmt: skip
    # Each mapper answers one reference per reducer: the driver passes them on, unopened.
    partitions = [json.loads(a) for a in await xdt.scatter("mr-mapper", parts)]
    reduces = [json.dumps([refs[r] for refs in partitions]).encode()
               for r in range(order["reducers"])]  # fmt: skip
    results = [np.frombuffer(a, SHUFFLED) for a in await xdt.scatter("mr-reducer", reduces)]
    return json.dumps(summarise(results)).encode()


async def mapper(body: bytes) -> bytes:
    order = json.loads(body)
    visits = input_part(order["seed"], order["part"], order["rows"])
    partitions = partition(visits, order["reducers"])
    references = [await xdt.put(p.tobytes(), ttl=TTL) for p in partitions]
    return json.dumps(references).encode()


async def reducer(body: bytes) -> bytes:
    pulled = await xdt.gather(json.loads(body))
    records = np.concatenate([np.frombuffer(p, SHUFFLED) for p in pulled])
    return reduce(records).tobytes()


# -- the work itself, shared with the checker ------------------------------------------------


def input_part(seed: int, part: int, rows: int) -> np.ndarray:
    """Part ``part`` of the uservisits table: ``rows`` visits, the same for a given seed."""
    rng = np.random.default_rng([seed, part])
    visits = np.empty(rows, VISIT)
    # Source addresses cluster in a few thousand /16 networks, as real traffic does.
    networks = rng.zipf(1.3, rows).astype(np.uint32) % 4096
    visits["source_ip"] = (networks << 16) | rng.integers(0, 1 << 16, rows, dtype=np.uint32)
    visits["dest_url"] = rng.integers(0, 1 << 63, rows, dtype=np.uint64)
    visits["visit_date"] = rng.integers(10_000, 20_000, rows, dtype=np.int32)
    visits["ad_revenue"] = rng.integers(1, 1_000_000_000, rows, dtype=np.int64)
    visits["duration"] = rng.integers(1, 10_000, rows, dtype=np.int32)
    visits["country"] = rng.integers(0, 200, rows, dtype=np.uint32)
    return visits


def partition(visits: np.ndarray, reducers: int) -> list[np.ndarray]:
    """The map step: (network, revenue) per visit, split by network among the reducers."""
    shuffled = np.empty(len(visits), SHUFFLED)
    shuffled["network"] = visits["source_ip"] >> 16
    shuffled["revenue"] = visits["ad_revenue"]
    owner = shuffled["network"] % reducers
    return [shuffled[owner == r] for r in range(reducers)]


def reduce(records: np.ndarray) -> np.ndarray:
    """The reduce step: revenue summed per network, networks in order."""
    networks, where = np.unique(records["network"], return_inverse=True)
    totals = np.zeros(len(networks), np.int64)
    np.add.at(totals, where, records["revenue"])
    out = np.empty(len(networks), SHUFFLED)
    out["network"], out["revenue"] = networks, totals
    return out


def summarise(results: list[np.ndarray]) -> dict[str, object]:
    merged = np.sort(np.concatenate(results), order="network")
    top = merged[np.argsort(merged["revenue"], kind="stable")[::-1][:3]]
    return {
        "groups": len(merged),
        "total_revenue": int(merged["revenue"].sum()),
        "top": [[f"{n >> 8}.{n & 255}", int(r)] for n, r in top.tolist()],
        "digest": hashlib.sha256(merged.tobytes()).hexdigest(),
    }
