"""The Python function runtime: loads a ``module:function`` handler and serves it to the
instance's sidecar over a Unix socket (the same-host wire of :mod:`xdt.channel`: big payloads
arrive and leave as sealed memfds, not through the socket).

A handler takes the request body as bytes and returns bytes; it may be ``async def`` (run on
the runtime's event loop) or plain ``def`` (run in a worker thread, so a slow sync handler does
not stall concurrent requests). An exception in the handler becomes a FAILED answer carrying
its text and traceback (also written to the instance log, with the request id), which the
platform turns into a 500; raising :class:`xdt.BadRequest` (or another 4xx error of xdt's)
answers with its status instead. User errors never take the instance down.

A handler whose parameter is annotated ``xdt.Request`` gets the whole request (method, path,
query, headers, body: :class:`xdt.Request`); any handler may return an :class:`xdt.Response`
(status, headers, body) instead of bytes.

A handler whose parameter is annotated ``memoryview`` gets its payload as a read-only view
instead: of the sealed memfd the sidecar passed, mapped, with no copy (or of private bytes when
the payload came otherwise). The view is released when the handler returns; using it after
that raises ``ValueError``. Slices and arrays made from it (``numpy.frombuffer``) keep the
memory mapped until they go: its bytes are sealed, so they stay this payload's, unchanged.

What the handler prints (stdout and stderr) goes to the instance log a line at a time, each
stamped with the time, the instance and the request it was printed for (:mod:`xdt._util.logs`).

The plain ``def`` handlers' :mod:`xdt.sync` calls run on the runtime's event loop, through the
same socket and memfds as the async SDK.

Run as ``python -m xdt.runtime --handler images:resize --folder DIR --socket PATH``. Only the
sidecar may connect: its uid (``--peer-uid``, by default the runtime's own) is checked on every
connection (``SO_PEERCRED``), so another function cannot send this one invocations.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import importlib
import inspect
import math
import os
import signal
import sys
import time
import traceback
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .._core.buffers import Buffer, BufferPool, as_bytes
from .._core.errors import HandlerLoadError, InvocationError, PeerGone, ProtocolError
from .._core.peercred import PeerCheck, bind_unix
from .._http.contract import CURRENT_TRACE, Request, Response, Trace, current_request_id
from .._util.heap import give_back, give_back_when_idle, keep_warm
from .._util.logs import stamp_output
from .._util.loops import set_serving_loop
from .._util.polling import until
from .._util.tasks import TaskSet
from ..channel import Channel, Kind, Message

__all__ = ["Handler", "load_handler", "serve", "takes_request", "takes_view"]

Handler = Callable[[Any], Any]
MAX_TRACEBACK = 16 << 10  # characters of a traceback sent with a FAILED answer (its end)


def _first_annotation(handler: Handler) -> object:
    try:
        parameters = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return None
    if not parameters:
        return None
    try:
        hints = typing.get_type_hints(handler)
    except Exception:  # an annotation that does not resolve: the raw one is looked at
        hints = {}
    return hints.get(parameters[0].name, parameters[0].annotation)


def takes_view(handler: Handler) -> bool:
    """Whether ``handler``'s (first) parameter is annotated ``memoryview``."""
    annotation = _first_annotation(handler)
    return annotation is memoryview or annotation == "memoryview"


def takes_request(handler: Handler) -> bool:
    """Whether ``handler``'s (first) parameter is annotated ``xdt.Request``."""
    annotation = _first_annotation(handler)
    return annotation is Request or annotation in ("Request", "xdt.Request")


class _Viewed:
    """A payload shown to a handler as a read-only memoryview (see the module docstring)."""

    def __init__(self, payload: bytes | Buffer) -> None:
        if isinstance(payload, Buffer) and payload.lent:
            # The sidecar's warm buffer, reused for its next payload once we answer: a view
            # kept past the handler could show that one. Copied, so views are always sealed.
            payload = as_bytes(payload)
        self.payload: bytes | Buffer = payload
        self.view = payload.view() if isinstance(payload, Buffer) else memoryview(payload)

    def release(self) -> None:
        # Exports (numpy arrays) keep the view and its mapping until they go: sealed bytes.
        with contextlib.suppress(BufferError):
            self.view.release()
        if isinstance(self.payload, Buffer):
            self.payload.close()  # our descriptor; the mapping goes with the last user
        self.payload = b""


def load_handler(target: str, folder: Path) -> Handler:
    """Import ``module:function`` with ``folder`` first on the import path."""
    module_name, _, function_name = target.partition(":")
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # SyntaxError, ImportError, or whatever the module raised
        # What Python would print last, e.g. the file, line and caret of a SyntaxError.
        said = "".join(traceback.format_exception_only(exc)).strip()
        raise HandlerLoadError(f"cannot import {module_name!r} from {folder}: {said}") from exc
    handler = getattr(module, function_name, None)
    if not callable(handler):
        raise HandlerLoadError(f"{module_name!r} has no function {function_name!r}")
    return handler  # type: ignore[no-any-return]


async def serve(
    handler: Handler,
    socket_path: str,
    *,
    threads: int = 64,
    peer_uid: int | None = None,
    socket_group: int | None = None,
) -> None:
    """Serve ``handler`` on a Unix socket until cancelled, to peers of uid ``peer_uid`` (by
    default our own). A sync handler runs on a pool of ``threads`` (the function's
    concurrency), not the loop's small default pool. ``socket_group``: the socket is that
    group's too (mode 0660), for a sidecar that is neither root nor our uid (a Knative pod's
    containers share a group); the peer's uid is still checked."""
    peers = PeerCheck({os.getuid() if peer_uid is None else peer_uid}, "runtime socket")
    executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="handler")
    call = _caller(handler, executor)
    viewing, requesting = takes_view(handler), takes_request(handler)
    loop = asyncio.get_running_loop()
    set_serving_loop(loop)  # plain def handlers' xdt.sync calls: this loop's socket, memfds
    connections = TaskSet()
    pool = BufferPool(name="xdt-result")  # warm buffers big answers are lent to the sidecar in
    activity = _Activity()

    async def handle(channel: Channel, message: Message) -> None:
        # Its own frame, so the request's bytes are freed when it returns, not when the next
        # request has arrived beside them (two payloads' worth of memory at once).
        viewed = _Viewed(message.payload) if viewing else None
        body: bytes | memoryview = message.data() if viewed is None else viewed.view
        message.payload = b""
        trace = Trace.from_meta(message.meta)
        argument: bytes | memoryview | Request = (
            Request.from_meta(message.meta, body) if requesting else body
        )
        CURRENT_TRACE.set(trace)  # this task's: its log lines and calls carry the request id
        activity.begin()
        try:
            try:
                answer = _answer(await call(argument))
                if viewed is not None and isinstance(answer[1], memoryview):
                    answer = answer[0], answer[1].tobytes()  # of the view, released below
            finally:
                del body, argument  # before the answer's bytes are sent, not after
                if viewed is not None:
                    viewed.release()
        except InvocationError as exc:  # xdt.BadRequest and its kind: a 4xx, as raised
            if exc.status >= 500 or not _raised_in_handler(exc):
                await _failed(channel, exc)
            else:
                meta = {"error": str(exc), "code": exc.code, "status": exc.status}
                await channel.send(Kind.FAILED, meta)
        except Exception as exc:  # the user's code: report, never crash
            await _failed(channel, exc)
        else:
            await channel.send(Kind.RESULT, answer[0], answer[1])
        finally:
            activity.end()

    def give_back_idle_memory() -> None:
        pool.trim()
        give_back()  # the SDK's pool too, if the function's code loaded it

    async def connection(channel: Channel) -> None:
        try:
            while True:
                message = await channel.receive()
                if message.kind is Kind.PING:
                    await channel.send(Kind.PONG)
                    continue
                await handle(channel, message)
                del message
        except (PeerGone, ProtocolError):
            pass  # the sidecar closed the connection, or sent garbage
        finally:
            channel.close()

    if socket_group is None:
        listener = bind_unix(socket_path)
    else:
        listener = bind_unix(socket_path, mode=0o660, group=socket_group)
    idle = asyncio.create_task(give_back_when_idle(activity.idle_since, trim=give_back_idle_memory))
    try:
        while True:
            sock, _ = await loop.sock_accept(listener)
            if not peers.admits(sock):
                sock.close()
                continue
            connections.spawn(connection(Channel(sock, pool)))
    finally:
        set_serving_loop(None)
        idle.cancel()
        listener.close()
        await connections.cancel()
        executor.shutdown(wait=False, cancel_futures=True)


class _Activity:
    """Requests in flight, and when the last one ended."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.last = time.monotonic()

    def begin(self) -> None:
        self.in_flight += 1

    def end(self) -> None:
        self.in_flight -= 1
        self.last = time.monotonic()

    def idle_since(self) -> float:
        return self.last if self.in_flight == 0 else time.monotonic()


def _caller(
    handler: Handler, executor: concurrent.futures.Executor
) -> Callable[[Any], Awaitable[Any]]:
    if inspect.iscoroutinefunction(handler):
        return handler

    async def in_thread(argument: Any) -> Any:
        # In a copy of this task's context: the thread's prints and calls see the request id.
        context = contextvars.copy_context()
        result = await asyncio.get_running_loop().run_in_executor(
            executor, context.run, handler, argument
        )
        return await result if inspect.isawaitable(result) else result

    return in_thread


_PACKAGE = str(Path(__file__).resolve().parent.parent)


def _raised_in_handler(exc: BaseException) -> bool:
    """Whether the function's own code raised ``exc``, not xdt on one of its calls: a 4xx
    that the SDK raised (its call was refused) is the function failing, not the caller's
    request being bad."""
    frames = traceback.extract_tb(exc.__traceback__)
    return not frames or not str(Path(frames[-1].filename).resolve()).startswith(_PACKAGE)


# What calls a handler (this runtime, its thread pool, the event loop): frames of theirs at
# the top of a traceback are noise to the function's developer, and left out.
_CALLERS = tuple(
    os.path.dirname(module.__file__) + os.sep  # as frames name their files: unresolved
    for module in (sys.modules[__name__], asyncio, concurrent.futures)
    if module.__file__ is not None
)


def _handler_traceback(exc: BaseException) -> str:
    """The traceback from the handler's own first frame (all of it, if none is the handler's:
    then the runtime itself failed)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_CALLERS):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


async def _failed(channel: Channel, exc: BaseException) -> None:
    """Answer FAILED for an exception of the handler's, and write its traceback to the log."""
    text = _handler_traceback(exc)
    print(f"the handler raised {_describe(exc)}\n{text}", end="", file=sys.stderr, flush=True)
    meta = {"error": _describe(exc), "traceback": text[-MAX_TRACEBACK:]}
    await channel.send(Kind.FAILED, meta)


def _answer(result: Any) -> tuple[dict[str, Any] | None, bytes | bytearray | memoryview]:
    """The RESULT meta (status and headers, when the handler gave a Response) and body."""
    if isinstance(result, Response):
        return result.meta(), _as_bytes(result.body)
    return None, _as_bytes(result)


def _as_bytes(result: Any) -> bytes | bytearray | memoryview:
    if isinstance(result, bytes | bytearray | memoryview):
        return result
    if isinstance(result, str):
        return result.encode()
    if result is None:
        return b""
    raise TypeError(
        f"the handler returned {type(result).__name__}; return bytes, str or an xdt.Response"
    )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m xdt.runtime")
    parser.add_argument("--handler", required=True, help="module:function")
    parser.add_argument("--folder", type=Path, default=Path.cwd())
    parser.add_argument("--socket", help="Unix socket path to serve on")
    parser.add_argument("--check", action="store_true", help="import the handler, then exit")
    parser.add_argument("--threads", type=int, default=64, help="sync handlers at once")
    parser.add_argument("--peer-uid", type=int, help="the uid that may connect (default: ours)")
    parser.add_argument(
        "--socket-group", type=int, help="make the socket this group's too (a Knative pod)"
    )
    parser.add_argument(
        "--outlive", metavar="SOCKET",
        help="on SIGTERM, serve on until SOCKET (the sidecar's egress) refuses connections: "
        "a Knative pod's containers get SIGTERM together, and the sidecar drains through us",
    )  # fmt: skip
    args = parser.parse_args(argv)
    instance = os.environ.get("XDT_INSTANCE")
    if instance:  # under the platform: stdout and stderr are the instance log
        stamp_output(instance, current_request_id)
    try:
        handler = load_handler(args.handler, args.folder)
    except HandlerLoadError as exc:
        print(f"xdt runtime: {exc}", file=sys.stderr)
        return 2
    if args.check:
        return 0
    if args.socket is None:
        parser.error("--socket is needed to serve")
    keep_warm()  # each request's payload becomes a fresh bytes object: reuse its pages
    serving = serve(
        handler, args.socket, threads=args.threads, peer_uid=args.peer_uid,
        socket_group=args.socket_group,
    )  # fmt: skip
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serving if args.outlive is None else _outliving(serving, args.outlive))
    return 0


async def _outliving(serving: Awaitable[None], sidecar: str) -> None:
    """Serve; on SIGTERM, go on serving until ``sidecar``'s socket refuses connections."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(serving)
    term = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, term.set)
    waiting = asyncio.ensure_future(term.wait())
    await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
    if term.is_set():
        print("xdt runtime: SIGTERM; serving until the sidecar has drained", file=sys.stderr)
        # Kubernetes ends the wait with SIGKILL when the grace period is over.
        await until(_gone(sidecar), timeout=math.inf, interval=0.2)
    waiting.cancel()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _gone(path: str) -> Callable[[], Awaitable[bool]]:
    async def gone() -> bool:
        """Whether nothing accepts connections on the Unix socket ``path`` any more."""
        try:
            _, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout=2)
        except (OSError, TimeoutError):
            return True
        writer.close()
        return False

    return gone
