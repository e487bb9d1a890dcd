"""The three workflows: the right answer in every transfer mode, a wrong one caught.

They run as ``xdt bench apps`` runs them — one real platform per mode with a real Redis server
and moto's S3 beside it — at a small scale; the checkers compute each answer again in this
process. A sabotaged reducer shows that a wrong answer is caught and never timed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from _support.folders import readable_folder
from xdt.apps import APPS, WrongAnswer
from xdt.bench import apps as bench
from xdt.bench.apps import Scale, run_apps_bench
from xdt.modes import MODES
from xdt.testing import LaunchedPlatform, LocalStores

TINY = Scale(0.2)  # MR's shuffle still fits inline (8 × 2 partitions of 48 KB)


def test_every_workflow_is_right_in_every_mode_and_its_usage_is_measured() -> None:
    results = run_apps_bench(modes=MODES, scale=TINY, runs=1)
    assert {(r.app, r.mode): (r.status, r.error) for r in results} == {
        (app, mode): ("ok", None) for app in APPS for mode in MODES
    }
    for r in results:
        assert r.inputs is not None and len(r.times_s) == 1
        invoked = {f.name: f.invocations for f in r.inputs.functions}
        # Each function ran as often as its workflow calls it, once per run.
        expected = {
            "vid": {"vid-streaming": 1, "vid-decoder": 1, "vid-recog": 6},
            "set": {"set-driver": 1, "set-trainer": 4, "set-reducer": 1, "set-meta": 1},
            "mr": {"mr-driver": 1, "mr-mapper": 8, "mr-reducer": 2},
        }[r.app]
        assert invoked == expected, (r.app, r.mode)
        assert all(f.billed_ms >= f.invocations for f in r.inputs.functions)
        # Each mode's store was the one used: requests to Redis only in elasticache mode, to
        # S3 only in s3 mode; the bytes moved are the same whatever the mode.
        assert (r.inputs.redis_commands > 0) == (r.mode == "elasticache")
        assert (sum(r.inputs.s3_requests.values()) > 0) == (r.mode == "s3")
        assert (r.inputs.redis_peak_bytes > 0) == (r.mode == "elasticache")
    moved = {(r.app, r.mode): r.inputs.moved_bytes for r in results if r.inputs}
    for app in APPS:
        # What crossed between instances: xdt's payloads once (sender's sidecar to the
        # receiver's); a store's twice, up and down, but for the small ones that travel
        # inline in either mode.
        assert moved[(app, "elasticache")] == pytest.approx(moved[(app, "s3")], rel=0.01)
        assert moved[(app, "xdt")] < moved[(app, "s3")] <= 2 * moved[(app, "xdt")]
        assert moved[(app, "xdt")] > 0.2 * APPS[app].in_flight_bytes(1.0) * 0.5


SABOTAGE = '''
from mapreduce import functions as real

driver, mapper = real.driver, real.mapper


async def reducer(body: bytes) -> bytes:
    """The real reducer, but one network's revenue is off by one micro-dollar."""
    answer = bytearray(await real.reducer(body))
    answer[-8] ^= 1
    return bytes(answer)
'''


def test_a_wrong_answer_is_caught_and_never_timed(tmp_path: Path) -> None:
    app = APPS["mr"]
    with readable_folder() as code, LocalStores(tmp_path) as stores:
        shutil.copytree(app.folder, code / "mapreduce")
        (code / "sabotaged.py").write_text(SABOTAGE)
        functions = [
            {**f, "handler": "sabotaged:" + f["handler"].split(":")[1],
             "min_scale": 1, "max_scale": 2}
            for f in app.functions()
        ]  # fmt: skip
        spec = {"platform": {"transfer": "xdt", **stores.spec()}, "functions": functions}
        (code / "xdt.yaml").write_text(yaml.safe_dump(spec))
        for path in code.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        platform = LaunchedPlatform(code / "xdt.yaml", tmp_path / "up.log")
        try:
            platform.wait_ready()
            order = json.dumps({"mappers": 2, "reducers": 2, "rows": 5000, "seed": 3}).encode()
            status, _, answer = platform.invoke("mr-driver", order, timeout=60)
            assert status == 200
            with pytest.raises(WrongAnswer, match="one process computes"):
                app.check(code, order, answer)
            # The bench's own run: refused as wrong, with no time to report.
            with pytest.raises(bench._RunFailed) as failed:
                bench._run_once(platform, stores, app, order, code)
            assert failed.value.status == "wrong" and "WRONG ANSWER" in str(failed.value)
        finally:
            platform.stop()
