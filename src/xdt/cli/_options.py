"""Options several commands share."""

from __future__ import annotations

import argparse
import os

__all__ = ["DEFAULT_URL", "add_url_option"]

DEFAULT_URL = os.environ.get("XDT_URL", "http://127.0.0.1:8080")


def add_url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the platform (default {DEFAULT_URL})")
