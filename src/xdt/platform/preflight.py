"""What ``xdt up`` checks before anything starts: every function can be started at all.

A function that cannot start would otherwise become a crash loop that says little, with
requests buffered for it. Here, before a store or sidecar starts:

- a ``command:`` whose program does not exist says "not found" (with the PATH it was looked
  up on), not the ``Permission denied`` or ``No such file`` of a failed exec;
- a Python function's handler is imported once, in a process as its own will be — under its
  uid, in its sandbox, with its environment (:func:`.instances.check_import`): a missing
  module, a ``SyntaxError`` or a missing dependency is refused with Python's own words.

That an isolated function's uid can read its files is :func:`.isolation.check_reachable`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from .._core.errors import SpecError
from .instances import check_import, function_env
from .isolation import Identity
from .spec import FunctionSpec

__all__ = ["check_command", "check_functions"]


def check_command(function: FunctionSpec) -> None:
    """Raises :class:`SpecError` when a ``command:``'s program does not exist."""
    if function.command is None:
        return
    name = function.command[0]
    where = f"functions[{function.name}].command"
    if "/" in name:
        program = function.folder / name
        if not program.exists():
            raise SpecError(f"{where}: {name!r} not found (looked for {program})")
        return
    path = function_env(function).get("PATH", os.defpath)
    if shutil.which(name, path=path) is None:
        raise SpecError(
            f"{where}: {name!r} not found on PATH={path}: install it, name it by its full "
            "path, or set the function's env: PATH"
        )


async def check_functions(
    functions: Sequence[FunctionSpec],
    identities: Mapping[str, Identity] | None,
    *,
    sandboxed: bool,
    run_dir: Path,
) -> None:
    """Every check above, for every function; the first failure is raised."""
    for function in functions:
        check_command(function)
    await asyncio.gather(
        *(
            check_import(
                f,
                identities.get(f.name) if identities else None,
                sandboxed=sandboxed,
                run_dir=run_dir,
            )
            for f in functions
            if f.handler is not None
        )
    )
