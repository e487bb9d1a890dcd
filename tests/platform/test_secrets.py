"""No secret in any error text: every error a hostile function can provoke, every error an
outside client gets, and everything the platform and its instances log, is searched for the
store's password and the key ring.

The Redis password was once in Redis errors (they carried the store's URL), and a function
that provoked one (an oversized put) learned it.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from _support.platform import RunningPlatform
from xdt._util.process import free_port

Start = Callable[[dict[str, Any]], RunningPlatform]


@pytest.fixture
def guarded_redis() -> Iterator[tuple[str, str]]:
    """A redis-server with a password, whose bulk strings are capped at 1 MiB so that a
    bigger put fails inside Redis: (url with the password, the password)."""
    password = secrets.token_urlsafe(24)
    port = free_port()
    server = shutil.which("redis-server")
    assert server, "redis-server is not installed (make test installs it)"
    process = subprocess.Popen(
        [server, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdin is not None
    process.stdin.write(
        f'port {port}\nbind 127.0.0.1\nsave ""\nappendonly no\nrequirepass {password}\n'
        "proto-max-bulk-len 1mb\n".encode()
    )
    process.stdin.close()
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield url, password
    process.terminate()
    process.wait(10)


def _forms(secret: bytes) -> list[bytes]:
    """A secret as it might appear: itself, base64 (either alphabet), hex."""
    return [
        secret,
        base64.b64encode(secret).rstrip(b"="),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
        secret.hex().encode(),
    ]


def test_no_error_anywhere_carries_the_store_password_or_the_key_ring(
    start_platform: Start, guarded_redis: tuple[str, str]
) -> None:
    url, password = guarded_redis
    platform = start_platform(
        {
            "platform": {"redis_url": url, "transfer": "elasticache"},
            "functions": [
                {"name": "provoke", "handler": "fns:provoke"},
                {"name": "boom", "handler": "fns:boom"},
            ],
        }
    )
    seen: list[bytes] = []
    status, _, answer = platform.invoke("provoke", b"2000000")
    assert status == 200, answer
    texts = answer.decode().splitlines()
    # Each attempt failed with a typed error (the oversized put inside Redis among them).
    assert len(texts) == 10, texts  # all but the one good get failed
    assert texts[0].startswith("SourceUnavailable: Redis at 127.0.0.1:"), texts[0]
    seen.append(answer)
    # What an outside client gets wrong.
    for name, body, headers in [
        ("boom", b"x", {}),
        ("nope", b"", {}),
        ("provoke", b"", {"X-Xdt-Accept": "ref"}),
        ("provoke", b"", {"X-Xdt-Transfer": "ref", "X-Xdt-Hop": "guess"}),
    ]:
        seen.append(platform.invoke(name, body, headers)[2])
    # The store gone: every transfer now fails; its error text too.
    redis.Redis.from_url(url).shutdown(nosave=True)
    seen.append(platform.invoke("provoke", b"10")[2])
    status = platform.status()
    seen.append(repr(status).encode())
    instance_logs = [Path(i["log"]) for f in status["functions"].values() for i in f["instances"]]
    assert instance_logs
    seen += [log.read_bytes() for log in instance_logs]  # before stopping removes them
    seen.append(platform.stop().encode())

    keys = [
        base64.urlsafe_b64decode(line.split()[1] + "==")
        for line in platform.keyring.to_text().splitlines()
    ]
    wanted = {"the Redis password": _forms(password.encode())}
    wanted |= {f"key {i} of the key ring": _forms(key) for i, key in enumerate(keys)}
    for what, forms in wanted.items():
        for form in forms:
            for text in seen:
                assert form not in text, f"{what} appears in: {text[:300]!r}"
