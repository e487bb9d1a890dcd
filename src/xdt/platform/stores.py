"""The storage modes' servers, for a platform whose spec names none.

When a function runs with ``transfer: elasticache`` and the spec gives no ``redis_url``,
``xdt up`` starts a local ``redis-server`` (Debian's package); with ``transfer: s3`` and no
``s3_endpoint_url``, moto's S3-compatible server (``moto[server]``, an emulator of S3, not S3).
Both listen on free loopback ports, keep nothing on disk, die with the platform and are
stopped when it stops.

Redis requires a password, random per run: functions (which never see it) cannot reach the
data behind other functions' references directly. It is in Redis's configuration, given on
its stdin (``redis-server -``), never on a command line, and reaches sidecars on their stdin
inside the Redis URL. moto cannot authenticate anyone: any local process can reach it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Callable

from .._core.errors import StoreStartError
from .._core.refs import TransferMode
from .._util.polling import until
from .._util.process import die_with_parent, free_port, terminate
from ..modes import StoreSettings
from .spec import Spec

__all__ = ["EmbeddedStores", "embedded_credentials"]

START_TIMEOUT = 30.0
STOP_GRACE = 5.0  # SIGTERM, then SIGKILL


class EmbeddedStores:
    """Starts what the spec needs; :attr:`settings` says where everything is."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.settings = spec.platform.stores
        self.processes: list[asyncio.subprocess.Process] = []
        self.started: list[str] = []  # what was started, for the user
        self.moto_started = False

    async def start(self) -> StoreSettings:
        modes = self.spec.modes()
        redis_url, s3_url = self.settings.redis_url, self.settings.s3_endpoint_url
        if TransferMode.ELASTICACHE in modes and redis_url is None:
            redis_url = await self._start_redis()
        if TransferMode.S3 in modes and s3_url is None:
            s3_url = await self._start_moto()
        self.settings = dataclasses.replace(
            self.settings, redis_url=redis_url, s3_endpoint_url=s3_url
        )
        if TransferMode.S3 in modes:
            await asyncio.to_thread(self._ensure_bucket)
        return self.settings

    async def close(self) -> None:
        for process in self.processes:
            await terminate(process, grace=STOP_GRACE)
        self.processes.clear()

    async def _start_redis(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StoreStartError(
                "transfer: elasticache needs a Redis server: install Debian's redis-server "
                "(make does), or set platform.redis_url"
            )
        port = free_port()
        password = secrets.token_urlsafe(24)
        config = (
            f'port {port}\nbind 127.0.0.1\nprotected-mode yes\nsave ""\nappendonly no\n'
            f"loglevel warning\nrequirepass {password}\n"
        )
        await self._spawn(binary, "-", config=config)  # "-": the configuration is on stdin
        await _wait_for(lambda: _redis_answers(port, password), f"redis-server on port {port}")
        self.started.append(f"redis-server at 127.0.0.1:{port}")
        return f"redis://:{password}@127.0.0.1:{port}/0"

    async def _start_moto(self) -> str:
        try:
            import moto.server  # noqa: F401 - only checks it is installed
        except ImportError:
            raise StoreStartError(
                "transfer: s3 with no s3_endpoint_url starts moto's S3 emulator, which is not "
                "installed: pip install 'xdt[s3-emulator]', or set platform.s3_endpoint_url"
            ) from None
        port = free_port()
        await self._spawn(sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port))
        url = f"http://127.0.0.1:{port}"
        await _wait_for(lambda: _http_answers(url), f"moto's S3 server on port {port}")
        self.started.append(f"moto S3 emulator at {url}")
        self.moto_started = True
        return url

    async def _spawn(self, *argv: str, config: str | None = None) -> None:
        """Start a server; ``config`` is written to its stdin, which is then closed."""
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL if config is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self.processes.append(process)
        if config is not None:
            assert process.stdin is not None
            process.stdin.write(config.encode())
            process.stdin.close()

    def _ensure_bucket(self) -> None:
        import boto3
        import botocore.exceptions

        credentials = {k.lower(): v for k, v in embedded_credentials().items()}
        client = boto3.client(
            "s3",
            endpoint_url=self.settings.s3_endpoint_url,
            region_name=self.settings.s3_region,
            **(credentials if self.moto_started else {}),
        )
        try:
            client.head_bucket(Bucket=self.settings.s3_bucket)
        except botocore.exceptions.ClientError:
            try:
                client.create_bucket(Bucket=self.settings.s3_bucket)
            except botocore.exceptions.ClientError as exc:
                raise StoreStartError(
                    f"cannot create S3 bucket {self.settings.s3_bucket!r}: {exc}"
                ) from None
        finally:
            client.close()


async def _wait_for(check: Callable[[], bool], what: str) -> None:
    if not await until(lambda: asyncio.to_thread(check), timeout=START_TIMEOUT):
        raise StoreStartError(f"{what} did not start within {START_TIMEOUT:g} s")


def _redis_answers(port: int, password: str) -> bool:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=1)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _http_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer: it is up
    except OSError:
        return False


def embedded_credentials() -> dict[str, str]:
    """Credentials for an emulator that checks none, unless real ones are set."""
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        return {}
    return {"AWS_ACCESS_KEY_ID": "xdt-embedded", "AWS_SECRET_ACCESS_KEY": "xdt-embedded"}
