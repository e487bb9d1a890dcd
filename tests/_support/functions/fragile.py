"""A function that starts fine until a marker file appears beside it, then never again."""

import os
import sys

if os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fragile.broken")):
    print("fragile: cannot start, its configuration is broken", file=sys.stderr, flush=True)
    sys.exit(3)


def handler(body: bytes) -> bytes:
    if body == b"die":
        os._exit(1)
    return b"fine"
