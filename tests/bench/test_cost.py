"""The cost model against cases computed by hand, its parameters and its prices file."""

from __future__ import annotations

from pathlib import Path

import pytest

from xdt.bench.cost import (
    COMPONENTS,
    DEFAULT_PARAMETERS,
    CostParameters,
    FunctionUse,
    RunInputs,
    cost,
    load_prices,
    pick_nodes,
)

GIB = 1 << 30
PRICES = load_prices()


def lines(inputs: RunInputs, **parameters: object) -> dict[str, float]:
    priced = cost(inputs, CostParameters(**parameters), PRICES)  # type: ignore[arg-type]
    assert [line.component for line in priced.lines] == list(COMPONENTS)  # none hidden
    return {line.component: line.usd for line in priced.lines}


def test_the_prices_file_holds_the_quoted_aws_prices() -> None:
    assert PRICES.request == 0.0000002
    assert PRICES.gb_second_x86 == 0.0000166667 and PRICES.gb_second_arm == 0.0000133334
    assert (PRICES.s3_put_per_1000, PRICES.s3_get_per_1000) == (0.005, 0.0004)
    assert PRICES.node("cache.m6g.12xlarge").hourly == 3.557
    sizes = [n.memory_bytes for n in PRICES.nodes]
    assert sizes == sorted(sizes) and all(n.source for n in PRICES.nodes)


def test_compute_and_requests_bill_every_invocation_by_its_memory() -> None:
    # 2 invocations of a 1 GiB function, 1,500 ms in all, and one of 512 MiB for 200 ms:
    # 1.5 GB-s + 0.1 GB-s at $0.0000166667, three requests at $0.0000002.
    inputs = RunInputs("inline", 1.0, (FunctionUse("a", GIB, 2, 1500),
                                       FunctionUse("b", GIB // 2, 1, 200)))  # fmt: skip
    got = lines(inputs)
    assert got["compute"] == pytest.approx(1.6 * 0.0000166667)
    assert got["requests"] == pytest.approx(3 * 0.0000002)
    assert sum(got[c] for c in COMPONENTS if c not in ("compute", "requests")) == 0
    arm = lines(inputs, architecture="arm")
    assert arm["compute"] == pytest.approx(1.6 * 0.0000133334)


def test_xdt_pays_for_a_sender_kept_alive_until_its_objects_are_pulled() -> None:
    inputs = RunInputs("xdt", 1.0, (FunctionUse("mapper", 2 * GIB, 8, 800, keep_alive_s=0.25),))
    assert lines(inputs)["keep-alive"] == pytest.approx(0.5 * 0.0000166667)


def test_s3_charges_put_and_get_classes_its_storage_time_and_no_deletes() -> None:
    requests = {"PutObject": 10, "UploadPart": 4, "CompleteMultipartUpload": 1,
                "CreateMultipartUpload": 1, "ListObjectsV2": 2, "GetObject": 12,
                "HeadObject": 3, "DeleteObject": 12}  # fmt: skip
    # 1 GB held for a whole 730-hour month, in byte-seconds.
    inputs = RunInputs("s3", 1.0, (), s3_requests=requests, s3_byte_seconds=1e9 * 2628000)
    got = lines(inputs)
    assert got["s3 requests"] == pytest.approx(18 / 1000 * 0.005 + 15 / 1000 * 0.0004)
    assert got["s3 storage"] == pytest.approx(0.023)


def test_an_elasticache_cluster_is_sized_for_the_peak_in_flight_and_shared_by_the_rate() -> None:
    # 300 MB at the peak of a 2 s run, 3,600 runs an hour: 2 runs in flight, 600 MB, over
    # 75 % usable memory = 800 MB: the smallest node holding it is cache.t4g.small (1.37
    # GiB), $0.032/h shared by 3,600 runs.
    inputs = RunInputs("elasticache", 2.0, (), redis_peak_bytes=300_000_000)
    assert lines(inputs)["elasticache"] == pytest.approx(0.032 / 3600)
    # At 36 runs an hour one run is in flight (at least one), and each pays 1/36 of a micro.
    assert lines(inputs, runs_per_hour=36)["elasticache"] == pytest.approx(0.016 / 36)
    # A named node type too small for the peak: as many as it takes.
    node, count = pick_nodes(2.2 * GIB, CostParameters(elasticache_node="cache.t4g.micro"),
                             PRICES)  # fmt: skip
    assert (node.name, count) == ("cache.t4g.micro", 5)
    # More than the largest holds: several of the largest.
    node, count = pick_nodes(400 * GIB, DEFAULT_PARAMETERS, PRICES)
    assert (node.name, count) == ("cache.m6g.12xlarge", 3)
    # Other modes pay no node.
    assert lines(RunInputs("xdt", 2.0, (), redis_peak_bytes=10**9))["elasticache"] == 0


def test_data_transfer_charges_only_the_share_that_crosses_azs() -> None:
    inputs = RunInputs("xdt", 1.0, (), moved_bytes=3e9, s3_moved_bytes=1e9)
    assert lines(inputs)["data transfer"] == 0  # same AZ: free
    # Half of the 2 GB between instances crosses AZs at $0.02/GB; S3 in-region is free.
    assert lines(inputs, cross_az_fraction=0.5)["data transfer"] == pytest.approx(0.02)


def test_parameters_are_checked_and_parsed_from_text() -> None:
    changed = DEFAULT_PARAMETERS.with_values({"runs_per_hour": "100", "architecture": "arm"})
    assert (changed.runs_per_hour, changed.architecture) == (100.0, "arm")
    with pytest.raises(ValueError, match="no cost parameter 'rate'"):
        DEFAULT_PARAMETERS.with_values({"rate": "1"})
    with pytest.raises(ValueError, match="runs_per_hour: 'many' is not a float"):
        DEFAULT_PARAMETERS.with_values({"runs_per_hour": "many"})
    with pytest.raises(ValueError, match="runs_per_hour: must be more than 0"):
        CostParameters(runs_per_hour=0)
    with pytest.raises(ValueError, match="architecture"):
        CostParameters(architecture="risc-v")
    with pytest.raises(ValueError, match=r"no ElastiCache node type 'cache\.huge'"):
        pick_nodes(1, CostParameters(elasticache_node="cache.huge"), PRICES)


def test_a_prices_file_of_another_shape_is_refused_saying_so(tmp_path: Path) -> None:
    broken = tmp_path / "prices.toml"
    broken.write_text("[lambda]\nrequest = 1\n")
    with pytest.raises(ValueError, match=r"is not a prices file like prices\.toml"):
        load_prices(broken)
    with pytest.raises(ValueError, match="cannot read the prices file"):
        load_prices(tmp_path / "missing.toml")


def test_billed_memory_can_cover_what_instances_were_measured_to_hold() -> None:
    # A 512 MiB function whose instance held 700.5 MiB: billed for 701 MiB under "peak".
    use = FunctionUse("sender", 512 << 20, 1, 1000, peak_bytes=int(700.5 * (1 << 20)))
    inputs = RunInputs("xdt", 1.0, (use,))
    assert lines(inputs)["compute"] == pytest.approx(0.5 * 0.0000166667)
    assert lines(inputs, billed_memory="peak")["compute"] == pytest.approx(
        701 / 1024 * 0.0000166667
    )
    small = FunctionUse("small", 512 << 20, 1, 1000, peak_bytes=100 << 20)
    assert small.billed_memory(CostParameters(billed_memory="peak")) == 512 << 20
    with pytest.raises(ValueError, match="billed_memory: spec or peak"):
        CostParameters(billed_memory="max")
