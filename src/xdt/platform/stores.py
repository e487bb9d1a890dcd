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

Both are supervised like instances: one that exits is restarted on the same port (with the
same password, so sidecars' URLs stay good; what it held is lost, so transfers in flight
through it fail, typed), with a backoff when it keeps exiting, and reported through
``on_event``, ``/healthz`` and ``/status`` meanwhile. Before a restart the port must be free,
and after it, served by this platform's uid: a port another uid took while the server was
down is never handed the password — the store then stays down, said so.
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
from dataclasses import dataclass

from .._core.errors import StoreStartError
from .._core.refs import TransferMode
from .._util.names import http_url, netloc
from .._util.polling import until
from .._util.process import chain, die_with_parent, free_port, terminate
from .._util.procfs import tcp_listeners
from .._util.tasks import TaskSet
from ..modes import StoreSettings
from .events import Event, Kind
from .spec import Spec

__all__ = ["EmbeddedStores", "StoreServer", "embedded_credentials"]

START_TIMEOUT = 30.0
STOP_GRACE = 5.0  # SIGTERM, then SIGKILL
RESTART_DELAYS = (0.0, 0.5, 1.0, 2.0, 5.0)  # after each exit in a row; the last repeats
STABLE_AFTER = 30.0  # up this long: the next exit starts the backoff afresh


@dataclass(eq=False)
class StoreServer:
    """One embedded server: how to start it, and how it is doing."""

    name: str  # "redis-server at 127.0.0.1:PORT", for people
    port: int
    argv: tuple[str, ...]
    config: str | None  # written to its stdin
    answers: Callable[[], bool]  # blocking: is it serving?
    after_start: Callable[[], None] | None = None  # blocking: e.g. make the bucket again
    process: asyncio.subprocess.Process | None = None
    up: bool = False
    restarts: int = 0
    problem: str | None = None  # why it is down, when it is


class EmbeddedStores:
    """Starts what the spec needs and keeps it running; :attr:`settings` says where
    everything is. ``on_event(server name, event)`` hears of exits, restarts and failures."""

    def __init__(
        self,
        spec: Spec,
        on_event: Callable[[str, Event], None] | None = None,
        *,
        host: str = "127.0.0.1",
        enter: Callable[[], None] | None = None,
    ) -> None:
        self.spec = spec
        # Where the servers listen; with test hosts, the machine's address on their network
        # or the store host's, whose namespace ``enter`` (a preexec step) moves them into.
        self.host = host
        self.enter = enter
        self.settings = spec.platform.stores
        self.servers: list[StoreServer] = []
        self.on_event = on_event
        self.moto_started = False
        self._supervisors = TaskSet()

    @property
    def started(self) -> list[str]:
        """What was started, for the user."""
        return [server.name for server in self.servers]

    def down(self) -> list[str]:
        """The servers not serving now, each with why."""
        return [f"{s.name}: {s.problem or 'restarting'}" for s in self.servers if not s.up]

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
        for server in self.servers:
            self._supervisors.spawn(self._supervise(server))
        return self.settings

    async def close(self) -> None:
        await self._supervisors.cancel()
        for server in self.servers:
            if server.process is not None:
                await terminate(server.process, grace=STOP_GRACE)
            server.up = False
        self.servers.clear()

    def _tell(self, server: StoreServer, kind: Kind, detail: str) -> None:
        if self.on_event is not None:
            self.on_event(server.name, Event(kind, detail))

    async def _supervise(self, server: StoreServer) -> None:
        loop = asyncio.get_running_loop()
        exits_in_a_row = 0
        while True:
            assert server.process is not None
            began = loop.time()
            code = await server.process.wait()
            server.up = False
            exits_in_a_row = 1 if loop.time() - began > STABLE_AFTER else exits_in_a_row + 1
            delay = RESTART_DELAYS[min(exits_in_a_row, len(RESTART_DELAYS)) - 1]
            self._tell(server, Kind.CRASHED, f"exited with code {code}; restart in {delay:g} s")
            while True:
                await asyncio.sleep(delay)
                try:
                    await self._start(server)
                except StoreStartError as exc:
                    server.problem = str(exc)
                    self._tell(server, Kind.RESTART_FAILED, str(exc))
                    delay = RESTART_DELAYS[-1]
                    continue
                break
            server.restarts += 1
            self._tell(server, Kind.RESTARTED, f"restart {server.restarts}")

    async def _start(self, server: StoreServer) -> None:
        """Start (or restart) ``server`` on its port and wait until it serves."""
        own = os.getuid()
        holders = tcp_listeners(server.port)
        if holders:
            raise StoreStartError(
                f"port {server.port} is taken (by uid {', '.join(map(str, sorted(set(holders))))})"
                "; the store stays down rather than hand its password to whoever holds it"
            )
        server.process = process = await self._spawn(*server.argv, config=server.config)
        try:
            await _wait_for(server.answers, server.name)
            if set(tcp_listeners(server.port)) - {own}:
                raise StoreStartError(f"another uid listens on port {server.port} too")
            if server.after_start is not None:
                await asyncio.to_thread(server.after_start)
        except BaseException:
            await terminate(process, grace=STOP_GRACE)
            raise
        server.up, server.problem = True, None

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
            f'port {port}\nbind {self.host}\nprotected-mode yes\nsave ""\nappendonly no\n'
            f"loglevel warning\nrequirepass {password}\n"
        )
        host = self.host
        server = StoreServer(
            f"redis-server at {netloc(host, port)}", port,
            (binary, "-"),  # "-": the configuration is on stdin
            config, lambda: _redis_answers(host, port, password),
        )  # fmt: skip
        await self._start(server)
        self.servers.append(server)
        return f"redis://:{password}@{netloc(host, port)}/0"

    async def _start_moto(self) -> str:
        try:
            import moto.server  # noqa: F401 - only checks it is installed
        except ImportError:
            raise StoreStartError(
                "transfer: s3 with no s3_endpoint_url starts moto's S3 emulator, which is not "
                "installed: pip install 'xdt[s3-emulator]', or set platform.s3_endpoint_url"
            ) from None
        port = free_port()
        url = http_url(self.host, port)
        server = StoreServer(
            f"moto S3 emulator at {url}", port,
            (sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(port)),
            None, lambda: _http_answers(url),
        )  # fmt: skip
        await self._start(server)
        self.moto_started = True
        # Restarted, it holds nothing: the bucket is made again before it counts as up.
        server.after_start = self._ensure_bucket
        self.servers.append(server)
        return url

    async def _spawn(self, *argv: str, config: str | None = None) -> asyncio.subprocess.Process:
        """Start a server; ``config`` is written to its stdin, which is then closed."""
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL if config is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=chain(self.enter, die_with_parent),
        )
        if config is not None:
            assert process.stdin is not None
            process.stdin.write(config.encode())
            process.stdin.close()
        return process

    def _ensure_bucket(self) -> None:
        import botocore.exceptions

        from ..modes.s3 import s3_client

        client = s3_client(self.settings, embedded_credentials() if self.moto_started else None)
        where = self.settings.s3_endpoint_url or "AWS S3"
        try:
            client.head_bucket(Bucket=self.settings.s3_bucket)
        except botocore.exceptions.ClientError:
            try:
                client.create_bucket(Bucket=self.settings.s3_bucket)
            except botocore.exceptions.ClientError as exc:
                raise StoreStartError(
                    f"cannot create S3 bucket {self.settings.s3_bucket!r}: {exc}"
                ) from None
        except botocore.exceptions.NoCredentialsError:
            raise StoreStartError(
                f"no credentials for {where} (platform.s3_endpoint_url): set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or leave the URL out to use an "
                "embedded S3 emulator"
            ) from None
        except botocore.exceptions.BotoCoreError as exc:  # unreachable, a bad URL, …
            raise StoreStartError(
                f"cannot reach {where} (platform.s3_endpoint_url): {exc}"
            ) from None
        finally:
            client.close()


async def _wait_for(check: Callable[[], bool], what: str) -> None:
    if not await until(lambda: asyncio.to_thread(check), timeout=START_TIMEOUT):
        raise StoreStartError(f"{what} did not start within {START_TIMEOUT:g} s")


def _redis_answers(host: str, port: int, password: str) -> bool:
    import redis

    client = redis.Redis(host=host, port=port, password=password, socket_timeout=1)
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
