"""The RFC 6455 client codec (dashpay/insight/wsframe.py) with plain bytes.

Server frames are built here by hand from the RFC's layout (section 5.2), not with the
module's own encoder, so a mistake in one cannot hide a mistake in the other. Proves:
the handshake checks, masking of what we send, every message a read completes comes out
in order, frames split at every byte boundary decode the same, fragments and
interleaved control frames, the close handshake, and that hostile frames fail the link
with the right close code instead of raising.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashpay.wire import websocket as wsframe
from dashpay.wire.websocket import (
    BinaryMessage,
    CloseReceived,
    Failure,
    FrameReader,
    HandshakeError,
    PingReceived,
    PongReceived,
)

LIMIT = 4096


def server_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = None,
    length_form: int | None = None,
) -> bytes:
    """A frame as a server would write it; ``length_form`` forces 7/16/64-bit lengths."""
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
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return head + mask + payload
    return head + payload


def text(message: str, **kwargs) -> bytes:
    return server_frame(0x1, message.encode(), **kwargs)


def client_frames(data: bytes) -> list[tuple[int, bool, bytes]]:
    """Decode what the client sent: (opcode, fin, unmasked payload); all must be masked."""
    frames = []
    pos = 0
    while pos < len(data):
        first, second = data[pos], data[pos + 1]
        assert second & 0x80, "a client frame must be masked (RFC 6455 5.3)"
        size = second & 0x7F
        pos += 2
        if size == 126:
            size = int.from_bytes(data[pos : pos + 2], "big")
            pos += 2
        elif size == 127:
            size = int.from_bytes(data[pos : pos + 8], "big")
            pos += 8
        key = data[pos : pos + 4]
        pos += 4
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(data[pos : pos + size]))
        pos += size
        frames.append((first & 0x0F, bool(first & 0x80), payload))
    return frames


def reader() -> FrameReader:
    return FrameReader(max_message_bytes=LIMIT)


# -- the opening handshake -------------------------------------------------------------------


def test_accept_token_matches_the_rfc_example():
    assert wsframe.accept_token("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_request_asks_for_a_plain_version_13_upgrade():
    request = wsframe.handshake_request(
        "insight.example", 3001, "/socket.io/?EIO=3&transport=websocket", "a2V5", tls=False
    ).decode()
    lines = request.split("\r\n")
    assert lines[0] == "GET /socket.io/?EIO=3&transport=websocket HTTP/1.1"
    assert "Host: insight.example:3001" in lines
    assert "Upgrade: websocket" in lines and "Connection: Upgrade" in lines
    assert "Sec-WebSocket-Key: a2V5" in lines and "Sec-WebSocket-Version: 13" in lines
    assert not [line for line in lines if line.lower().startswith("sec-websocket-extensions")]
    assert request.endswith("\r\n\r\n")
    https = wsframe.handshake_request("h", 443, "/", "k", tls=True).decode()
    assert "Host: h\r\n" in https  # default port left out
    v6 = wsframe.handshake_request("::1", 80, "/", "k", tls=False).decode()
    assert "Host: [::1]\r\n" in v6


def accept_head(key: str, *extra: str) -> bytes:
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {base64.b64encode(digest).decode()}",
        *extra,
    ]
    return "\r\n".join(lines).encode()


def test_a_correct_101_is_accepted_and_the_bytes_after_it_are_kept():
    key = wsframe.new_key()
    assert len(base64.b64decode(key)) == 16
    head, rest = wsframe.split_handshake_response(accept_head(key) + b"\r\n\r\n" + text("0{}"))
    wsframe.check_handshake_response(head, key)
    assert rest == text("0{}")
    lower = head.replace(b"Upgrade: websocket", b"upgrade: WebSocket").replace(
        b"Connection: Upgrade", b"Connection: keep-alive, Upgrade"
    )
    wsframe.check_handshake_response(lower, key)


def test_an_incomplete_head_waits_and_an_endless_one_is_refused():
    assert wsframe.split_handshake_response(b"HTTP/1.1 101 Switching\r\nUpgrade: web") is None
    with pytest.raises(HandshakeError, match="over 16384 bytes"):
        wsframe.split_handshake_response(b"HTTP/1.1 101 x\r\nX: " + b"a" * 20000)


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0",
            r"refused the websocket upgrade \(HTTP 404 Not Found\)",
        ),
        (b"HTTP/1.1 400 Bad Request", r"\(HTTP 400 Bad Request\)"),
        (b"SSH-2.0-OpenSSH_9.6", "not HTTP"),
    ],
)
def test_a_non_101_answer_names_the_status(head, message):
    with pytest.raises(HandshakeError, match=message) as error:
        wsframe.check_handshake_response(head, "a2V5")
    if b"HTTP/1.1" in head:
        assert error.value.status == int(head.split()[1])


def test_a_101_with_wrong_or_missing_proofs_is_refused():
    key = wsframe.new_key()
    good = accept_head(key)
    with pytest.raises(HandshakeError, match="Sec-WebSocket-Accept"):
        wsframe.check_handshake_response(accept_head(wsframe.new_key()), key)
    with pytest.raises(HandshakeError, match="Upgrade: websocket"):
        wsframe.check_handshake_response(good.replace(b"Upgrade: websocket", b"Upgrade: h2c"), key)
    with pytest.raises(HandshakeError, match="Connection: Upgrade"):
        wsframe.check_handshake_response(
            good.replace(b"Connection: Upgrade", b"Connection: close"), key
        )
    with pytest.raises(HandshakeError, match="extension"):
        wsframe.check_handshake_response(
            accept_head(key, "Sec-WebSocket-Extensions: permessage-deflate"), key
        )
    with pytest.raises(HandshakeError, match="subprotocol"):
        wsframe.check_handshake_response(accept_head(key, "Sec-WebSocket-Protocol: chat"), key)
    with pytest.raises(HandshakeError, match="malformed header"):
        wsframe.check_handshake_response(good + b"\r\nno colon here", key)


# -- frames we send ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536])
def test_client_frames_are_masked_final_and_carry_the_payload(size):
    payload = bytes(range(256)) * (size // 256 + 1)
    payload = payload[:size]
    data = wsframe.encode_frame(0x2, payload)
    assert client_frames(data) == [(0x2, True, payload)]


def test_text_and_close_frames_and_fresh_mask_keys():
    assert client_frames(wsframe.encode_text('42["subscribe","inv"] é')) == [
        (0x1, True, '42["subscribe","inv"] é'.encode())
    ]
    assert client_frames(wsframe.encode_close(1002, "bad")) == [(0x8, True, b"\x03\xeabad")]
    long_reason = wsframe.encode_close(1000, "x" * 500)
    assert len(client_frames(long_reason)[0][2]) == 125  # a control frame's maximum
    first, second = wsframe.encode_text("2"), wsframe.encode_text("2")
    assert first[2:6] != second[2:6]  # random key per frame (section 5.3)
    known = wsframe.encode_frame(0x1, b"Hello", mask_key=b"\x37\xfa\x21\x3d")
    assert known == bytes.fromhex("818537fa213d7f9f4d5158")  # RFC 6455 section 5.7


# -- frames we receive ---------------------------------------------------------------------


def test_every_message_of_one_read_comes_out_in_order():
    events = ['42["tx",{"txid":"aa"}]', "3", "é" * 60, "x" * 200, "y" * 70000]
    r = FrameReader(max_message_bytes=100_000)
    assert r.receive_data(b"".join(text(e) for e in events)) == events
    assert r.data_to_send() == b""


def test_lengths_in_their_longer_forms_are_accepted():
    r = reader()
    data = text("short", length_form=16) + text("also short", length_form=64)
    assert r.receive_data(data) == ["short", "also short"]


STREAM_PARTS = [
    text('42["tx",{"a":1}]'),
    server_frame(0x9, b"are you there"),  # ping
    server_frame(0x1, b"frag", fin=False),
    server_frame(0xA, b"pong!"),  # a control frame between fragments
    server_frame(0x0, " mé".encode()[:3], fin=False),  # splits the two-byte é
    server_frame(0x0, " mé".encode()[3:] + b"nt"),
    text("m" * 300),  # 16-bit length
    server_frame(0x2, b"\x00\x01", fin=False),
    server_frame(0x0, b"\x02"),
    server_frame(0x8, (1001).to_bytes(2, "big") + b"going away"),
]
STREAM = b"".join(STREAM_PARTS)
STREAM_EVENTS = [
    '42["tx",{"a":1}]',
    PingReceived(b"are you there"),
    PongReceived(b"pong!"),
    "frag mént",
    "m" * 300,
    BinaryMessage(b"\x00\x01\x02"),
    CloseReceived(1001, "going away"),
]


def test_fragments_control_frames_and_close_decode_in_order():
    r = reader()
    assert r.receive_data(STREAM) == STREAM_EVENTS
    sent = client_frames(r.data_to_send())
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


def test_a_close_frame_without_a_code_is_answered_with_an_empty_close():
    r = reader()
    assert r.receive_data(server_frame(0x8, b"")) == [CloseReceived(None, "")]
    assert client_frames(r.data_to_send()) == [(0x8, True, b"")]


def failure_of(data: bytes, limit: int = LIMIT) -> Failure:
    r = FrameReader(max_message_bytes=limit)
    events = r.receive_data(data)
    assert events, "expected a Failure"
    failure = events[-1]
    assert isinstance(failure, Failure), events
    assert r.closed
    (sent,) = client_frames(r.data_to_send())
    assert sent[0] == 0x8 and int.from_bytes(sent[2][:2], "big") == failure.code
    assert r.receive_data(text("ignored")) == []
    return failure


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (text("hi", mask=b"abcd"), 1002, "masked"),
        (server_frame(0x3, b""), 1002, "reserved opcode 0x3"),
        (server_frame(0xB, b""), 1002, "reserved opcode 0xb"),
        (server_frame(0x1, b"x", rsv=4), 1002, "reserved bits"),
        (server_frame(0x1, b"x", rsv=1), 1002, "reserved bits"),
        (server_frame(0x9, b"p" * 126), 1002, "control frame of 126 bytes"),
        (server_frame(0x9, b"p", fin=False), 1002, "fragmented control frame"),
        (server_frame(0x0, b"orphan"), 1002, "continuation without a message"),
        (server_frame(0x1, b"a", fin=False) + text("b"), 1002, "inside a fragmented"),
        (server_frame(0x8, b"\x03"), 1002, "1-byte payload"),
        (server_frame(0x8, (1005).to_bytes(2, "big")), 1002, "invalid code 1005"),
        (server_frame(0x8, (999).to_bytes(2, "big")), 1002, "invalid code 999"),
        (server_frame(0x8, (1000).to_bytes(2, "big") + b"\xff"), 1007, "reason is not valid UTF-8"),
        (text("ok") + server_frame(0x1, b"\xc3\x28"), 1007, "not valid UTF-8"),
        (server_frame(0x1, b"\xed\xa0\x80"), 1007, "not valid UTF-8"),  # a UTF-16 surrogate
        (server_frame(0x1, b"\xc3", fin=False) + server_frame(0x0, b"x"), 1007, "UTF-8"),
        (bytes((0x81, 127)) + (1 << 63).to_bytes(8, "big"), 1002, "top bit"),
    ],
)
def test_hostile_frames_fail_the_link_with_a_close_code_and_never_raise(data, code, words):
    failure = failure_of(data)
    assert failure.code == code
    assert words in failure.reason


def test_messages_before_a_bad_frame_in_the_same_read_are_kept():
    r = reader()
    events = r.receive_data(text("first") + text("second") + server_frame(0x3, b""))
    assert events[:2] == ["first", "second"]
    assert isinstance(events[2], Failure)


def test_an_oversized_message_fails_on_its_header_before_the_payload_arrives():
    header_only = bytes((0x81, 127)) + (10**9).to_bytes(8, "big")
    failure = failure_of(header_only)
    assert failure.code == 1009
    assert "4096-byte limit" in failure.reason
    assert failure_of(text("z" * 200), limit=100).code == 1009  # the 7/16-bit fast path too
    assert failure_of(text("z" * 100), limit=99).code == 1009


def test_fragments_adding_up_past_the_limit_fail_with_1009():
    data = server_frame(0x1, b"a" * 60, fin=False) + server_frame(0x0, b"b" * 60)
    assert failure_of(data, limit=100).code == 1009
    r = FrameReader(max_message_bytes=120)
    assert r.receive_data(data) == ["a" * 60 + "b" * 60]


def test_a_message_exactly_at_the_limit_passes():
    r = FrameReader(max_message_bytes=300)
    assert r.receive_data(text("q" * 300)) == ["q" * 300]


@given(st.binary(max_size=400))
@settings(max_examples=400, deadline=None)
def test_arbitrary_bytes_never_raise(data):
    r = FrameReader(max_message_bytes=256)
    for event in r.receive_data(data) + r.receive_data(data):
        assert isinstance(
            event, str | BinaryMessage | PingReceived | PongReceived | CloseReceived | Failure
        )
    r.data_to_send()
