"""The server role of the RFC 6455 codec (dashpay/wire/websocket.py), with plain bytes.

The sandbox's Insight server reads masked client frames and writes unmasked ones with
the same FrameReader the daemon uses as a client. Client frames are built here by hand
from the RFC's layout (section 5.2), not with the module's encoder, and the server's
frames are decoded by hand, so a mistake in one cannot hide a mistake in the other.
Proves: the server's handshake checks, that what the server sends is never masked,
masked frames decode the same split at every byte, unmasked client frames and hostile
frames fail the link with the right close code instead of raising, and the size limit
holds before the payload arrives.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashpay.wire import websocket as wsframe
from dashpay.wire.websocket import (
    SERVER,
    BinaryMessage,
    CloseReceived,
    Failure,
    FrameReader,
    PingReceived,
    PongReceived,
)

LIMIT = 4096
KEY = b"\x37\xfa\x21\x3d"


def client_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = KEY,
    length_form: int | None = None,
) -> bytes:
    """A frame as a client would write it (masked unless ``mask`` is None)."""
    size = len(payload)
    form = length_form or (7 if size < 126 else 16 if size < 65536 else 64)
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask else 0
    if form == 7:
        head = bytes((first, mask_bit | size))
    elif form == 16:
        head = bytes((first, mask_bit | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((first, mask_bit | 127)) + size.to_bytes(8, "big")
    if mask:
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + payload


def text(message: str, **kwargs) -> bytes:
    return client_frame(0x1, message.encode(), **kwargs)


def server_frames(data: bytes) -> list[tuple[int, bool, bytes]]:
    """Decode what the server sent: (opcode, fin, payload); none may be masked."""
    frames = []
    pos = 0
    while pos < len(data):
        first, second = data[pos], data[pos + 1]
        assert not second & 0x80, "a server frame must not be masked (RFC 6455 5.1)"
        size = second & 0x7F
        pos += 2
        if size == 126:
            size = int.from_bytes(data[pos : pos + 2], "big")
            pos += 2
        elif size == 127:
            size = int.from_bytes(data[pos : pos + 8], "big")
            pos += 8
        frames.append((first & 0x0F, bool(first & 0x80), data[pos : pos + size]))
        pos += size
    return frames


def reader(limit: int = LIMIT) -> FrameReader:
    return FrameReader(max_message_bytes=limit, role=SERVER)


# -- the server's side of the handshake ------------------------------------------------------


def test_a_good_upgrade_request_yields_its_key():
    key = base64.b64encode(bytes(16)).decode()
    assert wsframe.server_handshake_key("GET", "13", f" {key} ") == key
    # The answer the server sends with it, from the RFC's own example (section 1.3).
    assert wsframe.accept_token("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    ("method", "version", "key"),
    [
        ("POST", "13", base64.b64encode(bytes(16)).decode()),
        ("GET", "8", base64.b64encode(bytes(16)).decode()),
        ("GET", None, base64.b64encode(bytes(16)).decode()),
        ("GET", "13", None),
        ("GET", "13", base64.b64encode(bytes(15)).decode()),  # not 16 bytes
        ("GET", "13", "not base64!"),
        ("GET", "13", ""),
    ],
)
def test_a_bad_upgrade_request_has_no_key(method, version, key):
    assert wsframe.server_handshake_key(method, version, key) is None


def test_an_upgrade_needs_both_headers():
    assert wsframe.is_upgrade_request("WebSocket", "keep-alive, Upgrade")
    assert not wsframe.is_upgrade_request("websocket", "keep-alive")
    assert not wsframe.is_upgrade_request("h2c", "upgrade")
    assert not wsframe.is_upgrade_request(None, "upgrade")
    assert not wsframe.is_upgrade_request("websocket", None)


def test_the_role_is_checked():
    with pytest.raises(ValueError, match="role"):
        FrameReader(max_message_bytes=1, role="peer")


# -- frames the server sends -----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536])
def test_server_frames_are_unmasked_final_and_carry_the_payload(size):
    payload = (bytes(range(256)) * (size // 256 + 1))[:size]
    assert server_frames(wsframe.encode_server_frame(0x2, payload)) == [(0x2, True, payload)]
    message = payload.decode("latin-1").encode("ascii", "replace").decode()
    assert server_frames(wsframe.encode_server_text(message)) == [(0x1, True, message.encode())]


def test_server_close_frames():
    assert server_frames(wsframe.encode_server_close(1009, "big")) == [(0x8, True, b"\x03\xf1big")]
    assert server_frames(wsframe.encode_server_close(None)) == [(0x8, True, b"")]
    assert len(server_frames(wsframe.encode_server_close(1000, "x" * 500))[0][2]) == 125
    assert wsframe.encode_server_text("Hello") == bytes.fromhex("810548656c6c6f")  # RFC 5.7


# -- frames the server receives --------------------------------------------------------------


STREAM_PARTS = [
    text('42["subscribe","inv"]'),
    client_frame(0x9, b"are you there"),  # ping
    client_frame(0x1, b"frag", fin=False),
    client_frame(0xA, b"pong!"),  # a control frame between fragments
    client_frame(0x0, " mé".encode()[:3], fin=False, mask=b"\x00\xff\x10\x01"),
    client_frame(0x0, " mé".encode()[3:] + b"nt"),
    text("m" * 300),  # 16-bit length
    text("long form", length_form=64),
    client_frame(0x2, b"\x00\x01", fin=False),
    client_frame(0x0, b"\x02"),
    client_frame(0x8, (1001).to_bytes(2, "big") + b"going away"),
]
STREAM = b"".join(STREAM_PARTS)
STREAM_EVENTS = [
    '42["subscribe","inv"]',
    PingReceived(b"are you there"),
    PongReceived(b"pong!"),
    "frag mént",
    "m" * 300,
    "long form",
    BinaryMessage(b"\x00\x01\x02"),
    CloseReceived(1001, "going away"),
]


def test_masked_frames_decode_in_order_and_answers_are_unmasked():
    r = reader()
    assert r.receive_data(STREAM) == STREAM_EVENTS
    sent = server_frames(r.data_to_send())
    assert sent == [(0xA, True, b"are you there"), (0x8, True, (1001).to_bytes(2, "big"))]
    assert r.closed
    assert r.receive_data(text("after close")) == []


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_a_stream_split_at_any_byte_decodes_the_same(cut):
    r = reader()
    assert r.receive_data(STREAM[:cut]) + r.receive_data(STREAM[cut:]) == STREAM_EVENTS


def test_a_stream_fed_one_byte_at_a_time_decodes_the_same():
    r = reader()
    events = []
    for i in range(len(STREAM)):
        events += r.receive_data(STREAM[i : i + 1])
    assert events == STREAM_EVENTS


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
@settings(max_examples=200, deadline=None)
def test_a_stream_split_into_any_pieces_decodes_the_same(cuts):
    bounds = [0, *sorted(cuts), len(STREAM)]
    r = reader()
    events = []
    for start, stop in zip(bounds, bounds[1:], strict=False):
        events += r.receive_data(STREAM[start:stop])
    assert events == STREAM_EVENTS


@given(st.binary(min_size=4, max_size=4), st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_any_mask_key_unmasks_the_payload(key, payload):
    r = reader()
    assert r.receive_data(client_frame(0x2, payload, mask=key)) == [BinaryMessage(payload)]


def test_a_close_frame_without_a_code_is_answered_with_an_empty_close():
    r = reader()
    assert r.receive_data(client_frame(0x8, b"")) == [CloseReceived(None, "")]
    assert server_frames(r.data_to_send()) == [(0x8, True, b"")]


def failure_of(data: bytes, limit: int = LIMIT) -> Failure:
    r = reader(limit)
    events = r.receive_data(data)
    assert events, "expected a Failure"
    failure = events[-1]
    assert isinstance(failure, Failure), events
    assert r.closed
    (sent,) = server_frames(r.data_to_send())
    assert sent[0] == 0x8 and int.from_bytes(sent[2][:2], "big") == failure.code
    assert r.receive_data(text("ignored")) == []
    return failure


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (text("hi", mask=None), 1002, "not masked"),
        (text("ok") + client_frame(0x9, b"p", mask=None), 1002, "not masked"),
        (client_frame(0x3, b""), 1002, "reserved opcode 0x3"),
        (client_frame(0x7, b""), 1002, "reserved opcode 0x7"),
        (client_frame(0xB, b""), 1002, "reserved opcode 0xb"),
        (client_frame(0xF, b""), 1002, "reserved opcode 0xf"),
        (client_frame(0x1, b"x", rsv=4), 1002, "reserved bits"),
        (client_frame(0x9, b"p" * 126), 1002, "control frame of 126 bytes"),
        (client_frame(0x9, b"p", fin=False), 1002, "fragmented control frame"),
        (client_frame(0x0, b"orphan"), 1002, "continuation without a message"),
        (client_frame(0x1, b"a", fin=False) + text("b"), 1002, "inside a fragmented"),
        (client_frame(0x8, b"\x03"), 1002, "1-byte payload"),
        (client_frame(0x8, (1005).to_bytes(2, "big")), 1002, "invalid code 1005"),
        (client_frame(0x8, (1000).to_bytes(2, "big") + b"\xff"), 1007, "reason is not valid"),
        (client_frame(0x1, b"\xc3\x28"), 1007, "not valid UTF-8"),
        (bytes((0x81, 0xFF)) + (1 << 63).to_bytes(8, "big") + KEY, 1002, "top bit"),
    ],
)
def test_hostile_frames_fail_the_link_with_a_close_code_and_never_raise(data, code, words):
    failure = failure_of(data)
    assert failure.code == code
    assert words in failure.reason


def test_an_oversized_message_fails_on_its_header_before_the_payload_arrives():
    # The header and its masking key, no payload yet: enough to refuse it.
    header_only = bytes((0x81, 0xFF)) + (10**9).to_bytes(8, "big") + KEY
    failure = failure_of(header_only)
    assert failure.code == 1009
    assert "4096-byte limit" in failure.reason
    assert failure_of(text("z" * 200), limit=100).code == 1009
    data = client_frame(0x1, b"a" * 60, fin=False) + client_frame(0x0, b"b" * 60)
    assert failure_of(data, limit=100).code == 1009
    assert reader(120).receive_data(data) == ["a" * 60 + "b" * 60]
    assert reader(300).receive_data(text("q" * 300)) == ["q" * 300]


def test_an_incomplete_masking_key_waits():
    frame = text("hello")
    r = reader()
    assert r.receive_data(frame[:4]) == []  # header and half the key
    assert r.receive_data(frame[4:]) == ["hello"]


@given(st.binary(max_size=400))
@settings(max_examples=400, deadline=None)
def test_arbitrary_bytes_never_raise(data):
    r = reader(256)
    for event in r.receive_data(data) + r.receive_data(data):
        assert isinstance(
            event, str | BinaryMessage | PingReceived | PongReceived | CloseReceived | Failure
        )
    server_frames(r.data_to_send())
