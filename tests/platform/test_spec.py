"""The platform spec file (``xdt.platform.spec``): parsing, defaults and error messages."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from xdt import SpecError
from xdt._core.refs import DEFAULT_TENANT, TransferMode
from xdt.platform.autoscaler import DEFAULT_AUTOSCALER_CONFIG, AutoscalerConfig
from xdt.platform.hosts import Link
from xdt.platform.spec import (
    DEFAULT_PLATFORM_SPEC,
    FunctionSpec,
    PlatformSpec,
    Spec,
    load_spec,
    parse_spec,
)

FOLDER = Path("/srv/app")

FULL = """
platform:
  host: 0.0.0.0
  port: 9090
  key_file: keys/ring.txt
  queue_depth: 50
  inline_limit: 1MiB
  object_quota: 2 GiB
  drain_timeout: 2m
  autoscaler:
    stable_window: 6s
    tick_interval: 500ms
    bucket_size: 0.5
    scale_to_zero_grace: 1s
    enable_scale_to_zero: false
    initial_scale: 0
    target_utilization_percentage: 50
    max_scale_up_rate: 3.5
    target_burst_capacity: -1
functions:
  - name: resize
    handler: images:resize
    concurrency: 4
    min_scale: 1
    max_scale: 3
    initial_scale: 2
    transfer: s3
    timeout: 30s
    tenant: acme
    env: {MODE: fast, LEVEL: 3}
  - name: legacy-app
    command: [python3, server.py, --port, "8000"]
    transfer: inline
"""


def minimal(**function: Any) -> dict[str, Any]:
    """A valid document with one function, updated with ``function``'s keys."""
    return {"functions": [{"name": "resize", "handler": "images:resize", **function}]}


def parse(document: Any) -> Spec:
    return parse_spec(document, folder=FOLDER)


def test_full_spec_parses_to_the_values_written() -> None:
    spec = parse(yaml.safe_load(FULL))

    assert spec.platform == PlatformSpec(
        host="0.0.0.0",
        port=9090,
        key_file=FOLDER / "keys" / "ring.txt",
        queue_depth=50,
        inline_limit=1 << 20,
        object_quota=2 << 30,
        drain_timeout=120.0,
        autoscaler=AutoscalerConfig(
            stable_window=6.0,
            tick_interval=0.5,
            bucket_size=0.5,
            scale_to_zero_grace=1.0,
            enable_scale_to_zero=False,
            initial_scale=0,
            target_utilization_percentage=50.0,
            max_scale_up_rate=3.5,
            target_burst_capacity=-1.0,
        ),
    )
    assert spec.platform.autoscaler.panic_window == pytest.approx(0.6)

    resize, legacy = spec.functions
    assert resize == FunctionSpec(
        name="resize",
        handler="images:resize",
        concurrency=4,
        min_scale=1,
        max_scale=3,
        initial_scale=2,
        transfer="s3",
        timeout=30.0,
        tenant="acme",
        env={"MODE": "fast", "LEVEL": "3"},
        folder=FOLDER,
    )
    assert resize.kind == "python"
    assert legacy.command == ("python3", "server.py", "--port", "8000")
    assert legacy.handler is None
    assert legacy.kind == "command"
    assert legacy.transfer == "inline"
    assert legacy.folder == FOLDER
    assert spec.path is None


def test_function_lookup_by_name() -> None:
    spec = parse(yaml.safe_load(FULL))
    assert spec.function("legacy-app") is spec.functions[1]
    assert spec.function("resize") is spec.functions[0]
    assert spec.function("missing") is None


def test_defaults() -> None:
    spec = parse(minimal())

    assert spec.platform == DEFAULT_PLATFORM_SPEC
    assert spec.platform.host == "127.0.0.1"
    assert spec.platform.port == 8080
    assert spec.platform.key_file is None
    assert spec.platform.queue_depth == 10_000
    assert spec.platform.inline_limit == 6 << 20
    assert spec.platform.object_quota == 1 << 30
    assert spec.platform.drain_timeout == 600.0
    assert spec.platform.autoscaler == DEFAULT_AUTOSCALER_CONFIG

    (function,) = spec.functions
    assert function.name == "resize"
    assert function.command is None
    assert function.concurrency == 0
    assert function.min_scale == 0
    assert function.max_scale == 10
    assert function.initial_scale is None
    assert function.transfer is None  # the platform's, else xdt's:
    assert spec.mode_of(function) is TransferMode.XDT
    assert function.timeout == 300.0
    assert function.tenant == DEFAULT_TENANT
    assert dict(function.env) == {}
    assert function.folder == FOLDER


@pytest.mark.parametrize("empty", [None, {}])
def test_empty_platform_and_autoscaler_sections_mean_defaults(empty: Any) -> None:
    assert parse({**minimal(), "platform": empty}).platform == DEFAULT_PLATFORM_SPEC
    document = {**minimal(), "platform": {"autoscaler": empty}}
    assert parse(document).platform.autoscaler == DEFAULT_AUTOSCALER_CONFIG


def test_memory_limit_is_a_size_per_function_and_unset_by_default() -> None:
    spec = parse({"functions": [{"name": "f", "handler": "m:f", "memory_limit": "256MiB"},
                                {"name": "g", "handler": "m:g"}]})  # fmt: skip
    assert [f.memory_limit for f in spec.functions] == [256 << 20, None]


def test_memory_is_the_billed_setting_per_function_512_mib_by_default() -> None:
    """As Lambda's memory setting: what each invocation is billed for; not a limit."""
    spec = parse({"functions": [{"name": "f", "handler": "m:f", "memory": "1GiB"},
                                {"name": "g", "handler": "m:g", "memory": 134217728},
                                {"name": "h", "handler": "m:h"}]})  # fmt: skip
    assert [f.memory for f in spec.functions] == [1 << 30, 128 << 20, 512 << 20]
    assert [f.memory_limit for f in spec.functions] == [None, None, None]


def test_sizes_may_be_plain_byte_counts() -> None:
    spec = parse({**minimal(), "platform": {"inline_limit": 4096, "object_quota": "64KiB"}})
    assert spec.platform.inline_limit == 4096
    assert spec.platform.object_quota == 64 << 10


def test_absolute_key_file_is_kept() -> None:
    spec = parse({**minimal(), "platform": {"key_file": "/etc/xdt/ring"}})
    assert spec.platform.key_file == Path("/etc/xdt/ring")


def test_command_given_as_one_string_is_split() -> None:
    spec = parse({"functions": [{"name": "app", "command": "python3  app.py -v"}]})
    assert spec.functions[0].command == ("python3", "app.py", "-v")


def test_max_scale_zero_means_unlimited_so_any_min_scale_is_allowed() -> None:
    function = parse(minimal(min_scale=50, max_scale=0)).functions[0]
    assert (function.min_scale, function.max_scale) == (50, 0)


def test_min_scale_equal_to_max_scale_is_allowed() -> None:
    function = parse(minimal(min_scale=3, max_scale=3)).functions[0]
    assert (function.min_scale, function.max_scale) == (3, 3)


@pytest.mark.parametrize(
    ("handler", "ok"),
    [
        ("images:resize", True),
        ("pkg.sub_mod:handle_2", True),
        ("_private:_fn", True),
        ("images", False),
        ("images:", False),
        (":resize", False),
        ("images:resize:again", False),
        ("2images:resize", False),
        ("images:re-size", False),
        ("images/resize:fn", False),
    ],
)
def test_handler_syntax(handler: str, ok: bool) -> None:
    if ok:
        assert parse(minimal(handler=handler)).functions[0].handler == handler
    else:
        with pytest.raises(SpecError, match=re.escape("functions[resize].handler: ")):
            parse(minimal(handler=handler))


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a", True),
        ("resize-2", True),
        ("0abc", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("Resize", False),
        ("-resize", False),
        ("resize-", False),
        ("re_size", False),
        ("re.size", False),
        ("re size", False),
    ],
)
def test_name_syntax(name: str, ok: bool) -> None:
    document = {"functions": [{"name": name, "handler": "m:f"}]}
    if ok:
        assert parse(document).functions[0].name == name
    else:
        with pytest.raises(SpecError, match=re.escape("functions[0].name: ")) as info:
            parse(document)
        assert "not a valid name" in str(info.value)


@pytest.mark.parametrize(
    "function",
    [{"name": "resize\n", "handler": "m:f"}, {"name": "resize", "handler": "images:resize\n"}],
    ids=["name", "handler"],
)
def test_trailing_newline_is_rejected(function: dict[str, str]) -> None:
    with pytest.raises(SpecError):
        parse({"functions": [function]})


# --- load_spec -------------------------------------------------------------------------------


def test_load_spec_reads_the_file_and_takes_paths_from_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    path = folder / "xdt.yaml"
    path.write_text(FULL)

    spec = load_spec(path)

    assert spec.path == path
    assert spec.platform.key_file == folder.resolve() / "keys" / "ring.txt"
    assert all(f.folder == folder.resolve() for f in spec.functions)
    assert [f.name for f in spec.functions] == ["resize", "legacy-app"]


def test_load_spec_accepts_a_string_path(tmp_path: Path) -> None:
    path = tmp_path / "spec.yml"
    path.write_text(yaml.safe_dump(minimal()))
    spec = load_spec(str(path))
    assert spec.path == path
    assert spec.functions[0].folder == tmp_path.resolve()


def test_load_spec_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match="cannot read the spec file") as info:
        load_spec(path)
    assert str(path) in str(info.value)
    assert "No such file" in str(info.value)


def test_load_spec_on_a_folder(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read the spec file"):
        load_spec(tmp_path)


def test_load_spec_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("functions: [\n  - name: x\n")
    with pytest.raises(SpecError, match="is not valid YAML") as info:
        load_spec(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "platform: {port: 1}\nfunctions: [{name: f, handler: 'm:f'}]\nplatform: {transfer: s3}\n",
        "functions: [{name: f, handler: 'm:f', handler: 'm:g'}]\n",
    ],
)
def test_load_spec_refuses_a_key_given_twice(tmp_path: Path, text: str) -> None:
    """Plain YAML keeps the last of two keys: a second platform: pasted below the first once
    dropped the first's settings without a word."""
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=r"is given twice in one mapping: merge them"):
        load_spec(path)


def test_load_spec_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(SpecError, match=r"the spec: expected a mapping .*got nothing"):
        load_spec(path)


def test_load_spec_undecodable_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"functions:\n  - name: caf\xe9\n    handler: m:f\n")
    with pytest.raises(SpecError):
        load_spec(path)


# --- bad specs -------------------------------------------------------------------------------


def with_platform(**platform: Any) -> dict[str, Any]:
    return {**minimal(), "platform": platform}


def with_autoscaler(**autoscaler: Any) -> dict[str, Any]:
    return with_platform(autoscaler=autoscaler)


def two(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    return {"functions": [first, second]}


BAD: list[tuple[str, Any, str, str]] = [
    # id, document, field path, what is wrong (regex)
    ("top-level-list", [minimal()], "the spec", r"expected a mapping .*got list"),
    ("top-level-text", "functions", "the spec", r"expected a mapping .*got str 'functions'"),
    (
        "top-level-unknown-key",
        {**minimal(), "function": []},
        "the spec",
        r"unknown key 'function' \(did you mean 'functions'\?\)",
    ),
    (
        "top-level-key-not-a-name",
        {**minimal(), 3: "x"},
        "the spec",
        r"keys are names, not 3",
    ),
    ("no-functions", {"platform": {}}, "functions", r"list at least one function"),
    ("empty-functions", {"functions": []}, "functions", r"list at least one function"),
    (
        "functions-not-a-list",
        {"functions": {"name": "resize", "handler": "m:f"}},
        "functions",
        r"list at least one function",
    ),
    ("function-not-a-mapping", {"functions": ["resize"]}, "functions[0]", r"got str 'resize'"),
    ("function-null", {"functions": [None]}, "functions[0]", r"got nothing"),
    (
        "function-unknown-key",
        minimal(concurency=1),
        "functions[0]",
        r"unknown key 'concurency' \(did you mean 'concurrency'\?\)",
    ),
    (
        "function-unknown-key-no-near-match",
        minimal(zzz=1),
        "functions[0]",
        r"unknown key 'zzz' \(known: command, concurrency, env, handler, host, initial_scale, "
        r"max_scale, memory, memory_limit, min_scale, name, ready_timeout, tenant, timeout, "
        r"transfer\)",
    ),
    (
        "folder-is-not-a-spec-key",
        minimal(folder="/tmp"),
        "functions[0]",
        r"unknown key 'folder'",
    ),
    ("name-missing", {"functions": [{"handler": "m:f"}]}, "functions[0].name", r"needs a name"),
    (
        "name-not-a-string",
        {"functions": [{"name": 5, "handler": "m:f"}]},
        "functions[0].name",
        r"expected a non-empty string, got int 5",
    ),
    (
        "name-empty",
        {"functions": [{"name": "", "handler": "m:f"}]},
        "functions[0].name",
        r"expected a non-empty string",
    ),
    (
        "name-bad",
        {"functions": [{"name": "Resize_It", "handler": "m:f"}]},
        "functions[0].name",
        r"'Resize_It' is not a valid name \(lower-case letters, digits and '-'",
    ),
    (
        "name-duplicate",
        two({"name": "a", "handler": "m:f"}, {"name": "a", "command": ["x"]}),
        "functions[1].name",
        r"'a' is named twice",
    ),
    (
        "concurrency-negative",
        minimal(concurrency=-1),
        "functions[resize].concurrency",
        r"must be at least 0, got -1",
    ),
    (
        "concurrency-bool",
        minimal(concurrency=True),
        "functions[resize].concurrency",
        r"expected a whole number, got bool True",
    ),
    (
        "concurrency-float",
        minimal(concurrency=1.5),
        "functions[resize].concurrency",
        r"expected a whole number, got float 1.5",
    ),
    (
        "concurrency-string",
        minimal(concurrency="4"),
        "functions[resize].concurrency",
        r"expected a whole number, got str '4'",
    ),
    (
        "max-scale-negative",
        minimal(max_scale=-2),
        "functions[resize].max_scale",
        r"must be at least 0, got -2",
    ),
    (
        "initial-scale-null",
        minimal(initial_scale=None),
        "functions[resize].initial_scale",
        r"expected a whole number, got nothing",
    ),
    (
        "handler-and-command",
        minimal(command=["python3", "app.py"]),
        "functions[resize]",
        r"give exactly one of handler \(Python\) and command \(HTTP server\)",
    ),
    (
        "neither-handler-nor-command",
        {"functions": [{"name": "resize"}]},
        "functions[resize]",
        r"give exactly one of handler",
    ),
    (
        "handler-bad",
        minimal(handler="images.resize"),
        "functions[resize].handler",
        r"'images.resize' is not 'module:function' \(e.g. images:resize\)",
    ),
    (
        "handler-not-a-string",
        minimal(handler=["images:resize"]),
        "functions[resize].handler",
        r"expected a non-empty string, got list",
    ),
    (
        "command-empty-list",
        {"functions": [{"name": "app", "command": []}]},
        "functions[app].command",
        r"write the command as a list of strings",
    ),
    (
        "command-not-strings",
        {"functions": [{"name": "app", "command": ["python3", 8000]}]},
        "functions[app].command",
        r"write the command as a list of strings",
    ),
    (
        "command-blank-string",
        {"functions": [{"name": "app", "command": "   "}]},
        "functions[app].command",
        r"write the command as a list of strings",
    ),
    (
        "transfer-unknown",
        minimal(transfer="ftp"),
        "functions[resize].transfer",
        r"'ftp' is not a transfer mode \(inline, xdt, elasticache, s3\)",
    ),
    (
        "transfer-wrong-case",
        minimal(transfer="XDT"),
        "functions[resize].transfer",
        r"'XDT' is not a transfer mode",
    ),
    (
        "min-above-max-scale",
        minimal(min_scale=5, max_scale=2),
        "functions[resize].min_scale",
        r"5 is above max_scale",
    ),
    (
        "min-above-default-max-scale",
        minimal(min_scale=11),
        "functions[resize].min_scale",
        r"11 is above max_scale",
    ),
    (
        "timeout-zero",
        minimal(timeout="0s"),
        "functions[resize].timeout",
        r"must be more than 0",
    ),
    (
        "timeout-bad-duration",
        minimal(timeout="30 seconds"),
        "functions[resize].timeout",
        r"not a duration: '30 seconds' \(write a number with an optional unit: ms, s, m, h\)",
    ),
    (
        "timeout-negative",
        minimal(timeout=-5),
        "functions[resize].timeout",
        r"not a duration: -5\b",
    ),
    (
        "tenant-empty",
        minimal(tenant=""),
        "functions[resize].tenant",
        r"expected a non-empty string",
    ),
    (
        "env-not-a-mapping",
        minimal(env=["A=1"]),
        "functions[resize].env",
        r"expected a mapping of keys to values, got list",
    ),
    (
        "env-null-value",
        minimal(env={"A": None}),
        "functions[resize].env.A",
        r"environment values are text; quote it, got nothing",
    ),
    (
        "platform-not-a-mapping",
        {**minimal(), "platform": [1]},
        "platform",
        r"expected a mapping of keys to values, got list",
    ),
    (
        "platform-unknown-key",
        with_platform(prot=80),
        "platform",
        r"unknown key 'prot' \(did you mean 'port'\?\)",
    ),
    ("port-too-big", with_platform(port=70000), "platform.port", r"must be from 0 to 65535"),
    ("port-negative", with_platform(port=-1), "platform.port", r"must be from 0 to 65535, got -1"),
    ("port-bool", with_platform(port=False), "platform.port", r"expected a whole number"),
    (
        "queue-depth-zero",
        with_platform(queue_depth=0),
        "platform.queue_depth",
        r"must be at least 1, got 0",
    ),
    ("host-empty", with_platform(host=""), "platform.host", r"expected a non-empty string"),
    (
        "key-file-not-a-string",
        with_platform(key_file=7),
        "platform.key_file",
        r"expected a non-empty string, got int 7",
    ),
    (
        "size-bad",
        with_platform(inline_limit="6 megs"),
        "platform.inline_limit",
        r"not a size: '6 megs' \(e.g. 6MiB, 1GiB\)",
    ),
    (
        "size-bool",
        with_platform(object_quota=True),
        "platform.object_quota",
        r"not a size: True",
    ),
    (
        "size-float",
        with_platform(object_quota=1.5),
        "platform.object_quota",
        r"not a size: 1.5",
    ),
    (
        "drain-timeout-bad",
        with_platform(drain_timeout="soon"),
        "platform.drain_timeout",
        r"not a duration: 'soon'",
    ),
    (
        "autoscaler-not-a-mapping",
        with_platform(autoscaler="fast"),
        "platform.autoscaler",
        r"expected a mapping of keys to values, got str 'fast'",
    ),
    (
        "autoscaler-unknown-key",
        with_autoscaler(stable_windw="6s"),
        "platform.autoscaler",
        r"unknown key 'stable_windw' \(did you mean 'stable_window'\?\)",
    ),
    (
        "stable-window-bad-duration",
        with_autoscaler(stable_window="6 sec"),
        "platform.autoscaler.stable_window",
        r"not a duration: '6 sec'",
    ),
    (
        "bucket-size-negative",
        with_autoscaler(bucket_size=-1),
        "platform.autoscaler.bucket_size",
        r"not a duration: -1\b",
    ),
    (
        "enable-scale-to-zero-not-bool",
        with_autoscaler(enable_scale_to_zero="yes"),
        "platform.autoscaler.enable_scale_to_zero",
        r"write true or false, not 'yes'",
    ),
    (
        "initial-scale-negative",
        with_autoscaler(initial_scale=-1),
        "platform.autoscaler.initial_scale",
        r"must be at least 0, got -1",
    ),
    (
        "initial-scale-float",
        with_autoscaler(initial_scale=1.0),
        "platform.autoscaler.initial_scale",
        r"expected a whole number, got float 1.0",
    ),
    (
        "percentage-not-a-number",
        with_autoscaler(target_utilization_percentage="70%"),
        "platform.autoscaler.target_utilization_percentage",
        r"expected a number, got str '70%'",
    ),
    (
        "rate-bool",
        with_autoscaler(max_scale_up_rate=True),
        "platform.autoscaler.max_scale_up_rate",
        r"expected a number, got bool True",
    ),
    # Values that parse but that AutoscalerConfig.__post_init__ rejects.
    (
        "stable-window-zero",
        with_autoscaler(stable_window="0s"),
        "platform.autoscaler",
        r"stable_window must be a positive number of seconds \(got 0.0\)",
    ),
    (
        "scale-up-rate-one",
        with_autoscaler(max_scale_up_rate=1),
        "platform.autoscaler",
        r"max_scale_up_rate must be greater than 1 \(got 1.0\)",
    ),
    (
        "panic-window-over-100",
        with_autoscaler(panic_window_percentage=150),
        "platform.autoscaler",
        r"panic_window_percentage must be in \(0, 100\] \(got 150.0\)",
    ),
    (
        "target-utilization-zero",
        with_autoscaler(target_utilization_percentage=0),
        "platform.autoscaler",
        r"target_utilization_percentage must be in \(0, 100\]",
    ),
    (
        "burst-capacity-minus-two",
        with_autoscaler(target_burst_capacity=-2),
        "platform.autoscaler",
        r"target_burst_capacity must be at least 0, or -1",
    ),
    (
        "activator-capacity-below-one",
        with_autoscaler(activator_capacity=0.5),
        "platform.autoscaler",
        r"activator_capacity must be at least 1 \(got 0.5\)",
    ),
    (
        "target-too-small",
        with_autoscaler(container_concurrency_target_default=0.01),
        "platform.autoscaler",
        r"gives a target of 0.007 concurrent requests; it must be at least 0.01",
    ),
    (
        "nan-rate",
        with_autoscaler(max_scale_down_rate=float("nan")),
        "platform.autoscaler",
        r"max_scale_down_rate must be greater than 1 \(got nan\)",
    ),
    (
        "memory-limit-too-small",
        {"functions": [{"name": "f", "handler": "m:f", "memory_limit": "16MiB"}]},
        "functions[f].memory_limit",
        r"must be at least 64 MiB \(67108864 bytes\), got '16MiB'",
    ),
    (
        "memory-below-lambda",
        {"functions": [{"name": "f", "handler": "m:f", "memory": "64MiB"}]},
        "functions[f].memory",
        r"must be at least 128 MiB \(134217728 bytes\), got '64MiB'",
    ),
    (
        "memory-above-lambda",
        {"functions": [{"name": "f", "handler": "m:f", "memory": "11GiB"}]},
        "functions[f].memory",
        r"must be at most 10 GiB \(10737418240 bytes\), got '11GiB'",
    ),
    (
        "memory-a-bool",
        {"functions": [{"name": "f", "handler": "m:f", "memory": True}]},
        "functions[f].memory",
        r"not a size: True",
    ),
    (
        "memory-not-a-size",
        {"functions": [{"name": "f", "handler": "m:f", "memory": "lots"}]},
        "functions[f].memory",
        r"not a size: 'lots'",
    ),
    (
        "isolation-unknown",
        with_platform(isolation="strict"),
        "platform.isolation",
        r"'strict' is not an isolation setting: auto .* on .* or off",
    ),
    ("hosts-too-many", with_platform(hosts=101), "platform.hosts", r"from 0 to 100, got 101"),
    ("hosts-not-a-number", with_platform(hosts="3"), "platform.hosts", r"whole number"),
    (
        "store-host-without-hosts",
        with_platform(store_host=True),
        "platform.store_host",
        r"needs platform.hosts",
    ),
    ("link-without-hosts", with_platform(link={"rate": "1gbit"}), "platform.link", r"needs"),
    (
        "link-rate-bad",
        with_platform(hosts=2, link={"rate": "fast"}),
        "platform.link.rate",
        r"not a rate: 'fast' \(write e.g. 10gbit",
    ),
    (
        "link-unknown-key",
        with_platform(hosts=2, link={"latency": "1ms"}),
        "platform.link",
        r"unknown key 'latency'",
    ),
    (
        "host-without-hosts",
        minimal(host=2),
        "functions[resize].host",
        r"2 is not a host: platform.hosts is not set",
    ),
    (
        "host-beyond-hosts",
        {**with_platform(hosts=2), "functions": [{"name": "f", "handler": "m:f", "host": [1, 3]}]},
        "functions[f].host",
        r"3 is not a host: platform.hosts makes hosts 1 to 2",
    ),
    ("host-zero", minimal(host=0), "functions[resize].host", r"at least 1"),
    ("host-h0", minimal(host="h0"), "functions[resize].host", r"at least 1"),
    ("host-name", minimal(host="store"), "functions[resize].host", r"write h2 or 2 for host 2"),
    ("host-empty-list", minimal(host=[]), "functions[resize].host", r"name a host"),
]


@pytest.mark.parametrize(
    ("document", "where", "wrong"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_spec_names_the_field_and_the_problem(document: Any, where: str, wrong: str) -> None:
    original = copy.deepcopy(document)
    with pytest.raises(SpecError) as info:
        parse(document)
    message = str(info.value)
    assert message.startswith(f"{where}: "), message
    assert re.search(wrong, message), message
    assert document == original  # the document is not modified


def test_hosts_pins_and_links_parse() -> None:
    spec = parse(
        {
            "platform": {
                "hosts": 3,
                "store_host": True,
                "link": {"rate": "2.5Gbit/s", "delay": "1ms"},
            },
            "functions": [
                {"name": "a", "handler": "m:f", "host": 2},
                {"name": "b", "handler": "m:f", "host": ["h1", 3]},
                {"name": "c", "handler": "m:f"},
            ],
        }
    )
    assert (spec.platform.hosts, spec.platform.store_host) == (3, True)
    assert spec.platform.link == Link(rate=2_500_000_000, delay=0.001)
    assert [f.host for f in spec.functions] == [(2,), (1, 3), ()]
    assert (DEFAULT_PLATFORM_SPEC.hosts, DEFAULT_PLATFORM_SPEC.link) == (0, None)


@pytest.mark.parametrize("key", ["inline_limit", "object_quota"])
def test_negative_size_is_rejected(key: str) -> None:
    with pytest.raises(SpecError, match=re.escape(f"platform.{key}: ")):
        parse(with_platform(**{key: -1}))


def test_errors_are_reported_in_document_order() -> None:
    """The first bad function is the one named, even if a later one is bad too."""
    document = two(
        {"name": "first", "handler": "m:f", "concurrency": -1},
        {"name": "second", "handler": "bad"},
    )
    with pytest.raises(SpecError, match=re.escape("functions[first].concurrency")):
        parse(document)


def test_spec_error_is_an_xdt_error() -> None:
    from xdt import XdtError

    assert issubclass(SpecError, XdtError)


@pytest.mark.parametrize(
    "text",
    [
        "functions: [{name: a, handler: 'm:f', timeout: .nan}]",
        "{platform: {drain_timeout: .nan}, functions: [{name: a, handler: 'm:f'}]}",
    ],
    ids=["timeout", "drain_timeout"],
)
def test_nan_duration_is_rejected(text: str) -> None:
    with pytest.raises(SpecError, match="not a duration: nan"):
        parse(yaml.safe_load(text))


@pytest.mark.parametrize(
    ("written", "setting"),
    [("", "auto"), ("isolation: auto", "auto"), ("isolation: on", "on"),
     ("isolation: off", "off"), ("isolation: 'on'", "on"), ("isolation: false", "off")],
)  # fmt: skip
def test_isolation_takes_yaml_bare_on_and_off(written: str, setting: str) -> None:
    # YAML 1.1 reads a bare on/off as a boolean: it still means the setting.
    document = yaml.safe_load(f"platform: {{{written}}}\nfunctions: [{{name: a, handler: 'm:f'}}]")
    assert parse(document).platform.isolation == setting


def test_the_platforms_transfer_overrides_every_functions() -> None:
    spec = parse(
        {
            "platform": {"transfer": "s3", "xdt_threshold": "1KiB", "object_ttl": "5s"},
            "functions": [
                {"name": "a", "handler": "m:a", "transfer": "elasticache"},
                {"name": "b", "handler": "m:b"},
            ],
        }
    )
    a, b = spec.functions
    assert spec.mode_of(a) is spec.mode_of(b) is TransferMode.S3
    assert spec.modes() == {TransferMode.S3}
    settings = spec.transfer_of(a)
    assert (settings.mode, settings.xdt_threshold, settings.object_ttl) == (
        TransferMode.S3,
        1024,
        5.0,
    )
    assert settings.inline_limit == spec.platform.inline_limit


def test_a_functions_own_transfer_stands_without_an_override() -> None:
    spec = parse({"functions": [{"name": "a", "handler": "m:a", "transfer": "inline"}]})
    assert spec.mode_of(spec.functions[0]) is TransferMode.INLINE
    assert spec.transfer_of(spec.functions[0]).inline_up_to == spec.platform.inline_limit


def test_a_spec_with_secrets_readable_by_others_is_warned_about(tmp_path: Path) -> None:
    from xdt.platform.spec import exposed_secrets, load_spec

    path = tmp_path / "xdt.yaml"
    path.write_text(
        "platform: {redis_url: 'redis://:hunter2@127.0.0.1:6379/0'}\n"
        "functions: [{name: f, handler: 'm:f', env: {TOKEN: abc}}]\n"
    )
    path.chmod(0o644)
    warning = exposed_secrets(path, load_spec(path))
    assert warning is not None and "mode 0644" in warning and "chmod 600" in warning
    assert "env values of f" in warning and "a password in redis_url" in warning
    assert "hunter2" not in warning and "abc" not in warning
    path.chmod(0o600)
    assert exposed_secrets(path, load_spec(path)) is None
    plain = tmp_path / "plain.yaml"
    plain.write_text("functions: [{name: f, handler: 'm:f'}]\n")
    plain.chmod(0o644)
    assert exposed_secrets(plain, load_spec(plain)) is None  # nothing secret in it


def test_keep_warm_is_a_duration_that_reaches_every_sidecar() -> None:
    spec = parse({"platform": {"keep_warm": "3s"}, "functions": [{"name": "a", "handler": "m:a"}]})
    assert spec.platform.keep_warm == 3.0
    assert parse({"functions": [{"name": "a", "handler": "m:a"}]}).platform.keep_warm == 30.0
    with pytest.raises(SpecError, match=r"platform\.keep_warm"):
        parse({"platform": {"keep_warm": "0s"}, "functions": [{"name": "a", "handler": "m:a"}]})


def test_error_detail_is_full_or_message() -> None:
    functions = [{"name": "a", "handler": "m:a"}]
    assert parse({"functions": functions}).platform.error_detail == "full"
    spec = parse({"platform": {"error_detail": "message"}, "functions": functions})
    assert spec.platform.error_detail == "message"
    with pytest.raises(SpecError, match=r"platform\.error_detail: 'some' is not one of: full"):
        parse({"platform": {"error_detail": "some"}, "functions": functions})


def test_ready_timeout_is_a_positive_duration_per_function() -> None:
    spec = parse({"functions": [{"name": "a", "handler": "m:a", "ready_timeout": "90s"}]})
    assert spec.functions[0].ready_timeout == 90.0
    assert parse({"functions": [{"name": "a", "handler": "m:a"}]}).functions[0].ready_timeout == 30
    with pytest.raises(SpecError, match=r"functions\[a\]\.ready_timeout: must be more than 0"):
        parse({"functions": [{"name": "a", "handler": "m:a", "ready_timeout": 0}]})
