"""What a function name may be (a DNS label, as Knative's service names), and how an address
is written in a URL."""

from __future__ import annotations

import re

__all__ = ["FUNCTION_NAME", "http_url", "is_function_name", "netloc"]

FUNCTION_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def is_function_name(text: str) -> bool:
    return FUNCTION_NAME.fullmatch(text) is not None


def netloc(host: str, port: int | None = None) -> str:
    """``host:port`` as a URL or a Host header writes it: an IPv6 host in brackets
    (``[::1]:8080``); the host alone when ``port`` is None."""
    named = f"[{host}]" if ":" in host else host
    return named if port is None else f"{named}:{port}"


def http_url(host: str, port: int) -> str:
    """``http://host:port``, an IPv6 host in brackets (``http://[::1]:8080``)."""
    return f"http://{netloc(host, port)}"
