"""The sidecar's egress: the function's own calls, on two faces with the same operations.

===========  ==============================  ==================================================
operation    HTTP (``$XDT_EGRESS`` + …)       what it does
===========  ==============================  ==================================================
invoke       ``POST /invoke/<fn>``           the payload by this function's mode (or, marked
                                             ``X-Xdt-Transfer: ref``, a reference it passes
                                             on) to the activator; the answer as bytes
put          ``POST /objects?pulls=&ttl=``   an object by this function's mode; its reference
get          ``POST /objects/get``           the bytes behind a reference (one of its pulls)
release      ``POST /objects/release``       free an object now
===========  ==============================  ==================================================

The HTTP face (any language) is for every function; the socket face (:mod:`xdt.channel`,
``$XDT_EGRESS_SOCKET``) is the Python SDK's same-host way, where big payloads pass as memfds.
A call's arguments are checked before anything is done (:class:`~xdt.BadRequest` names what
is wrong); an error is answered in its own type on either face; a failure xdt did not expect
is logged with its traceback and answered as :class:`~xdt.InternalError`, never as the
caller's fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeGuard

from aiohttp import web

from .._core.buffers import BufferPool, as_bytes
from .._core.errors import (
    BadRequest,
    FunctionNotFound,
    InstanceFailed,
    InternalError,
    InvocationTimeout,
    PeerGone,
    ProtocolError,
    XdtError,
    to_wire,
)
from .._core.peercred import PeerCheck, bind_unix
from .._http.contract import REQUEST_ID_HEADER, Trace
from .._http.errors import error_from_answer
from .._http.headers import (
    ACCEPT_HEADER,
    ANSWER_HEADERS,
    BY_REFERENCE,
    TRANSFER_HEADER,
)
from .._http.server import error_response, read_body
from .._util.logs import RateLimitedLog
from .._util.names import is_function_name
from .._util.tasks import TaskSet
from ..channel import Channel, Kind, Message
from ..modes.base import Payload
from .calls import Calls
from .config import SidecarConfig
from .payloads import Payloads, close

MAX_CHANNELS = 256  # the SDK's pooled channels: one per concurrent call of the function
CHANNEL_IDLE_TIMEOUT = 120.0  # the SDK closes its idle ones after 60 s (sdk/_transport.py)
_log = RateLimitedLog()

__all__ = ["Egress", "PutTerms"]


@dataclass(frozen=True)
class PutTerms:
    """A put's terms, checked: ``pulls`` None (unlimited until expiry) or ≥ 1, ``ttl`` None
    (the platform's object_ttl) or seconds within the store's limit."""

    pulls: int | None = 1
    ttl: float | None = None
    inline_small: bool = False  # a broadcast's: small payloads become inline references

    @classmethod
    def check(cls, pulls: object, ttl: object, inline_small: object, *, max_ttl: float) -> PutTerms:
        """The terms, or :class:`~xdt.BadRequest` saying what is allowed."""
        bad = BadRequest(
            "pulls must be a whole number ≥ 1 or unlimited, ttl a number of seconds above 0 "
            f"and at most {max_ttl:g}"
        )
        if pulls is not None and not (_number(pulls) and type(pulls) is int and pulls >= 1):
            raise bad
        if ttl is not None and not (_number(ttl) and math.isfinite(ttl) and 0 < ttl <= max_ttl):
            raise bad
        if not isinstance(inline_small, bool):
            raise bad
        return cls(pulls, None if ttl is None else float(ttl), inline_small)

    @classmethod
    def from_query(cls, query: Mapping[str, str], *, max_ttl: float) -> PutTerms:
        """The terms as an HTTP face writes them (``?pulls=unlimited&ttl=30&inline_small=1``),
        checked."""
        return cls.check(*_query_terms(query), max_ttl=max_ttl)


def _number(value: object) -> TypeGuard[int | float]:
    return type(value) in (int, float)  # not bool, a subclass of int


class Egress:
    """``calls``: where the function's calls go (:mod:`.calls`); ``lend``: the pool big
    payloads are lent to the function from; ``check``: who may use the socket face."""

    def __init__(
        self,
        config: SidecarConfig,
        payloads: Payloads,
        calls: Calls,
        *,
        lend: BufferPool,
        check: PeerCheck,
        max_ttl: float,
    ) -> None:
        self.config = config
        self.payloads = payloads
        self.calls = calls
        self.lend = lend
        self.check = check
        self.max_ttl = max_ttl
        self._connections = TaskSet()
        self._channel_slots = asyncio.Semaphore(MAX_CHANNELS)  # of the socket face
        self._operations: dict[str, Callable[[Message], Awaitable[Payload]]] = {
            "invoke": self._invoke_op,
            "put": self._put_op,
            "get": self._get_op,
            "release": self._release_op,
        }

    # -- the one call path -------------------------------------------------------------------

    async def call(
        self, target: str, payload: Payload, *, forwarded: bool = False, trace: Trace | None = None
    ) -> tuple[int, dict[str, str], Payload]:
        """Invoke ``target`` for this function: its payload goes by this function's mode (or,
        ``forwarded``, is a reference the function passes on); (status, the answer's headers
        the caller sees, answer). ``trace``: of the request the function is serving, which
        the call carries on. Bounded by the function's own timeout."""
        if not is_function_name(target):
            close(payload)
            raise FunctionNotFound(
                f"{target!r} is not a function name (lower-case letters, digits and '-')",
                function=target,
            )
        headers = {ACCEPT_HEADER: BY_REFERENCE}
        if trace is not None:
            headers.update(trace.headers())
        if forwarded:
            body, as_reference = as_bytes(payload), True
        else:
            body, as_reference = await self.payloads.outbound(
                payload, what=f"the call to {target!r}"
            )
        if as_reference:
            headers[TRANSFER_HEADER] = BY_REFERENCE
        try:
            async with asyncio.timeout(self.config.timeout):
                answer = await self.calls.post(target, body, headers)
        except (PeerGone, ProtocolError) as exc:
            raise InstanceFailed(f"the activator failed the call: {exc}", function=target) from None
        except TimeoutError:
            raise InvocationTimeout(
                f"no answer from {target!r} within {self.config.timeout:g} s (the timeout of "
                f"the calling function, {self.config.function!r})",
                function=target,
            ) from None
        passed = {name: value for name in ANSWER_HEADERS if (value := answer.header(name))}
        if answer.status != 200:
            return answer.status, passed, answer.body
        by_reference = answer.header(TRANSFER_HEADER) == BY_REFERENCE
        return answer.status, passed, await self.payloads.inbound(answer.body, by_reference)

    # -- the HTTP face -----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body + 1)
        app.router.add_post("/invoke/{function}", self._invoke_http)
        app.router.add_post("/objects", self._put_http)
        app.router.add_post("/objects/get", self._get_http)
        app.router.add_post("/objects/release", self._release_http)
        return app

    async def _invoke_http(self, request: web.Request) -> web.StreamResponse:
        """The answer as the callee gave it: its status, its body as bytes."""
        target = request.match_info["function"]
        try:
            payload = await read_body(request, self.config.max_body, function=target)
            forwarded = request.headers.get(TRANSFER_HEADER) == BY_REFERENCE
            trace = (
                Trace.from_headers(request.headers)
                if REQUEST_ID_HEADER in request.headers
                else None
            )
            status, headers, answer = await self.call(
                target, payload, forwarded=forwarded, trace=trace
            )
        except XdtError as exc:
            return error_response(exc, function=target)
        return web.Response(status=status, body=as_bytes(answer), headers=headers)

    async def _put_http(self, request: web.Request) -> web.Response:
        try:
            terms = PutTerms.from_query(request.query, max_ttl=self.max_ttl)
            body = await read_body(request, self.config.object_quota, limit_name="the object quota")
            token = await self._put(body, terms)
        except XdtError as exc:
            return error_response(exc)
        return web.Response(status=201, text=token)

    async def _get_http(self, request: web.Request) -> web.Response:
        try:
            return web.Response(body=as_bytes(await self.payloads.get(await _token(request))))
        except XdtError as exc:
            return error_response(exc)

    async def _release_http(self, request: web.Request) -> web.Response:
        try:
            released = await self.payloads.release(await _token(request))
        except XdtError as exc:
            return error_response(exc)
        return web.json_response({"released": released})

    # -- the socket face ---------------------------------------------------------------------

    async def serve_socket(self, path: str) -> None:
        """Serve the socket face at ``path`` until cancelled. It survives what a flood does to
        accept(2) (EMFILE, ENFILE, ENOBUFS: backs off and goes on), holds at most
        :data:`MAX_CHANNELS` channels, and closes a channel idle for
        :data:`CHANNEL_IDLE_TIMEOUT` (the SDK drops its own sooner). At the cap, new channels
        wait in the listen backlog until one closes: a busy function waits for a channel
        rather than fails (closing them at once failed 31 of a 10,000-invocation soak), and
        one that holds them all holds up only itself."""
        # Owned by us, group the function's: it may connect (connecting needs write), others not.
        group = self.config.runs_as.gid if self.config.runs_as else None
        listener = bind_unix(path, mode=0o660, group=group)
        loop = asyncio.get_running_loop()
        try:
            while True:
                if self._channel_slots.locked():
                    _log("egress-cap", f"xdt sidecar: the egress socket is at its cap of "
                         f"{MAX_CHANNELS} channels: new ones wait")  # fmt: skip
                await self._channel_slots.acquire()
                try:
                    sock, _ = await loop.sock_accept(listener)
                except OSError as exc:
                    self._channel_slots.release()
                    _log("egress-accept", f"xdt sidecar: the egress socket cannot accept "
                         f"({exc.strerror or exc}); retrying")  # fmt: skip
                    await asyncio.sleep(0.1)
                    continue
                if not self.check.admits(sock):
                    self._channel_slots.release()
                    sock.close()
                    continue
                channel = Channel(sock, self.lend, max_payload=self.config.max_body)
                self._connections.spawn(self._serve_channel(channel))
        finally:
            listener.close()
            await self._connections.cancel()

    async def _serve_channel(self, channel: Channel) -> None:
        try:
            while True:
                async with asyncio.timeout(CHANNEL_IDLE_TIMEOUT):
                    message = await channel.receive()
                try:
                    result = await self._dispatch(message)
                except XdtError as exc:
                    await channel.send(Kind.ERROR, to_wire(exc))
                else:
                    await channel.send(Kind.RESULT, None, result)
        except (PeerGone, ProtocolError, TimeoutError):
            pass  # the function closed the connection, sent garbage, or left it idle
        finally:
            channel.close()
            self._channel_slots.release()

    async def _dispatch(self, message: Message) -> Payload:
        op = message.meta.get("op")
        operation = self._operations.get(op) if isinstance(op, str) else None
        if message.kind is not Kind.CALL or operation is None:
            message.close()
            raise BadRequest(f"not a call this sidecar knows: {message.kind.name} {op!r}")
        try:
            return await operation(message)
        except XdtError:
            raise
        except Exception as exc:  # a bug of ours: say so, with where, and keep serving
            message.close()
            print(f"xdt sidecar: a {op} call failed:", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            raise InternalError(
                f"the sidecar of {self.config.function!r} failed on a {op} call "
                f"({type(exc).__name__}); its log has the traceback",
                function=self.config.function,
            ) from None

    async def _invoke_op(self, message: Message) -> Payload:
        target, forwarded = message.meta.get("function"), message.meta.get("forwarded", False)
        if not isinstance(target, str) or type(forwarded) is not bool:
            message.close()
            raise BadRequest("an invoke call names its function and says whether it forwards")
        status, headers, answer = await self.call(
            target, message.payload, forwarded=forwarded, trace=Trace.from_meta(message.meta)
        )
        if status != 200:
            raise error_from_answer(status, headers, as_bytes(answer), function=target)
        return answer

    async def _put_op(self, message: Message) -> Payload:
        meta = message.meta
        try:
            terms = PutTerms.check(
                meta.get("pulls", 1), meta.get("ttl"), meta.get("inline_small", False),
                max_ttl=self.max_ttl,
            )  # fmt: skip
        except BadRequest:
            message.close()
            raise
        return (await self._put(message.payload, terms)).encode()

    async def _get_op(self, message: Message) -> Payload:
        return await self.payloads.get(_text(message.data()))

    async def _release_op(self, message: Message) -> Payload:
        return b"1" if await self.payloads.release(_text(message.data())) else b"0"

    async def _put(self, data: Payload, terms: PutTerms) -> str:
        return await self.payloads.put(
            data, pulls=terms.pulls, ttl=terms.ttl, inline_small=terms.inline_small
        )


def _query_terms(query: Mapping[str, str]) -> tuple[object, object, object]:
    """(pulls, ttl, inline_small) as the HTTP face writes them (``?pulls=unlimited&ttl=30&
    inline_small=1``); values that do not parse stay text, which the check refuses."""
    pulls_text = query.get("pulls", "1")
    pulls: object = pulls_text
    if pulls_text in ("", "none", "unlimited"):
        pulls = None
    elif pulls_text.isdigit():
        pulls = int(pulls_text)
    ttl: object = query.get("ttl")
    if isinstance(ttl, str):
        with contextlib.suppress(ValueError):
            ttl = float(ttl)
    small = query.get("inline_small", "0")
    return pulls, ttl, {"0": False, "1": True}.get(small, small)


def _text(data: bytes) -> str:
    # Any length: an inline reference is its bytes (each face caps what it reads).
    return data.decode("ascii", errors="replace").strip()


async def _token(request: web.Request) -> str:
    return _text(await request.read())
