"""What a function on a test host (platform.hosts) tries that it may not."""

from __future__ import annotations

import urllib.error
import urllib.request


def upload_to(body: bytes) -> bytes:
    """POST to the gateway's /objects at the URL given (its side for the hosts): the status."""
    request = urllib.request.Request(f"{body.decode()}/objects?tenant=default", data=b"x" * 64)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return str(answer.status).encode()
    except urllib.error.HTTPError as error:
        return str(error.code).encode()
    except OSError as error:
        return f"unreachable: {error}".encode()


async def relay(body: bytes) -> bytes:
    """Sends a payload made from the order to `digest`: by the function's transfer mode."""
    import json

    from patterns import make

    import xdt

    order = json.loads(body)
    return await xdt.invoke("digest", make(order["size"], order["seed"]))
