"""SET's set-up and checking: the order for a scale, and the right answer.

The dataset is ``make_classification(300 × scale samples, 1024 features)`` — 2.4 MB at
scale 1, as in the paper — made by the driver from the order's seed. The right answer is the
same training in this process: the same base models on the same rows, the same meta model.
Floating-point sums may differ in their last bits between processes (threaded BLAS), so
coefficients are compared to 1e-6 and the accuracy to one held-out row.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .. import App, WrongAnswer

SAMPLES = 300
FEATURES = 1024


def prepare(folder: Path, scale: float) -> None:
    """Nothing to make ahead: the driver makes the dataset from the order's seed."""


def order(scale: float, seed: int) -> bytes:
    samples = max(60, round(SAMPLES * scale))
    return json.dumps({"samples": samples, "features": FEATURES, "seed": seed}).encode()


def check(folder: Path, order_body: bytes, answer: bytes) -> dict[str, Any]:
    import numpy as np

    from .functions import TRAINERS, dataset, fit_meta, split, train_and_predict

    wanted = json.loads(order_body)
    features, labels = dataset(wanted["samples"], wanted["features"], wanted["seed"])
    stacked = np.column_stack(
        [train_and_predict(m, features, labels, wanted["seed"]) for m in TRAINERS]
    )
    expected = fit_meta(stacked, labels[split(len(labels)) :])
    try:
        got = json.loads(answer)
        same = (
            got["rows"] == expected["rows"]
            and abs(got["accuracy"] - expected["accuracy"]) * (expected["rows"] // 2) <= 1.0001
            and len(got["coefficients"]) == len(expected["coefficients"])
            and all(
                math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
                for a, b in zip(
                    [*got["coefficients"], got["intercept"]],
                    [*expected["coefficients"], expected["intercept"]],
                    strict=True,
                )
            )
        )
    except (ValueError, KeyError, TypeError):
        raise WrongAnswer(f"SET answered something of another shape: {answer[:200]!r}") from None
    if not same:
        raise WrongAnswer(f"SET's meta model is {got}, the same training here gives {expected}")
    return {"accuracy": got["accuracy"], "rows": got["rows"]}


def in_flight_bytes(scale: float) -> int:
    """The dataset (one object, pulled by four trainers) and the predictions."""
    samples = max(60, round(SAMPLES * scale))
    return samples * FEATURES * 8 + samples * 8 * 2


APP = App(
    key="set",
    title="stacking-ensemble training",
    package="stacking",
    entry="set-driver",
    prepare=prepare,
    order=order,
    check=check,
    in_flight_bytes=in_flight_bytes,
)
