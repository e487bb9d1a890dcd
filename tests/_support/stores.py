"""A real Redis server and moto's S3 server for the transfer tests, with their own counters."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import redis

from xdt._util.process import free_port

BUCKET = "xdt-test"
_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "xdt-test", "AWS_SECRET_ACCESS_KEY": "xdt-test"}


def _wait(check: Any, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, redis.RedisError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what} did not start")


class Stores:
    """redis-server and moto on free loopback ports; stop() ends both."""

    def __init__(self, folder: Path) -> None:
        # moto checks no credentials but boto3 wants some; the platforms started meanwhile
        # inherit them, "the usual AWS environment variables".
        self._added_env = [k for k in _CREDENTIALS if k not in os.environ]
        os.environ.update({k: _CREDENTIALS[k] for k in self._added_env})
        redis_server = shutil.which("redis-server")
        assert redis_server, "redis-server is not installed (make test installs it)"
        self.redis_port = free_port()
        self.redis_process = subprocess.Popen(
            [redis_server, "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.s3_port = free_port()
        self.recording = folder / "moto_recording"
        self.moto_process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.s3_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "MOTO_RECORDER_FILEPATH": str(self.recording)},
        )  # fmt: skip
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.s3_url = f"http://127.0.0.1:{self.s3_port}"
        self.redis = redis.Redis.from_url(self.redis_url)
        try:
            _wait(self.redis.ping, "redis-server")
            _wait(lambda: urllib.request.urlopen(self.s3_url, timeout=1), "moto")
            self.s3 = boto3.client("s3", endpoint_url=self.s3_url, region_name="us-east-1")
            self.s3.create_bucket(Bucket=BUCKET)
        except BaseException:
            self.stop()
            raise

    def spec(self) -> dict[str, str]:
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
        with urllib.request.urlopen(f"{self.s3_url}/moto-api/recorder/download-recording") as r:
            lines = r.read().decode(errors="replace").splitlines()
        return sum(1 for line in lines if line.strip() and "moto-api" not in line)

    def redis_keys(self) -> int:
        return int(self.redis.dbsize())

    def s3_objects(self) -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=BUCKET)
        return [item["Key"] for item in listing.get("Contents", [])]

    def _moto(self, action: str) -> None:
        request = urllib.request.Request(
            f"{self.s3_url}/moto-api/recorder/{action}", data=b"", method="POST"
        )
        urllib.request.urlopen(request, timeout=10).close()

    def stop(self) -> None:
        for key in self._added_env:
            os.environ.pop(key, None)
        self.redis.close()
        for process in (self.redis_process, self.moto_process):
            process.terminate()
            process.wait(timeout=10)
