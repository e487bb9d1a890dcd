"""What a function name may be: a DNS label, as Knative's service names."""

from __future__ import annotations

import re

__all__ = ["FUNCTION_NAME", "is_function_name"]

FUNCTION_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def is_function_name(text: str) -> bool:
    return FUNCTION_NAME.fullmatch(text) is not None
