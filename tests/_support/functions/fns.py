"""Handlers for the platform tests (loaded by the xdt runtime from this folder)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request

import xdt


def upper(body: bytes) -> bytes:
    return body.upper()


async def first(body: bytes) -> bytes:
    return b"first(" + await xdt.invoke("second", body) + b")"


async def second(body: bytes) -> bytes:
    return b"second(" + await xdt.invoke("legacy", body) + b")"


def third(body: bytes) -> bytes:
    return b"third(" + body + b")"


def boom(body: bytes) -> bytes:
    raise ValueError(f"cannot handle {body.decode()!r}")


def crash(body: bytes) -> bytes:
    if body == b"crash":
        os._exit(17)  # the function process dies mid-request
    return b"alive:" + body


async def calls_missing(body: bytes) -> bytes:
    try:
        await xdt.invoke("no-such-function", body)
    except xdt.FunctionNotFound as exc:
        return f"FunctionNotFound: {exc}".encode()
    return b"no error"


async def slow(body: bytes) -> bytes:
    await asyncio.sleep(float(body or b"0.2"))
    return b"slept " + body


def sync_slow(body: bytes) -> bytes:
    time.sleep(float(body or b"0.2"))
    return b"slept " + body


def environment(body: bytes) -> bytes:
    with open(f"/proc/{os.getpid()}/environ", "rb") as raw:
        environ = raw.read()
    names = sorted(k for k in os.environ if k.startswith("XDT_"))
    return json.dumps({"xdt_names": names, "environ": environ.decode(errors="replace")}).encode()


def hold(body: bytes) -> bytes:
    """Put the body as an object in this instance's sidecar; answer its reference."""
    ttl = os.environ.get("HOLD_TTL", "30")
    request = urllib.request.Request(
        f"{os.environ['XDT_EGRESS']}/objects?pulls=1&ttl={ttl}", data=body, method="POST"
    )
    with urllib.request.urlopen(request) as answer:
        reference: bytes = answer.read()
        return reference


def hold_generated(body: bytes) -> bytes:
    """Put an object of ``int(body)`` bytes made here (bigger than any inline limit)."""
    return hold(b"g" * int(body))


def smuggle(body: bytes) -> bytes:
    """Try to smuggle a second request through the sidecar's egress with an encoded CR/LF."""
    import socket
    from urllib.parse import urlsplit

    egress = urlsplit(os.environ["XDT_EGRESS"])
    path = egress.path + (  # under the egress's secret path, as every call
        "/invoke/upper%20HTTP/1.1%0D%0AHost:%20x%0D%0AContent-Length:%205%0D%0A%0D%0AFIRST"
    )
    with socket.create_connection((egress.hostname, egress.port), timeout=10) as raw:
        raw.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx".encode())
        answer = raw.recv(65536)
    return answer.split(b"\r\n", 1)[0]


def identity(body: bytes) -> bytes:
    """Who this function runs as, and what its private folders are like (it writes in them)."""
    folders = {}
    for name in ("HOME", "TMPDIR"):
        path = os.environ.get(name, "")
        with open(os.path.join(path, "written"), "w") as proof:
            proof.write("mine")
        info = os.stat(path)
        folders[name] = {"path": path, "mode": info.st_mode & 0o7777, "owner": info.st_uid}
    with open("/proc/self/status") as status:
        no_new_privs = next(line.split()[1] for line in status if line.startswith("NoNewPrivs"))
    return json.dumps(
        {
            "uid": os.getuid(),
            "euid": os.geteuid(),
            "gid": os.getgid(),
            "groups": os.getgroups(),
            "no_new_privs": no_new_privs,
            "folders": folders,
            "instance": os.environ["XDT_INSTANCE"],
        }
    ).encode()


def probe(body: bytes) -> bytes:
    """Try what a function must not be able to do to others (the test says where they are);
    answer what happened each time, and the same for this function's own egress."""
    import errno
    import socket
    import struct
    import urllib.error
    from urllib.parse import urlsplit

    order = json.loads(body)

    def frame(kind: int, meta: dict[str, object], payload: bytes) -> bytes:
        raw = json.dumps(meta).encode() if meta else b""
        return struct.pack("!BBIQ", kind, 0, len(raw), len(payload)) + raw + payload

    hello = {  # a request each kind of socket answers when it admits the caller
        "in": b"GET /xdt/ready HTTP/1.1\r\nHost: x\r\n\r\n",
        "out": frame(6, {"op": "release"}, b"not-a-reference"),  # CALL
        "runtime": frame(4, {}, b""),  # PING
    }

    def try_unix(kind: str, path: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            try:
                sock.connect(path)
            except OSError as exc:
                return f"refused: {errno.errorcode.get(exc.errno or 0, exc.errno)}"
            try:
                sock.sendall(hello[kind])
                return "answered" if sock.recv(1024) else "closed"
            except (ConnectionResetError, BrokenPipeError):
                return "closed"

    def post(url: str) -> list[object]:
        request = urllib.request.Request(url, data=b"probe", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return [answer.status, answer.read().decode()]
        except urllib.error.HTTPError as answer:
            return [answer.code, answer.read().decode()]

    results: dict[str, object] = {
        name: try_unix(kind, path) for name, (kind, path) in order.get("unix", {}).items()
    }
    results["own-out"] = try_unix("out", os.environ["XDT_EGRESS_SOCKET"])
    egress = urlsplit(os.environ["XDT_EGRESS"])
    port = f"http://{egress.hostname}:{egress.port}"
    results["egress-no-secret"] = post(f"{port}/invoke/upper")
    results["egress-wrong-secret"] = post(f"{port}/{'A' * 24}/invoke/upper")
    results["egress-own"] = post(f"{os.environ['XDT_EGRESS']}/invoke/upper")
    if "redis_port" in order:
        with socket.create_connection(("127.0.0.1", order["redis_port"]), timeout=10) as redis:
            redis.sendall(b"PING\r\n")
            results["redis"] = redis.recv(1024).decode(errors="replace")
    if "pid" in order:  # another function's process
        try:
            with open(f"/proc/{order['pid']}/environ", "rb") as environ:
                results["environ"] = f"read {len(environ.read())} bytes"
        except OSError as exc:
            results["environ"] = type(exc).__name__
        try:
            os.kill(order["pid"], 0)
            results["signal"] = "sent"
        except OSError as exc:
            results["signal"] = type(exc).__name__
    results["environment"] = dict(os.environ)
    return json.dumps(results).encode()


def daemon(body: bytes) -> bytes:
    """Leave a process behind that escaped this one's process group; answer what its command
    line says (its pid would be one of this function's PID namespace, in a sandbox)."""
    import subprocess
    import sys

    marker = f"xdt-test-daemon-{os.getpid()}-{time.time_ns()}"
    subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", marker], start_new_session=True
    )
    return marker.encode()


def steal(body: bytes) -> bytes:
    """A hostile function of another tenant, handed a reference to someone's object and told
    where its source sidecar is: it speaks the pull protocol itself, naming the owner's tenant,
    over TCP and on every same-host socket it can think of; answers what each attempt got."""
    import socket

    from xdt.pull.frames import FrameReader, PullRequest, decode_error, encode_pull

    order = json.loads(body)
    request = encode_pull(PullRequest(order["token"], order["tenant"], proof=bytes(16)))
    tried: dict[str, str] = {}

    def attempt(name: str, family: int, address: object) -> None:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as raw:
                raw.settimeout(10)
                raw.connect(address)
                raw.sendall(request)
                reader = FrameReader()
                while (frame := reader.next_frame()) is None:
                    count = raw.recv_into(reader.space())
                    if not count:
                        tried[name] = "closed"
                        return
                    reader.advance(count)
                kind, payload = frame
                tried[name] = decode_error(payload)[0] if kind.name == "ERROR" else kind.name
        except OSError as exc:
            tried[name] = type(exc).__name__

    host, port = order["address"].rsplit(":", 1)
    attempt("tcp", socket.AF_INET, (host, int(port)))
    attempt("abstract", socket.AF_UNIX, f"\0xdt-objects:{order['address']}")
    attempt("private", socket.AF_UNIX, order["private_socket"])
    try:
        xdt.sync.get(order["token"])  # through its own sidecar, as a function should
        tried["sdk"] = "got it"
    except xdt.XdtError as exc:
        tried["sdk"] = type(exc).__name__
    return json.dumps(tried).encode()


def hog(body: bytes) -> bytes:
    """Allocates ``int(body)`` bytes on the heap, or a file of that size in $TMPDIR when the
    body starts with ``file:``; answers what it managed."""
    text = body.decode()
    if text.startswith("file:"):
        import tempfile

        size = int(text[5:])
        try:
            with tempfile.TemporaryFile() as f:
                f.truncate(size)
                f.write(b"x")
        except OSError as exc:
            return f"refused: {exc.strerror}".encode()
        return b"wrote %d" % size
    try:
        data = bytearray(int(text))
    except MemoryError:
        return b"refused: MemoryError"
    return b"allocated %d" % len(data)


async def provoke(body: bytes) -> bytes:
    """Makes every kind of error a function can provoke through the SDK and answers their
    texts, one per line: what a hostile function learns from errors."""
    texts: list[str] = []
    good = await xdt.put(b"mine", pulls=1)
    attempts = [
        lambda: xdt.put(os.urandom(int(body or b"2000000"))),  # over the store's own limit
        lambda: xdt.get(good[:-4] + "AAAA"),  # altered
        lambda: xdt.get(good[:40]),  # truncated
        lambda: xdt.get("not a reference at all"),
        lambda: xdt.get(good),
        lambda: xdt.get(good),  # its one pull is spent
        lambda: xdt.release("x" * 300),
        lambda: xdt.invoke("no-such-function", b"x"),
        lambda: xdt.invoke("boom", b"x"),
        lambda: xdt.put(b"x", pulls=0),
        lambda: xdt.put(b"x", ttl=-1),
    ]
    for attempt in attempts:
        try:
            await attempt()
        except Exception as exc:
            texts.append(f"{type(exc).__name__}: {exc}")
    return "\n".join(texts).encode()


async def roundtrip(body: bytes) -> bytes:
    """Puts ``body`` through the function's transfer mode's store and gets it back."""
    return await xdt.get(await xdt.put(body * 1000))


def use_gateway_objects(body: bytes) -> bytes:
    """A function that speaks to the gateway's /objects itself, as a caller outside would: it
    uploads, and downloads a reference it was handed (another tenant's). Answers the status
    and error code each got."""
    order = json.loads(body)
    tried: dict[str, list[object]] = {}
    for name, path, data in (
        ("upload", "/objects", b"mine"),
        ("download", "/objects/get", order["token"].encode()),
        ("release", "/objects/release", order["token"].encode()),
    ):
        request = urllib.request.Request(order["url"] + path, data=data, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                tried[name] = [answer.status, answer.read().decode(errors="replace")[:100]]
        except urllib.error.HTTPError as refused:
            tried[name] = [refused.code, refused.headers.get("X-Xdt-Error")]
    return json.dumps(tried).encode()


def corked_gateway_objects(body: bytes) -> bytes:
    """The same, sent so that its socket is closed before the gateway looks at who holds it:
    the request and the close in one segment (TCP_CORK), the reference padded so that it is
    taken at once. A closed socket is reported as root's: it must not pass for the operator."""
    import socket

    order = json.loads(body)
    host, port = order["url"].removeprefix("http://").split(":")
    token = order["token"].encode() + b" " * 1000
    for path, data in [("/objects/release", token), ("/objects?tenant=a", b"x" * 1000)] * 3:
        raw = socket.create_connection((host, int(port)), timeout=5)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        raw.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        raw.close()
        time.sleep(0.05)
    return b"sent"
