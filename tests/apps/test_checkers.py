"""Each workflow's checker: the single-process answer passes, a corrupted one does not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xdt.apps import APPS, WrongAnswer, app_named
from xdt.apps.mapreduce import functions as mr
from xdt.apps.stacking import functions as stacking
from xdt.apps.video import app as video_app
from xdt.apps.video import functions as video


def test_vid_finds_the_people_in_the_video_and_a_changed_box_is_wrong(tmp_path: Path) -> None:
    video_app.prepare(tmp_path, 0.3)
    order = APPS["vid"].order(0.3, 1)
    clip = (tmp_path / json.loads(order)["video"]).read_bytes()
    frames = video.extract_frames(clip, 6)
    answer = [{"frame": i, "jpeg_bytes": len(j), "people": video.detect_people(j)}
              for i, j in frames]  # fmt: skip
    summary = APPS["vid"].check(tmp_path, order, json.dumps(answer).encode())
    # The detector is real: the silhouettes walking through the video are found.
    assert summary["frames"] == 6 and summary["people"] >= 6
    answer[2]["people"][0][0] += 1
    with pytest.raises(WrongAnswer, match="VID found"):
        APPS["vid"].check(tmp_path, order, json.dumps(answer).encode())
    with pytest.raises(WrongAnswer, match="not JSON"):
        APPS["vid"].check(tmp_path, order, b"\x00garbage")


def test_set_checks_the_meta_model_and_a_changed_coefficient_is_wrong() -> None:
    order = APPS["set"].order(0.5, 4)
    wanted = json.loads(order)
    features, labels = stacking.dataset(wanted["samples"], wanted["features"], wanted["seed"])
    stacked = np.column_stack(
        [stacking.train_and_predict(m, features, labels, 4) for m in stacking.TRAINERS]
    )
    answer = stacking.fit_meta(stacked, labels[stacking.split(len(labels)) :])
    assert APPS["set"].check(Path(), order, json.dumps(answer).encode())["rows"] == answer["rows"]
    answer["coefficients"][1] *= 1.001
    with pytest.raises(WrongAnswer, match="meta model"):
        APPS["set"].check(Path(), order, json.dumps(answer).encode())


def test_mr_checks_against_one_process_and_one_lost_partition_is_wrong() -> None:
    order = APPS["mr"].order(0.05, 2)
    wanted = json.loads(order)
    parts = [mr.partition(mr.input_part(2, m, wanted["rows"]), 2) for m in range(8)]
    reduced = [mr.reduce(np.concatenate([p[r] for p in parts])) for r in range(2)]
    right = json.dumps(mr.summarise(reduced)).encode()
    assert APPS["mr"].check(Path(), order, right)["groups"] > 1000  # of 4096 networks
    lost = [mr.reduce(np.concatenate([p[r] for p in parts[1:]])) for r in range(2)]
    with pytest.raises(WrongAnswer, match="one process computes"):
        APPS["mr"].check(Path(), order, json.dumps(mr.summarise(lost)).encode())


def test_apps_are_named_and_an_unknown_one_is_refused_with_the_known_ones() -> None:
    assert [app_named(k).entry for k in ("vid", "set", "mr")] == [
        "vid-streaming", "set-driver", "mr-driver",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="known: vid, set, mr"):
        app_named("wc")
