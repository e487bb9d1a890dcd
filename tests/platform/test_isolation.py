"""Function isolation (``xdt.platform.isolation``): the setting, uids, the readability check,
and end to end: `xdt up` as root runs each function under a uid of its own, and what one
function can reach of another's — sockets, egress, processes, the embedded Redis — is refused,
while its own calls work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from patterns import describe, make  # tests/_support/functions (see conftest.py)

from _support.platform import FUNCTIONS, RunningPlatform
from _support.users import STDLIB_PYTHON, as_user, venv_reachable_by_others
from xdt import IsolationError, SpecError
from xdt._util import procfs
from xdt._util.polling import until_sync
from xdt.platform.isolation import (
    UID_BASE,
    UID_SPAN,
    Identity,
    allocate,
    check_reachable,
    isolation_wanted,
    mapped,
)
from xdt.platform.sandbox import available
from xdt.platform.spec import FunctionSpec, PlatformSpec
from xdt.testing import LaunchedPlatform

Start = Callable[[dict[str, Any]], RunningPlatform]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="isolating functions needs root")
SOMEONE = Identity(UID_BASE + 12345, UID_BASE + 12345)  # owns nothing here

# -- the setting and the uids ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "euid", "isolated"),
    [("auto", 0, True), ("auto", 1000, False), ("on", 0, True), ("off", 0, False),
     ("off", 1000, False)],
)  # fmt: skip
def test_auto_isolates_when_root_and_off_never(setting: str, euid: int, isolated: bool) -> None:
    assert isolation_wanted(PlatformSpec(isolation=setting), euid=euid) is isolated


def test_isolation_on_without_root_is_a_spec_error_that_says_what_to_do() -> None:
    with pytest.raises(SpecError) as info:
        isolation_wanted(PlatformSpec(isolation="on"), euid=1000)
    message = str(info.value)
    assert message.startswith("platform.isolation: on")
    assert "needs root, and xdt up runs as uid 1000" in message
    assert "isolation: auto" in message and "off" in message


def test_each_function_and_tenant_gets_its_own_uid_from_the_range() -> None:
    functions = [FunctionSpec(name=f"f{i}", handler="m:f") for i in range(50)]
    functions.append(FunctionSpec(name="f0-elsewhere", handler="m:f", tenant="another"))
    identities = allocate(functions, salt=b"s" * 16)
    uids = [identity.uid for identity in identities.values()]
    assert len(set(uids)) == len(functions)
    assert all(UID_BASE <= uid < UID_BASE + UID_SPAN for uid in uids)
    assert all(identity.gid == identity.uid for identity in identities.values())
    assert allocate(functions, salt=b"s" * 16) == identities  # keyed by the salt
    same_name = [FunctionSpec(name="f0", handler="m:f", tenant="another")]
    assert allocate(same_name, salt=b"s" * 16)["f0"] != identities["f0"]


@pytest.mark.parametrize(
    ("mapping", "usable"),
    [("0 0 4294967295", True), ("0 1000 1\n1 100000 65536", False),
     ("0 0 65536\n2000000000 3000000000 16777216", True),
     ("2000000000 3000000000 16777215", False)],
    ids=["host", "rootless", "mapped-range", "one-short"],
)  # fmt: skip
def test_the_uid_range_must_be_mapped_in_the_user_namespace(mapping: str, usable: bool) -> None:
    assert mapped(UID_BASE, UID_SPAN, mapping) is usable


@needs_root
def test_a_uid_a_running_process_holds_is_not_handed_out() -> None:
    function = [FunctionSpec(name="busy", handler="m:f")]
    first = allocate(function, salt=b"t" * 16)["busy"]
    holder = subprocess.Popen(
        [STDLIB_PYTHON, "-c", "import time; time.sleep(60)"],
        user=first.uid, group=first.gid, extra_groups=[],
    )  # fmt: skip
    try:
        second = allocate(function, salt=b"t" * 16)["busy"]
    finally:
        holder.kill()
        holder.wait()
    assert second != first and UID_BASE <= second.uid < UID_BASE + UID_SPAN


# -- what the function's uid must be able to read ----------------------------------------------


def test_a_readable_handler_passes_the_check(shared_path: Path) -> None:
    (shared_path / "fns.py").write_text("def f(body): return body\n")
    (shared_path / "fns.py").chmod(0o644)
    function = FunctionSpec(name="f", handler="fns:f", folder=shared_path)
    check_reachable(function, SOMEONE, sandboxed=True)  # what is bound in: the paths alone
    if not venv_reachable_by_others():
        with pytest.raises(IsolationError, match="the Python that runs handlers"):
            check_reachable(function, SOMEONE)  # without the sandbox, the folders above count
    else:
        check_reachable(function, SOMEONE)


def test_a_folder_behind_a_closed_one_is_named_with_what_to_do(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    (closed / "app").mkdir(parents=True, mode=0o755)
    closed.chmod(0o700)
    function = FunctionSpec(name="f", handler="fns:f", folder=closed / "app")
    with pytest.raises(IsolationError) as info:
        check_reachable(function, SOMEONE)
    message = str(info.value)
    assert message.startswith(f"functions[f]: its folder, {closed / 'app'}, is not readable")
    assert f"uid {SOMEONE.uid}" in message
    blocking = next(p for p in [*reversed(closed.parents), closed] if not p.stat().st_mode & 1)
    assert f": {blocking} is mode" in message and "platform.isolation: off" in message


def test_an_unreadable_module_or_command_is_named(shared_path: Path) -> None:
    (shared_path / "pkg").mkdir(mode=0o755)
    (shared_path / "pkg" / "secret.py").write_text("def f(body): return body\n")
    (shared_path / "pkg" / "secret.py").chmod(0o600)
    with pytest.raises(IsolationError, match=r"its handler's module, .*secret\.py, .* mode 0600"):
        check_reachable(FunctionSpec(name="f", handler="pkg.secret:f", folder=shared_path), SOMEONE)
    (shared_path / "serve").write_text("#!/bin/sh\n")
    (shared_path / "serve").chmod(0o700)
    with pytest.raises(IsolationError, match=r"its command, .*serve, .* mode 0700"):
        check_reachable(FunctionSpec(name="f", command=("./serve",), folder=shared_path), SOMEONE)
    (shared_path / "data.txt").write_text("private")
    (shared_path / "data.txt").chmod(0o640)
    command = (STDLIB_PYTHON, "data.txt")
    with pytest.raises(IsolationError, match=r"a file its command names, .*data\.txt"):
        check_reachable(FunctionSpec(name="f", command=command, folder=shared_path), SOMEONE)


# -- end to end --------------------------------------------------------------------------------


def _instances(platform: RunningPlatform, function: str) -> list[dict[str, Any]]:
    instances: list[dict[str, Any]] = platform.wait_for(
        lambda s: s["functions"][function]["ready"] >= 1, what=f"{function} ready"
    )["functions"][function]["instances"]
    return instances


def _run_dir(instance: dict[str, Any]) -> Path:
    return Path(instance["log"]).parent.parent


def _uid_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("Uid:")))


def _function_uid(pid: int) -> int:
    """The uid the function's code runs under: the process's own, or, sandboxed, that of the
    process bwrap started for it (bwrap itself is root's, to make the sandbox)."""
    uids = {_uid_of(p) for p in procfs.descendants(pid) if procfs.ids_of(p) is not None}
    return next(iter(uids - {0}), 0) if len(uids - {0}) <= 1 else -1


@needs_root
def test_each_function_runs_under_its_own_uid_with_a_private_home(start_platform: Start) -> None:
    platform = start_platform(
        {
            "functions": [
                {"name": "who-a", "handler": "fns:identity", "min_scale": 2, "initial_scale": 2},
                {"name": "who-b", "handler": "fns:identity", "tenant": "another"},
                {"name": "legacy", "command": [sys.executable, "legacy_server.py"]},
                {"name": "third", "handler": "fns:third"},
            ]
        }
    )
    status, _, body = platform.invoke("who-a")
    assert status == 200, body
    a = json.loads(body)
    b = json.loads(platform.invoke("who-b")[2])

    for seen in (a, b):
        assert UID_BASE <= seen["uid"] < UID_BASE + UID_SPAN
        assert seen["euid"] == seen["uid"] and seen["gid"] == seen["uid"]
        assert seen["groups"] == []  # no supplementary groups
        assert seen["no_new_privs"] == "1"
        for folder in seen["folders"].values():  # HOME and TMPDIR: its own, and only its own
            assert (folder["mode"], folder["owner"]) == (0o700, seen["uid"])
    assert a["uid"] != b["uid"]

    # Every instance of a function shares its uid; a command function gets one too.
    platform.wait_for(lambda s: s["functions"]["who-a"]["ready"] == 2, what="two instances")
    instances = _instances(platform, "who-a")
    assert {_function_uid(i["function_pid"]) for i in instances} == {a["uid"]}
    assert {i["uid"] for i in instances} == {a["uid"]}
    (legacy,) = _instances(platform, "legacy")
    assert _function_uid(legacy["function_pid"]) not in (0, -1, a["uid"], b["uid"])
    assert _uid_of(legacy["sidecar_pid"]) == 0  # sidecars stay the platform's
    assert platform.invoke("legacy", b"x")[::2] == (200, b"legacy(third(x))")
    assert platform.status()["isolation"] is True

    # The private folders live in the run folder, which others may search but not list, and
    # they go with their instances.
    homes = [Path(seen["folders"]["HOME"]["path"]) for seen in (a, b)]
    run_dir = _run_dir(instances[0])
    assert all(run_dir in home.parents for home in homes)
    assert os.stat(run_dir).st_mode & 0o777 == 0o711
    assert os.stat(run_dir / "logs").st_mode & 0o777 == 0o700
    platform.stop()
    assert not any(home.exists() for home in homes)


@needs_root
@pytest.mark.parametrize("sandbox", ["off", "on"])
def test_a_function_cannot_reach_another_ones_sockets_processes_or_redis(
    start_platform: Start, sandbox: str
) -> None:
    """Without the sandbox, file modes keep a function from connecting to others' sockets,
    and SO_PEERCRED checks from being served even when the modes are opened wide; in the
    sandbox (the default, with bwrap) none of them is even in its file system."""
    if sandbox == "on" and available() is None:
        pytest.skip("the sandbox needs bwrap (Debian's bubblewrap): make test installs it")
    if sandbox == "off" and not venv_reachable_by_others():
        pytest.skip("this checkout's venv is behind a private folder: only sandboxed functions run")
    platform = start_platform(
        {
            "platform": {"sandbox": sandbox},
            "functions": [
                {"name": "probe", "handler": "fns:probe"},
                {"name": "victim", "handler": "fns:upper"},
                {"name": "upper", "handler": "fns:upper"},
                # elasticache with no redis_url: xdt up starts a Redis of its own
                {"name": "digest", "handler": "patterns:digest", "transfer": "elasticache"},
                {"name": "one-to-one", "handler": "patterns:one_to_one",
                 "transfer": "elasticache"},
                {"name": "produce", "handler": "patterns:produce", "transfer": "elasticache"},
            ]
        }
    )  # fmt: skip
    (victim,) = _instances(platform, "victim")
    run_dir, number = _run_dir(victim), victim["id"].rpartition("-")[2]
    private = run_dir / number
    sockets = {
        "in": ("in", str(run_dir / f"{number}.in.sock")),
        "out": ("out", str(run_dir / f"{number}.out.sock")),
        "runtime": ("runtime", str(private / "runtime.sock")),
    }
    (redis,) = [s for s in platform.status()["stores"] if s.startswith("redis-server")]
    order = {"unix": sockets, "redis_port": int(redis.rsplit(":", 1)[1]), "pid": 0}
    order["pid"] = victim["function_pid"]

    def probe() -> dict[str, Any]:
        status, _, body = platform.invoke("probe", json.dumps(order).encode())
        assert status == 200, body
        answer: dict[str, Any] = json.loads(body)
        return answer

    seen = probe()
    if sandbox == "on":  # not in its world at all: not the sockets, not the processes
        assert (seen["in"], seen["out"], seen["runtime"]) == ("refused: ENOENT",) * 3
        assert seen["environ"] == "FileNotFoundError" and seen["signal"] == "ProcessLookupError"
    else:
        # File modes keep it from even connecting: the sockets are root's (the egress's
        # group is the victim's own), the runtime's is in the victim's private folder.
        assert (seen["in"], seen["out"], seen["runtime"]) == ("refused: EACCES",) * 3
        # Another uid's process: its environment is unreadable, signals are refused.
        assert (seen["environ"], seen["signal"]) == ("PermissionError", "PermissionError")
    assert seen["own-out"] == "answered"  # its own egress socket serves it
    # The TCP egress answers only under the secret path in the function's own $XDT_EGRESS.
    for case in ("egress-no-secret", "egress-wrong-secret"):
        status, text = seen[case]
        assert status == 403 and "secret path in $XDT_EGRESS" in text, seen[case]
    assert seen["egress-own"] == [200, "PROBE"]
    # Redis wants its password, which no function process has.
    assert seen["redis"].startswith("-NOAUTH")
    assert not any("redis://" in value for value in seen["environment"].values())
    if sandbox == "on":
        return  # the inner lock below cannot be reached through the sandbox to be tried

    # Even with the file modes opened wide, the peer checks (SO_PEERCRED) refuse it.
    private.chmod(0o711)
    for _, path in sockets.values():
        os.chmod(path, 0o666)
    seen = probe()
    assert (seen["in"], seen["out"], seen["runtime"]) == ("closed",) * 3, seen
    probe_uid = platform.status()["functions"]["probe"]["instances"][0]["uid"]
    wanted = [f"refused a connection to the {what} from pid" for what in
              ("ingress socket", "egress socket", "runtime socket")]  # fmt: skip
    wanted.append(f"uid {probe_uid}: only uid")

    def logged() -> bool:  # the refusing processes write their lines as they refuse
        log = Path(victim["log"]).read_text()
        return all(line in log for line in wanted)

    assert until_sync(logged, timeout=10), Path(victim["log"]).read_text()

    # Nothing refused got through, nothing broke: the victim and Redis still serve.
    assert platform.invoke("victim", b"still")[::2] == (200, b"STILL")
    expected = describe(make(1 << 20, 5))
    body = platform.invoke("one-to-one", json.dumps({"size": 1 << 20, "seed": 5}).encode())[2]
    assert json.loads(body) == [expected, expected]
    assert platform.function("victim")["requests"] == 1
    # The Redis password is on none of the platform's command lines (Redis's and the
    # sidecars' included), nor in a function's environment (above).
    lines = _command_lines(platform.process.pid)
    assert any("redis-server" in line.split()[0] for line in lines), lines
    assert not [line for line in lines if "requirepass" in line or "redis://" in line]


def _command_lines(root: int) -> list[str]:
    """The command lines of ``root``'s descendants."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, lines = {root}, []
    for _ in range(10):  # a few generations deep is plenty
        found |= {pid for pid, parent in parents.items() if parent in found}
    for pid in found - {root}:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                lines.append(cmdline.read().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return lines


@needs_root
def test_what_a_function_leaves_running_stops_with_the_platform(start_platform: Start) -> None:
    platform = start_platform({"functions": [{"name": "daemon", "handler": "fns:daemon"}]})
    status, _, body = platform.invoke("daemon")
    assert status == 200, body
    marker = body.decode()

    def left() -> list[int]:  # found by its command line: in a sandbox its pid is another
        return [p for p in procfs.pids() if marker in _command_line(p)]

    assert left()  # outside the function's process group: stopping the group misses it
    platform.stop()
    assert until_sync(lambda: not left(), timeout=10), left()


@needs_root
def test_isolation_off_runs_functions_as_the_platform(start_platform: Start) -> None:
    platform = start_platform(
        {
            "platform": {"isolation": False},  # YAML's bare `off`
            "functions": [
                {"name": "who", "handler": "fns:environment"},
                {"name": "hold", "handler": "fns:hold"},
            ],
        }
    )
    assert platform.status()["isolation"] is False
    (instance,) = _instances(platform, "who")
    assert _uid_of(instance["function_pid"]) == 0 and instance["uid"] is None
    status, _, reference = platform.invoke("hold", b"kept")  # its egress, with the secret path
    assert status == 200 and len(reference) > 20


def _up(spec: str, folder: Path, **options: Any) -> subprocess.CompletedProcess[str]:
    (folder / "xdt.yaml").write_text(spec)
    return subprocess.run(
        [sys.executable, "-m", "xdt", "up", "-f", str(folder / "xdt.yaml"), "--port", "0"],
        capture_output=True, text=True, timeout=60, cwd=folder,
        env={**os.environ, "COLUMNS": "300"}, **options,
    )  # fmt: skip


@needs_root
def test_a_function_folder_its_uid_cannot_read_is_a_clear_error(tmp_path: Path) -> None:
    # pytest's tmp_path is under /tmp/pytest-of-root, mode 0700: without the sandbox the
    # function's uid cannot pass it.
    folder = tmp_path / "app"
    folder.mkdir(mode=0o755)
    shutil.copy(FUNCTIONS / "fns.py", folder)
    spec = "platform: {sandbox: off}\nfunctions:\n  - {name: upper, handler: 'fns:upper'}\n"
    done = _up(spec, folder)
    assert done.returncode == 1, done.stdout
    output = " ".join(done.stdout.split())
    assert f"functions[upper]: its folder, {folder}, is not readable" in output
    blocking = next(p for p in reversed(folder.parents) if not os.stat(p).st_mode & 0o001)
    assert f"{blocking} is mode 0700" in output and "platform.isolation: off" in output
    assert "install bubblewrap" in output and "xdt is up" not in output


@needs_root
def test_in_the_sandbox_a_folder_behind_a_private_one_just_works(tmp_path: Path) -> None:
    """The sandbox binds the function's folder in: the private folders above it (a clone in
    /root, mktemp -d) do not matter; the folder itself must still let the uid in."""
    if available() is None:
        pytest.skip("the sandbox needs bwrap (Debian's bubblewrap): make test installs it")
    folder = tmp_path / "app"  # behind tmp_path's 0700
    folder.mkdir(mode=0o755)
    shutil.copy(FUNCTIONS / "fns.py", folder)
    (folder / "xdt.yaml").write_text("functions:\n  - {name: upper, handler: 'fns:upper'}\n")
    platform = LaunchedPlatform(folder / "xdt.yaml", tmp_path / "up.log")
    try:
        platform.wait_ready(timeout=60)
        assert platform.invoke("upper", b"boxed")[::2] == (200, b"BOXED")
        assert platform.status()["sandbox"] is True
    finally:
        platform.stop()
    folder.chmod(0o700)  # the folder itself closed: named, with what to do
    done = _up("functions:\n  - {name: upper, handler: 'fns:upper'}\n", folder)
    output = " ".join(done.stdout.split())
    assert done.returncode == 1 and f"{folder} is mode 0700" in output, output
    assert "Let that uid read it" in output


@needs_root
def test_isolation_on_without_root_is_refused_before_anything_starts(shared_path: Path) -> None:
    spec = "platform: {isolation: on}\nfunctions:\n  - {name: a, handler: 'fns:a'}\n"
    (shared_path / "xdt.yaml").write_text(spec)
    argv = [sys.executable, "-m", "xdt", "up", "-f", str(shared_path / "xdt.yaml"), "--port", "0"]
    done = subprocess.run(
        as_user(65534, argv, cwd=shared_path), capture_output=True, text=True, timeout=60,
        cwd=shared_path, env={**os.environ, "COLUMNS": "300"},
        **({} if available() else {"user": 65534, "group": 65534, "extra_groups": []}),
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    output = " ".join(done.stdout.split())
    assert "error in the spec: platform.isolation: on" in output
    assert "needs root, and xdt up runs as uid 65534" in output


@needs_root
def test_a_function_cannot_pull_another_tenants_object_by_speaking_the_protocol(
    start_platform: Start,
) -> None:
    """The attack that read another tenant's data: a hostile function that holds a reference of
    tenant 'bank' sends a hand-made PULL naming 'bank' straight to the bank's sidecar. Only a
    sidecar can prove it is one; the same-host socket is in a folder functions cannot enter."""
    platform = start_platform(
        {
            "functions": [
                {"name": "bank", "handler": "patterns:put_ref", "tenant": "bank"},
                {"name": "steal", "handler": "fns:steal", "tenant": "evil"},
            ]
        }
    )
    status, _, token = platform.invoke("bank", json.dumps({"size": 1 << 20, "seed": 7}).encode())
    assert status == 200
    (bank,) = _instances(platform, "bank")
    address = bank["objects_address"]
    private_socket = str(_run_dir(bank) / "objects" / f"{address}.sock")
    order = {"token": token.decode(), "tenant": "bank", "address": address,
             "private_socket": private_socket}  # fmt: skip
    status, _, body = platform.invoke("steal", json.dumps(order).encode())
    assert status == 200, body
    tried = json.loads(body)
    assert tried["tcp"] == "pull_refused"
    assert tried["abstract"] == "ConnectionRefusedError"  # sidecars bind no abstract name
    # The folder is the platform's alone (and, sandboxed, not in the function's world).
    assert tried["private"] in ("PermissionError", "FileNotFoundError")
    assert tried["sdk"] == "WrongTenant"
    platform.wait_for(  # the object is untouched, still there for its owner's receivers
        lambda s: s["functions"]["bank"]["objects"] == 1, what="bank to still hold its object"
    )


def _command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as line:
            return line.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
