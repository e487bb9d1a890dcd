"""MR's set-up and checking: the order for a scale, and the right answer.

At scale 1 each of the 8 mappers reads 100,000 visits (3.2 MB) and shuffles 1.2 MB to the
two reducers; ``scale`` multiplies the rows. The right answer is the same aggregation in one
process, over the same input: no shuffle, one reduce.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import App, WrongAnswer

MAPPERS, REDUCERS, ROWS = 8, 2, 100_000
SHUFFLED_RECORD = 12  # bytes per visit after the map step
INPUT_RECORD = 32


def prepare(folder: Path, scale: float) -> None:
    """Nothing to make ahead: each mapper makes its input part from the order's seed."""


def order(scale: float, seed: int) -> bytes:
    rows = max(1000, round(ROWS * scale))
    return json.dumps(
        {"mappers": MAPPERS, "reducers": REDUCERS, "rows": rows, "seed": seed}
    ).encode()


def check(folder: Path, order_body: bytes, answer: bytes) -> dict[str, Any]:
    import numpy as np

    from .functions import input_part, partition, reduce, summarise

    wanted = json.loads(order_body)
    visits = np.concatenate(
        [input_part(wanted["seed"], m, wanted["rows"]) for m in range(wanted["mappers"])]
    )
    expected = summarise([reduce(partition(visits, 1)[0])])
    try:
        got = json.loads(answer)
    except ValueError:
        raise WrongAnswer(f"MR answered something that is not JSON: {answer[:200]!r}") from None
    if got != expected:
        raise WrongAnswer(f"MR answered {str(got)[:300]}, one process computes {expected}")
    return {"groups": got["groups"], "total_revenue": got["total_revenue"]}


def in_flight_bytes(scale: float) -> int:
    """The shuffle: every visit's (network, revenue) record."""
    return MAPPERS * max(1000, round(ROWS * scale)) * SHUFFLED_RECORD


APP = App(
    key="mr",
    title="MapReduce",
    package="mapreduce",
    entry="mr-driver",
    prepare=prepare,
    order=order,
    check=check,
    in_flight_bytes=in_flight_bytes,
)
