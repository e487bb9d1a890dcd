"""The tree shows the architecture, and this keeps it so: each layer imports only those below
it (see the map in ``xdt/__init__``), and the processes that run function code load only what
they need."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import xdt

SOURCE = Path(xdt.__file__).parent

# Lowest first. Packages of one rank do not import each other.
LAYERS = [
    {"_util"},
    {"_core"},
    {"pull", "channel", "_http"},
    {"modes"},
    {"sidecar", "runtime", "sdk", "client"},
    {"platform"},
    {"testing", "apps", "knative"},  # xdt up as a child process; the workflows; Knative
    {"bench"},
    {"cli"},
]
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}


def imports_of(path: Path) -> set[str]:
    """The top-level xdt packages a module imports (relative imports resolved)."""
    module = path.relative_to(SOURCE).with_suffix("").parts
    package = module[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                target = base + (node.module.split(".") if node.module else [])
                names = [alias.name for alias in node.names] if not target else []
                found.update(target[:1] or names)
            elif node.module and node.module.split(".")[0] == "xdt":
                found.update(node.module.split(".")[1:2])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "xdt" and len(parts) > 1:
                    found.add(parts[1])
    return found


MODULES = sorted(p for p in SOURCE.rglob("*.py") if p.relative_to(SOURCE).parts[0] in RANK)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SOURCE)))
def test_a_module_imports_only_layers_below_its_own(path: Path) -> None:
    own = path.relative_to(SOURCE).parts[0].removesuffix(".py")
    for imported in imports_of(path) - {own}:
        if imported == "__init__" or imported not in RANK:
            assert own in ("cli",) and imported == "__version__", (
                f"{own} imports the package root for {imported!r}"
            )
            continue
        assert RANK[imported] < RANK[own], f"{path.relative_to(SOURCE)} imports {imported}"


def test_every_package_has_a_layer() -> None:
    packages = {p.name.removesuffix(".py") for p in SOURCE.iterdir() if not p.name.startswith(".")}
    # examples/: the demo's functions, shipped as files (not imported by xdt)
    shipped = {"__init__", "__main__", "__pycache__", "py.typed", "examples"}
    assert packages - shipped == set(RANK)


def loaded_by(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_the_function_runtime_loads_no_aead_object_server_or_http() -> None:
    loaded = loaded_by("import xdt.runtime")
    assert not {"cryptography", "xdt.pull", "xdt._core.refs", "aiohttp"} & loaded


def test_the_blocking_sdk_loads_no_event_loop_http_stack() -> None:
    loaded = loaded_by("from xdt import sync")
    assert not {"aiohttp", "xdt.pull", "cryptography"} & loaded


def test_the_public_api_still_answers_every_name() -> None:
    for name in xdt.__all__:
        assert getattr(xdt, name) is not None
