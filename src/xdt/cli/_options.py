"""Options several commands share, and how they reach a running platform."""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from typing import Any

__all__ = [
    "DEFAULT_URL",
    "EXIT_UNREACHABLE",
    "CommandError",
    "add_url_option",
    "get_json",
    "platform_url",
]

DEFAULT_URL = os.environ.get("XDT_URL", "http://127.0.0.1:8080")
EXIT_UNREACHABLE = 3  # no platform answered at the URL (see xdt invoke's exit codes)


class CommandError(Exception):
    """What a command prints as ``error: …`` before it exits with ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def platform_url(text: str) -> str:
    """``--url`` as given (``http://host:port``, or just ``host:port`` or ``:port``) as a URL."""
    text = text.strip().rstrip("/")
    if "://" not in text:
        text = f"http://{'127.0.0.1' if text.startswith(':') else ''}{text}"
    return text


def add_url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        type=platform_url,
        default=platform_url(DEFAULT_URL),
        help=f"the platform: http://host:port or host:port (default $XDT_URL, else {DEFAULT_URL})",
    )


def get_json(url: str, path: str, timeout: float = 10.0) -> Any:
    """``GET url+path`` as JSON; a :class:`CommandError` that tells no platform from a slow
    one from a bad answer."""
    try:
        with urllib.request.urlopen(f"{url}{path}", timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise CommandError(f"the platform at {url} answered {path} with HTTP {exc.code}") from None
    except ValueError as exc:  # a bad URL, or an answer that is not JSON
        raise CommandError(f"{url}{path}: {exc}", code=2) from None
    except TimeoutError:
        raise CommandError(
            f"the platform at {url} did not answer within {timeout:g} s (it is there, but busy)",
            code=4,
        ) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise CommandError(
                f"the platform at {url} did not answer within {timeout:g} s", code=4
            ) from None
        raise CommandError(
            f"no platform answering at {url} ({exc.reason}): start one with `xdt up -f "
            "xdt.yaml`, or name it with --url or XDT_URL",
            code=EXIT_UNREACHABLE,
        ) from None
