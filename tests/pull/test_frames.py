"""Pull protocol frames and the bounded frame reader (``xdt.pull.frames``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xdt import ProtocolError
from xdt.pull.frames import (
    HEADER,
    MAX_CONTROL_PAYLOAD,
    PROTOCOL_VERSION,
    FrameReader,
    FrameType,
    ObjectHeader,
    PullRequest,
    decode_error,
    decode_object,
    decode_pull,
    encode_done,
    encode_error,
    encode_object,
    encode_pull,
    parse_header,
)

DEFAULT_CAPACITY = HEADER.size + MAX_CONTROL_PAYLOAD
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

PROOF = bytes(range(16))


def header(
    magic: bytes = b"XD", version: int = PROTOCOL_VERSION, kind: int = 1, length: int = 0
) -> bytes:
    return HEADER.pack(magic, version, kind, length)


Frames = list[tuple[FrameType, bytes]]


def drain(reader: FrameReader, out: Frames | None = None) -> Frames:
    """Every whole frame buffered, appended to ``out`` as it comes (so none is lost if a later
    one raises)."""
    out = [] if out is None else out
    while (frame := reader.next_frame()) is not None:
        out.append(frame)
    return out


def write(
    reader: FrameReader, data: bytes, capacity: int = DEFAULT_CAPACITY, out: Frames | None = None
) -> Frames:
    """Put ``data`` into the reader as stream reads would, draining frames as they complete."""
    out = [] if out is None else out
    while data:
        space = reader.space()
        assert len(space) > 0, "the reader offered no room while a frame is incomplete"
        count = min(len(space), len(data))
        space[:count] = data[:count]
        reader.advance(count)
        data = data[count:]
        assert reader.buffered <= capacity
        drain(reader, out)
        # Whatever is left is at most one incomplete control frame.
        assert reader.buffered < DEFAULT_CAPACITY
    return out


def feed(
    reader: FrameReader,
    data: bytes,
    chunk_sizes: list[int],
    capacity: int = DEFAULT_CAPACITY,
    out: Frames | None = None,
) -> Frames:
    """``data`` in chunks of the given sizes (cycled)."""
    out = [] if out is None else out
    position, index = 0, 0
    while position < len(data):
        size = chunk_sizes[index % len(chunk_sizes)]
        write(reader, data[position : position + size], capacity, out)
        position += size
        index += 1
    return out


def model(data: bytes) -> tuple[Frames, bool]:
    """What a reader must make of ``data``: its whole frames, and whether it is refused."""
    frames: Frames = []
    position = 0
    while len(data) - position >= HEADER.size:
        magic, version, kind, length = HEADER.unpack_from(data, position)
        if (
            magic != b"XD"
            or version != PROTOCOL_VERSION
            or kind not in {1, 2, 3, 4, 5}
            or length > MAX_CONTROL_PAYLOAD
        ):
            return frames, True
        if len(data) - position - HEADER.size < length:
            break
        start = position + HEADER.size
        frames.append((FrameType(kind), data[start : start + length]))
        position = start + length
    return frames, False


# -- encode and decode ----------------------------------------------------------------------


def test_frame_header_layout() -> None:
    frame = encode_done()
    assert frame == b"XD" + bytes((PROTOCOL_VERSION, FrameType.DONE)) + b"\x00\x00\x00\x00"
    assert HEADER.size == 8


@pytest.mark.parametrize(
    "request_",
    [
        PullRequest(token="abc-_XYZ019", tenant="acme", proof=PROOF, want_fd=True),
        PullRequest(token="abc", tenant="acme", proof=PROOF),
        PullRequest(token="", tenant="", proof=bytes(16)),
        PullRequest(token="A" * 782, tenant="é" * 127 + "a", proof=PROOF, want_fd=True),
        PullRequest(token="tok", tenant="🚀 tenant", proof=PROOF),
    ],
)
def test_pull_round_trip(request_: PullRequest) -> None:
    frame = encode_pull(request_)
    kind, length = parse_header(frame[: HEADER.size])
    assert kind is FrameType.PULL
    assert length == len(frame) - HEADER.size
    assert decode_pull(frame[HEADER.size :]) == request_
    assert decode_pull(memoryview(frame)[HEADER.size :]) == request_
    assert decode_pull(bytearray(frame[HEADER.size :])) == request_


def test_pull_flag_is_one_bit() -> None:
    payload = encode_pull(PullRequest(token="t", tenant="x", proof=PROOF))[HEADER.size :]
    assert decode_pull(b"\xfc" + payload[1:]).want_fd is False
    assert decode_pull(b"\x01" + payload[1:]).want_fd is True


def test_pull_carries_its_proof_between_tenant_and_token() -> None:
    request = PullRequest(token="tok", tenant="acme", proof=PROOF, want_fd=True)
    payload = encode_pull(request)[HEADER.size :]
    assert payload[2 + 4 : 2 + 4 + 16] == PROOF and payload.endswith(b"tok")
    assert decode_pull(payload) == request


def test_pull_with_a_cut_proof_is_truncated() -> None:
    payload = encode_pull(PullRequest(token="", tenant="x", proof=PROOF))[HEADER.size :]
    with pytest.raises(ProtocolError, match="truncated"):
        decode_pull(payload[:-1])


@pytest.mark.parametrize("proof", [b"", b"short", bytes(17)])
def test_pull_rejects_a_proof_of_the_wrong_length(proof: bytes) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        encode_pull(PullRequest(token="t", tenant="x", proof=proof))


def test_object_lent_flag_needs_the_fd_flag() -> None:
    lent = encode_object(ObjectHeader(size=5, fd_attached=True, fd_lent=True))[HEADER.size :]
    assert decode_object(lent) == ObjectHeader(size=5, fd_attached=True, fd_lent=True)
    assert decode_object(lent[:-1] + b"\x02").fd_lent is False  # lent without an fd: nothing


def test_pull_rejects_long_tenant() -> None:
    with pytest.raises(ValueError, match="255"):
        encode_pull(PullRequest(token="t", tenant="t" * 256, proof=PROOF))


def test_pull_rejects_huge_token() -> None:
    with pytest.raises(ValueError, match="too long"):
        encode_pull(PullRequest(token="A" * MAX_CONTROL_PAYLOAD, tenant="t", proof=PROOF))


@pytest.mark.parametrize(
    "object_header",
    [
        ObjectHeader(size=0),
        ObjectHeader(size=1, fd_attached=True),
        ObjectHeader(size=(1 << 64) - 1),
        ObjectHeader(size=256 << 20, fd_attached=False),
    ],
)
def test_object_round_trip(object_header: ObjectHeader) -> None:
    frame = encode_object(object_header)
    assert parse_header(frame) == (FrameType.OBJECT, 9)
    assert decode_object(frame[HEADER.size :]) == object_header
    assert decode_object(memoryview(frame)[HEADER.size :]) == object_header


@pytest.mark.parametrize("payload", [b"", b"\x00" * 8, b"\x00" * 10])
def test_object_wrong_length(payload: bytes) -> None:
    with pytest.raises(ProtocolError, match="OBJECT frame"):
        decode_object(payload)


@pytest.mark.parametrize(
    ("code", "message"),
    [("x", ""), ("reference_tampered", "reference failed authentication"), ("z" * 64, "ünï 🚀")],
)
def test_error_round_trip(code: str, message: str) -> None:
    frame = encode_error(code, message)
    assert parse_header(frame) == (FrameType.ERROR, len(frame) - HEADER.size)
    assert decode_error(frame[HEADER.size :]) == (code, message)
    assert decode_error(memoryview(frame)[HEADER.size :]) == (code, message)


def test_error_message_is_cut_to_fit() -> None:
    frame = encode_error("not_found", "x" * 10_000)
    kind, length = parse_header(frame)
    assert kind is FrameType.ERROR
    assert length == MAX_CONTROL_PAYLOAD
    room = MAX_CONTROL_PAYLOAD - 1 - len("not_found")
    assert decode_error(frame[HEADER.size :]) == ("not_found", "x" * room)


@pytest.mark.parametrize("code", ["", "z" * 65, "ünï"])
def test_an_error_code_is_short_ascii(code: str) -> None:
    with pytest.raises((ValueError, UnicodeEncodeError)):
        encode_error(code, "message")


def test_error_message_cut_inside_a_character_still_decodes() -> None:
    frame = encode_error("e", "a" + "é" * 2000)
    code, message = decode_error(frame[HEADER.size :])
    assert code == "e"
    assert message.startswith("a" + "é" * 1021)
    assert len(message.encode()) <= MAX_CONTROL_PAYLOAD - 2 + 3  # at most one U+FFFD added


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\x05abc", b"\x41" + b"a" * 80])
def test_error_truncated(payload: bytes) -> None:
    with pytest.raises(ProtocolError, match="truncated"):
        decode_error(payload)


def test_an_error_code_that_is_not_ascii_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="ASCII"):
        decode_error(b"\x02\xff\xfeok")


def test_error_invalid_utf8_is_replaced() -> None:
    assert decode_error(b"\x01e\xff\xfeok") == ("e", "\ufffd\ufffdok")


def test_done_round_trip() -> None:
    assert parse_header(encode_done()) == (FrameType.DONE, 0)


# -- headers --------------------------------------------------------------------------------


def test_parse_header_accepts_every_type_and_the_largest_payload() -> None:
    for kind in FrameType:
        assert parse_header(header(kind=kind, length=MAX_CONTROL_PAYLOAD)) == (
            kind,
            MAX_CONTROL_PAYLOAD,
        )
    assert parse_header(bytearray(header(kind=2, length=9))) == (FrameType.OBJECT, 9)
    assert parse_header(memoryview(header(kind=3))) == (FrameType.DONE, 0)


@pytest.mark.parametrize("magic", [b"XE", b"xd", b"\x00\x00", b"GE"])
def test_parse_header_bad_magic(magic: bytes) -> None:
    with pytest.raises(ProtocolError, match="bad magic"):
        parse_header(header(magic=magic))


def test_parse_header_http_is_not_xdt() -> None:
    with pytest.raises(ProtocolError, match="not speaking the xdt pull protocol"):
        parse_header(b"GET / HTTP/1.1\r\n")


@pytest.mark.parametrize("version", [0, PROTOCOL_VERSION + 1, 255])
def test_parse_header_bad_version(version: int) -> None:
    with pytest.raises(ProtocolError, match=f"version {version}"):
        parse_header(header(version=version))


@pytest.mark.parametrize("kind", [0, 6, 255])
def test_parse_header_unknown_type(kind: int) -> None:
    with pytest.raises(ProtocolError, match=f"unknown frame type {kind}"):
        parse_header(header(kind=kind))


@pytest.mark.parametrize("length", [MAX_CONTROL_PAYLOAD + 1, 1 << 20, (1 << 32) - 1])
def test_parse_header_oversized(length: int) -> None:
    with pytest.raises(ProtocolError, match=f"{length} bytes exceeds {MAX_CONTROL_PAYLOAD}"):
        parse_header(header(kind=FrameType.PULL, length=length))


# -- decode_pull on bad payloads ------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\x00\x05abc", b"\x01\xff"])
def test_decode_pull_truncated(payload: bytes) -> None:
    with pytest.raises(ProtocolError, match="truncated"):
        decode_pull(payload)


@pytest.mark.parametrize(
    "payload", [b"\x00\x02\xff\xfe" + PROOF + b"token", b"\x00\x01t" + PROOF + b"to\xc3\xa9ken"]
)
def test_decode_pull_bad_text(payload: bytes) -> None:
    with pytest.raises(ProtocolError, match="not valid"):
        decode_pull(payload)


def test_decode_pull_every_prefix() -> None:
    request = PullRequest(token="Zm9vYmFy", tenant="tenant", proof=PROOF, want_fd=True)
    payload = encode_pull(request)[HEADER.size :]
    token_start = 2 + len(b"tenant") + 16
    for length in range(len(payload) + 1):
        prefix = payload[:length]
        if length < token_start:
            with pytest.raises(ProtocolError):
                decode_pull(prefix)
        else:
            decoded = decode_pull(prefix)
            assert (decoded.tenant, decoded.proof) == ("tenant", PROOF)
            assert decoded.want_fd is True
            assert decoded.token == request.token[: length - token_start]


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=MAX_CONTROL_PAYLOAD))
def test_decode_pull_garbage_raises_only_protocol_error(payload: bytes) -> None:
    try:
        request = decode_pull(payload)
    except ProtocolError:
        assert (
            len(payload) < 2
            or len(payload) < 2 + payload[1] + 16
            or not payload[2 + payload[1] + 16 :].isascii()
            or not payload[2:].isascii()
        )
    else:
        assert isinstance(request.token, str)
        assert request.token.isascii()
        assert len(request.tenant.encode()) == payload[1]
        assert encode_pull(request)[HEADER.size + 2 :] == payload[2:]


# -- the frame reader -----------------------------------------------------------------------


def test_reader_needs_room_for_a_control_frame() -> None:
    with pytest.raises(ValueError, match="whole control frame"):
        FrameReader(DEFAULT_CAPACITY - 1)
    assert len(FrameReader().space()) == DEFAULT_CAPACITY
    assert len(FrameReader(DEFAULT_CAPACITY + 100).space()) == DEFAULT_CAPACITY + 100


def test_reader_waits_for_whole_frames() -> None:
    reader = FrameReader()
    frame = encode_error("reference_expired", "expired")
    for byte in frame[:-1]:
        assert write(reader, bytes((byte,))) == []
    assert reader.buffered == len(frame) - 1
    assert write(reader, frame[-1:]) == [(FrameType.ERROR, frame[HEADER.size :])]
    assert reader.buffered == 0
    assert reader.next_frame() is None


def test_reader_yields_several_frames_from_one_read() -> None:
    reader = FrameReader()
    data = encode_done() + encode_object(ObjectHeader(5)) + encode_done()
    assert [kind for kind, _ in write(reader, data)] == [
        FrameType.DONE,
        FrameType.OBJECT,
        FrameType.DONE,
    ]


def test_reader_slides_a_partial_frame_to_the_front() -> None:
    reader = FrameReader()
    done = encode_done()
    big = encode_error("i", "m" * (MAX_CONTROL_PAYLOAD - 2))
    # Fill the buffer to its very end, then leave a partial frame there.
    filler = done * ((DEFAULT_CAPACITY - 100) // len(done))
    data = filler + big
    frames = write(reader, data)
    assert frames[-1] == (FrameType.ERROR, big[HEADER.size :])
    assert len(frames) == len(filler) // len(done) + 1


def test_reader_rejects_garbage() -> None:
    reader = FrameReader()
    space = reader.space()
    space[:8] = b"GET / HT"
    reader.advance(8)
    with pytest.raises(ProtocolError):
        reader.next_frame()


def test_take_into_moves_raw_bytes_after_an_object_frame() -> None:
    reader = FrameReader()
    raw = bytes(range(200))
    data = encode_object(ObjectHeader(size=len(raw))) + raw + encode_done()
    space = reader.space()
    space[: len(data)] = data
    reader.advance(len(data))
    kind, payload = reader.next_frame() or (None, b"")
    assert kind is FrameType.OBJECT
    assert decode_object(payload) == ObjectHeader(size=200)
    destination = bytearray(200)
    assert reader.take_into(memoryview(destination)[:50]) == 50
    assert reader.take_into(memoryview(destination)[50:]) == 150
    assert bytes(destination) == raw
    assert reader.buffered == len(encode_done())
    assert reader.next_frame() == (FrameType.DONE, b"")
    assert reader.take_into(memoryview(bytearray(10))) == 0
    assert reader.buffered == 0
    assert len(reader.space()) == DEFAULT_CAPACITY


def test_take_into_takes_only_what_is_buffered() -> None:
    reader = FrameReader()
    write(reader, encode_object(ObjectHeader(size=1000)))  # consumed as a frame
    write_raw = reader.space()
    write_raw[:3] = b"abc"
    reader.advance(3)
    destination = bytearray(1000)
    assert reader.take_into(memoryview(destination)) == 3
    assert destination[:3] == b"abc"
    assert reader.buffered == 0


frame_values = st.one_of(
    st.builds(
        PullRequest,
        token=st.text(alphabet=B64URL, max_size=782),
        tenant=st.text(st.characters(codec="utf-8"), max_size=60),
        proof=st.binary(min_size=16, max_size=16),
        want_fd=st.booleans(),
    ),
    st.builds(ObjectHeader, size=st.integers(0, (1 << 64) - 1), fd_attached=st.booleans()),
    st.tuples(
        st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=64),
        st.text(st.characters(codec="utf-8"), max_size=400),
    ),
    st.just("DONE"),
)


def encode_value(value: object) -> bytes:
    if isinstance(value, PullRequest):
        return encode_pull(value)
    if isinstance(value, ObjectHeader):
        return encode_object(value)
    if isinstance(value, tuple):
        return encode_error(*value)
    return encode_done()


def decode_value(kind: FrameType, payload: bytes) -> object:
    if kind is FrameType.PULL:
        return decode_pull(payload)
    if kind is FrameType.OBJECT:
        return decode_object(payload)
    if kind is FrameType.ERROR:
        return decode_error(payload)
    assert kind is FrameType.DONE
    assert payload == b""
    return "DONE"


chunk_sizes = st.lists(st.integers(1, 3000), min_size=1, max_size=20)
capacities = st.sampled_from([DEFAULT_CAPACITY, DEFAULT_CAPACITY + 1, 4096, 64 << 10])


@settings(max_examples=250, deadline=None)
@given(values=st.lists(frame_values, max_size=30), sizes=chunk_sizes, capacity=capacities)
def test_valid_frames_come_out_identical_and_in_order(
    values: list[object], sizes: list[int], capacity: int
) -> None:
    data = b"".join(encode_value(value) for value in values)
    reader = FrameReader(capacity)
    frames = feed(reader, data, sizes, capacity)
    assert [decode_value(kind, payload) for kind, payload in frames] == values
    assert reader.buffered == 0


noise = st.one_of(
    st.binary(max_size=300),
    frame_values.map(encode_value),
    st.builds(
        lambda magic, version, kind, length, tail: HEADER.pack(magic, version, kind, length) + tail,
        st.sampled_from([b"XD", b"XD", b"XD", b"DX"]),
        st.sampled_from([PROTOCOL_VERSION, PROTOCOL_VERSION, 0, PROTOCOL_VERSION - 1]),
        st.integers(0, 6),
        st.one_of(st.integers(0, MAX_CONTROL_PAYLOAD + 2), st.integers(0, (1 << 32) - 1)),
        st.binary(max_size=100),
    ),
)


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(noise, max_size=12), sizes=chunk_sizes, capacity=capacities)
def test_any_bytes_give_frames_or_protocol_error(
    parts: list[bytes], sizes: list[int], capacity: int
) -> None:
    data = b"".join(parts)
    expected_frames, expected_error = model(data)
    reader = FrameReader(capacity)
    frames: Frames = []
    refused = False
    try:
        feed(reader, data, sizes, capacity, frames)
    except ProtocolError:
        refused = True
    assert reader.buffered <= capacity
    assert refused == expected_error
    assert frames == expected_frames


@settings(max_examples=200, deadline=None)
@given(
    raw=st.binary(max_size=10_000),
    sizes=chunk_sizes,
    capacity=capacities,
    trailer=st.lists(frame_values, max_size=3),
)
def test_object_bytes_split_between_reader_and_stream(
    raw: bytes, sizes: list[int], capacity: int, trailer: list[object]
) -> None:
    """As the pull client does: frames through the reader, then the raw object bytes partly
    from the reader's read-ahead and the rest straight from the stream."""
    tail = b"".join(encode_value(value) for value in trailer)
    stream = encode_object(ObjectHeader(size=len(raw))) + raw + tail
    reader = FrameReader(capacity)
    position, index = 0, 0
    frame = None
    while frame is None:
        size = sizes[index % len(sizes)]
        index += 1
        chunk = stream[position : position + size]
        space = reader.space()
        count = min(len(space), len(chunk))
        space[:count] = chunk[:count]
        reader.advance(count)
        position += count
        frame = reader.next_frame()
    kind, payload = frame
    assert kind is FrameType.OBJECT
    assert decode_object(payload).size == len(raw)

    destination = bytearray(len(raw))
    got = reader.take_into(memoryview(destination))
    missing = len(raw) - got
    destination[got:] = stream[position : position + missing]
    position += missing
    assert bytes(destination) == raw

    frames = drain(reader) + feed(reader, stream[position:], sizes, capacity)
    assert [decode_value(kind, payload) for kind, payload in frames] == trailer
    assert reader.buffered == 0
