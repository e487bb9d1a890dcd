"""A real Redis server and moto's S3 server, started and counted by the caller.

The transfer tests, the fault tests and ``xdt bench soak`` use them as the *external* stores of
the baseline modes (``redis_url``, ``s3_endpoint_url``), so that they can read the servers' own
counters: what a run left behind (keys, objects) and what it asked for (commands, requests).
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
import redis

from .._util.polling import until_sync
from .._util.process import free_port, stop

BUCKET = "xdt-test"
_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "xdt-test", "AWS_SECRET_ACCESS_KEY": "xdt-test"}
_START_TIMEOUT = 30.0


def _started(check: Any) -> Any:
    def attempt() -> bool:
        try:
            return bool(check())
        except (OSError, redis.RedisError):
            return False

    return attempt


class LocalStores:
    """``redis-server`` and moto on free loopback ports, with a bucket :data:`BUCKET`;
    :meth:`stop` (or leaving the ``with`` block) ends both.

    moto checks no credentials but boto3 wants some: the usual AWS environment variables are
    set for this process while the stores run (those not set already), so platforms started
    meanwhile inherit them."""

    def __init__(self, folder: Path) -> None:
        redis_server = shutil.which("redis-server")
        if redis_server is None:
            raise RuntimeError(
                "redis-server is not installed: apt-get install redis-server (make test does)"
            )
        self._added_env = [k for k in _CREDENTIALS if k not in os.environ]
        os.environ.update({k: _CREDENTIALS[k] for k in self._added_env})
        self.redis_port = free_port()
        self.redis_process = subprocess.Popen(
            [redis_server, "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.s3_port = free_port()
        self.moto_process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.s3_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "MOTO_RECORDER_FILEPATH": str(folder / "moto_recording")},
        )  # fmt: skip
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.s3_url = f"http://127.0.0.1:{self.s3_port}"
        self.redis = redis.Redis.from_url(self.redis_url)
        try:
            if not until_sync(_started(self.redis.ping), timeout=_START_TIMEOUT):
                raise RuntimeError(f"redis-server did not start in {_START_TIMEOUT:g} s")
            moto_up = _started(lambda: urllib.request.urlopen(self.s3_url, timeout=1))
            if not until_sync(moto_up, timeout=_START_TIMEOUT):
                raise RuntimeError(f"moto's S3 server did not start in {_START_TIMEOUT:g} s")
            self.s3 = boto3.client("s3", endpoint_url=self.s3_url, region_name="us-east-1")
            self.s3.create_bucket(Bucket=BUCKET)
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> LocalStores:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def spec(self) -> dict[str, str]:
        """The ``platform:`` keys that point a platform at these stores."""
        return {"redis_url": self.redis_url, "s3_endpoint_url": self.s3_url, "s3_bucket": BUCKET}

    # -- the servers' own counters -----------------------------------------------------------

    def reset_counters(self) -> None:
        self.redis.config_resetstat()
        self._moto("reset-recording")
        self._moto("start-recording")

    def redis_data_commands(self) -> int:
        """Commands that moved data (SET, GET, GETDEL, EVALSHA…) since the reset."""
        stats = self.redis.info("commandstats")
        data = ("set", "get", "getdel", "evalsha", "eval", "del")
        return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in data)

    def s3_requests(self) -> int:
        """Requests moto recorded since the reset, other than to its own /moto-api. (Its
        threaded server may interleave lines, so count lines rather than parse them.)"""
        url = f"{self.s3_url}/moto-api/recorder/download-recording"
        with urllib.request.urlopen(url, timeout=30) as answer:
            lines = answer.read().decode(errors="replace").splitlines()
        return sum(1 for line in lines if line.strip() and "moto-api" not in line)

    def redis_calls(self) -> collections.Counter[str]:
        """Successful calls per command since the reset (``set``, ``evalsha``, …; commands a
        script ran count under their own names too)."""
        stats = self.redis.info("commandstats")
        return collections.Counter(
            {
                name.removeprefix("cmdstat_"): int(row["calls"]) - int(row.get("failed_calls", 0))
                for name, row in stats.items()
            }
        )

    def s3_requests_by_method(self) -> collections.Counter[str]:
        """Requests moto recorded since the reset, by HTTP method (``PUT``, ``GET``…),
        other than to its own /moto-api: read from the recording's fields wherever they are,
        since its threaded server may interleave lines."""
        url = f"{self.s3_url}/moto-api/recorder/download-recording"
        with urllib.request.urlopen(url, timeout=30) as answer:
            text = answer.read().decode(errors="replace")
        found = re.findall(r'"method": "([A-Z]+)", "url": "([^"]*)"', text)
        return collections.Counter(method for method, where in found if "moto-api" not in where)

    def redis_keys(self) -> int:
        return int(self.redis.dbsize())

    def s3_objects(self) -> list[str]:
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return keys

    def empty(self) -> None:
        """Remove every key and object (between runs that count leaks)."""
        self.redis.flushdb()
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.s3.delete_objects(Bucket=BUCKET, Delete={"Objects": keys, "Quiet": True})

    def _moto(self, action: str) -> None:
        request = urllib.request.Request(
            f"{self.s3_url}/moto-api/recorder/{action}", data=b"", method="POST"
        )
        urllib.request.urlopen(request, timeout=10).close()

    def stop(self) -> None:
        for key in self._added_env:
            os.environ.pop(key, None)
        self._added_env = []
        self.redis.close()
        for process in (self.redis_process, self.moto_process):
            if process.poll() is None:
                stop(process, grace=10)
