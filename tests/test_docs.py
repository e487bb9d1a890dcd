"""The docs' claims point at tests that exist: every ``tests/…py::name`` and every
``tests/…py`` that docs/security.md and docs/reliability.md cite is there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("doc", "at_least"), [("security.md", 20), ("reliability.md", 6)])
def test_every_test_the_docs_cite_exists(doc: str, at_least: int) -> None:
    """``tests/x.py``, ``tests/x.py::test_name``, or a bare ``test_name`` found in some test
    file."""
    text = (ROOT / "docs" / doc).read_text()
    cited = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?", text)
    bare = set(re.findall(r"`(test_\w+)`", text))
    assert len(cited) + len(bare) > at_least
    missing = []
    for path, name in cited:
        source = ROOT / path
        if not source.is_file():
            missing.append(path)
        elif name and not re.search(rf"def {name}\(", source.read_text()):
            missing.append(f"{path}::{name}")
    everything = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    missing += [name for name in bare if not re.search(rf"def {name}\(", everything)]
    assert not missing, f"docs/{doc} cites tests that do not exist: {missing}"
