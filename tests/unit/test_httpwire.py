"""The HTTP/1.1 client codec (dashpay/services/httpwire.py) with plain bytes.

Answers are written here by hand as a server would send them. Proves: the request is
one well-formed message whose headers cannot smuggle another; every framing of an
answer (length, chunked, until close, no body) comes out the same however the bytes
are split; reuse is allowed only when RFC 9112 allows it and nothing trails the
answer; every hostile answer is refused with a message saying what; and arbitrary
bytes never raise anything but ``InvalidResponse``.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashpay.wire import http1 as httpwire
from dashpay.wire.http1 import (
    END_OF_MESSAGE,
    NEED_DATA,
    InvalidResponse,
    Response,
    ResponseReader,
    encode_request,
)


def feed(chunks: list[bytes], *, eof: bool = False) -> tuple[Response | None, bytes, bool, bool]:
    """Feed ``chunks`` one by one (then EOF), draining events after each:
    (response, body, ended, reusable)."""
    reader = ResponseReader()
    response: Response | None = None
    body = b""
    ended = False

    def drain() -> None:
        nonlocal response, body, ended
        while not ended:
            event = reader.next_event()
            if event is NEED_DATA:
                return
            if event is END_OF_MESSAGE:
                ended = True
            elif isinstance(event, Response):
                assert response is None, "two final answers"
                response = event
            else:
                assert isinstance(event, bytes) and event and response is not None
                body += event

    for chunk in chunks:
        reader.receive_data(chunk)
        drain()
    if eof:
        reader.receive_data(b"")
        drain()
    return response, body, ended, reader.reusable


def parse(raw: bytes, *, eof: bool = False) -> tuple[Response | None, bytes, bool, bool]:
    return feed([raw], eof=eof)


def refused(raw: bytes, *, eof: bool = False) -> str:
    with pytest.raises(InvalidResponse) as info:
        parse(raw, eof=eof)
    return str(info.value)


# -- the request ---------------------------------------------------------------------------


def test_a_request_is_one_message_with_host_and_length_first():
    wire = encode_request(
        "POST",
        "/cb?shop=1",
        "example.com:8080",
        [("Content-Type", "application/json"), ("Dashpay-Event", "receiver.paid")],
        b'{"a":1}',
    )
    assert wire == (
        b"POST /cb?shop=1 HTTP/1.1\r\n"
        b"Host: example.com:8080\r\n"
        b"Content-Length: 7\r\n"
        b"Content-Type: application/json\r\n"
        b"Dashpay-Event: receiver.paid\r\n"
        b"\r\n"
        b'{"a":1}'
    )


@pytest.mark.parametrize(
    "header",
    [
        ("Dashpay-Event", "paid\r\nX-Injected: 1"),
        ("Dashpay-Event", "paid\n"),
        ("Dashpay-Event", "a\x00b"),
        ("Dashpay-Event", " leading-space"),
        ("Dashpay-Event", "trailing-space "),
        ("Bad Name", "x"),
        ("Bad:Name", "x"),
        ("", "x"),
        ("Dashpay-Event", "caf\u00e9"),
        ("Content-Length", "0"),
        ("transfer-encoding", "chunked"),
        ("Host", "elsewhere"),
        ("Connection", "close"),
    ],
)
def test_a_request_header_that_could_smuggle_or_reframe_is_refused(header):
    with pytest.raises(ValueError, match="invalid request header"):
        encode_request("POST", "/", "example.com", [header], b"{}")


@pytest.mark.parametrize(
    ("method", "target", "authority"),
    [
        ("PO ST", "/", "h"),
        ("POST", "/a b", "h"),
        ("POST", "/\r\n", "h"),
        ("POST", "/", "h\r\nX: 1"),
    ],
)
def test_a_bad_method_target_or_host_is_refused(method, target, authority):
    with pytest.raises(ValueError, match="invalid"):
        encode_request(method, target, authority, [], b"")


# -- framings ------------------------------------------------------------------------------

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CHUNKED = (
    b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\nX-Id: 7\r\n\r\n"
    b"5;name=value\r\nhello\r\n"
    b"1 ; ext\r\n,\r\n"
    b"6\r\n world\r\n"
    b"0\r\nX-Trailer: ignored\r\n\r\n"
)
UNTIL_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of this"


def test_a_length_framed_answer_is_read_and_the_connection_kept():
    response, body, ended, reusable = parse(OK)
    assert response == Response(200, ((b"content-length", b"2"),))
    assert (body, ended, reusable) == (b"ok", True, True)


def test_header_names_are_lower_cased_and_values_trimmed():
    raw = b"HTTP/1.1 503 Busy\r\nRetry-After:  120 \t\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n"
    response, body, ended, _ = parse(raw)
    assert response is not None and response.status == 503
    assert response.headers == (
        (b"retry-after", b"120"),
        (b"x-empty", b""),
        (b"content-length", b"0"),
    )
    assert (body, ended) == (b"", True)


def test_a_chunked_answer_is_joined_extensions_and_trailers_ignored():
    response, body, ended, reusable = parse(CHUNKED)
    assert response is not None and response.status == 202
    assert (body, ended, reusable) == (b"hello, world", True, True)


def test_an_answer_without_length_runs_until_close_and_is_not_reusable():
    response, body, ended, _ = parse(UNTIL_CLOSE)
    assert (response is not None, body, ended) == (True, b"all of this", False)
    _, body, ended, reusable = parse(UNTIL_CLOSE, eof=True)
    assert (body, ended, reusable) == (b"all of this", True, False)


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_have_no_body_whatever_their_headers_say(status):
    raw = b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % status
    response, body, ended, reusable = parse(raw)
    assert response is not None and response.status == status
    assert (body, ended, reusable) == (b"", True, True)


def test_informational_answers_are_skipped():
    raw = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n" + OK
    )
    response, body, ended, reusable = parse(raw)
    assert response is not None and response.status == 200
    assert (body, ended, reusable) == (b"ok", True, True)


def test_a_status_line_without_a_reason_is_accepted():
    for line in (b"HTTP/1.1 200", b"HTTP/1.1 200 "):
        response, body, _, _ = parse(line + b"\r\nContent-Length: 2\r\n\r\nok")
        assert response is not None and (response.status, body) == (200, b"ok")


def test_identical_content_lengths_are_one_length():
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 02\r\n\r\nok"
    assert parse(raw)[1:3] == (b"ok", True)


# -- reuse (RFC 9112 §9.3) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reusable"),
    [
        (OK, True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", False),
        (b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\nContent-Length: 2\r\n\r\nok", False),
        (b"HTTP/1.1 200 OK\r\nConnection: upgrade\r\nContent-Length: 2\r\n\r\nok", True),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", True),
        (b"HTTP/1.0 200 OK\r\nConnection: x, Keep-Alive\r\nContent-Length: 2\r\n\r\nok", True),
        (OK + b"HTTP/1.1 200 OK\r\n", False),  # pipelined garbage after the answer
        (b"HTTP/1.1 204 No Content\r\n\r\nextra", False),
        (CHUNKED + b"x", False),
    ],
)
def test_reuse_follows_the_version_the_connection_header_and_trailing_bytes(raw, reusable):
    response, _, ended, result = parse(raw)
    assert response is not None and ended
    assert result is reusable


def test_bytes_arriving_after_the_end_forbid_reuse():
    reader = ResponseReader()
    reader.receive_data(OK)
    events = [reader.next_event() for _ in range(3)]
    assert events[1:] == [b"ok", END_OF_MESSAGE] and reader.reusable
    reader.receive_data(b"HTTP/1.1 200 OK\r\n")
    assert reader.next_event() is END_OF_MESSAGE and not reader.reusable


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"SMTP 220 hello\r\n\r\n", "invalid status line"),
        (b"HTTP/2 200 OK\r\n\r\n", "invalid status line"),
        (b"HTTP/1.2 200 OK\r\n\r\n", "invalid status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "invalid status line"),
        (b"HTTP/1.1 20 OK\r\n\r\n", "invalid status line"),
        (b"HTTP/1.1 600 Odd\r\n\r\n", "invalid status line"),
        (b"HTTP/1.1 099 Odd\r\n\r\n", "invalid status line"),
        (b"http/1.1 200 OK\r\n\r\n", "invalid status line"),
        (b"HTTP/1.1  200 OK\r\n\r\n", "invalid status line"),
        (b"\r\nHTTP/1.1 200 OK\r\n\r\n", "invalid status line"),
        (b"HTTP/1.1 101 Switching\r\n\r\n", "101 Switching Protocols"),
        (b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n", "invalid header name"),
        (b"HTTP/1.1 200 OK\r\nX-A : x\r\n\r\n", "whitespace before the colon"),
        (b"HTTP/1.1 200 OK\r\nX-A: x\r\n folded\r\n\r\n", "obs-fold"),
        (b"HTTP/1.1 200 OK\r\nX-A: x\r\n\tfolded\r\n\r\n", "obs-fold"),
        (b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", "without a colon"),
        (b"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n", "invalid header name"),
        (b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n", "bare CR or LF"),
        (b"HTTP/1.1 200 OK\r\nX-A: a\nX-B: b\r\n\r\n", "bare CR or LF"),
        (b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", "bare CR or LF"),
        (b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n\r\n", "control character"),
        (b"HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\n\r\n", "control character"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nok", "conflicting"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nok", "conflicting"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nok", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 40 + b"\r\n\r\n", "too large"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "unsupported Transfer-Encoding",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "unsupported Transfer-Encoding",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
            "both Transfer-Encoding and Content-Length",
        ),
        (b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.0"),
        (b"HTTP/1.1 200 OK\r\nX-Filler: " + b"a" * 16 * 1024 + b"\r\n\r\n", "over 16384 bytes"),
        (b"HTTP/1.1 100 Continue\r\n\r\n" * 17 + OK, "informational"),
    ],
)
def test_a_hostile_head_is_refused_with_a_reason(raw, message):
    assert message in refused(raw)


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        (b"g\r\n", "invalid chunk-size line"),
        (b"-1\r\n", "invalid chunk-size line"),
        (b"\r\n", "invalid chunk-size line"),
        (b"0x5\r\n", "invalid chunk-size line"),
        (b"1" * 17 + b"\r\n", "invalid chunk-size line"),
        (b"5;" + b"e" * 2048 + b"\r\n", "chunk-size line is over"),
        (b"5\nhello\r\n", "control character"),
        (b"5\r\nhelloXX0\r\n\r\n", "not followed by CRLF"),
        (b"2\r\nok\r\n0\r\nbad trailer\r\n\r\n", "without a colon"),
        (b"0\r\nBad Name: x\r\n\r\n", "invalid header name"),
        (b"0\r\nX-T: " + b"t" * 16 * 1024 + b"\r\n\r\n", "trailer section is over"),
        (b"0\r\nX-T: a\rb\r\n\r\n", "control character"),
    ],
)
def test_a_hostile_chunked_body_is_refused_with_a_reason(chunks, message):
    assert message in refused(CHUNKED_HEAD + chunks)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Le", "inside the response head"),
        (b"HTTP/1.1 100 Continue\r\n\r\n", "inside the response head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", "3 bytes before the end"),
        (CHUNKED_HEAD + b"5\r\nhel", "inside a chunked body"),
        (CHUNKED_HEAD + b"0\r\n", "inside a chunked body"),
    ],
)
def test_a_connection_closed_inside_a_message_is_an_error(raw, message):
    assert message in refused(raw, eof=True)


def test_a_broken_reader_stays_broken():
    reader = ResponseReader()
    reader.receive_data(b"NOPE\r\n\r\n")
    for _ in range(2):
        with pytest.raises(InvalidResponse, match="invalid status line"):
            reader.next_event()


def test_a_head_at_exactly_the_limit_is_read_and_one_byte_more_is_not():
    def head_of(size: int) -> bytes:
        start = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Filler: "
        return start + b"a" * (size - len(start))

    exact = head_of(httpwire.MAX_HEADER_BYTES)
    assert parse(exact + b"\r\n\r\n")[2] is True
    assert "over 16384 bytes" in refused(head_of(httpwire.MAX_HEADER_BYTES + 1) + b"\r\n\r\n")


def test_a_head_over_the_limit_is_refused_before_its_end_arrives():
    assert "over 16384 bytes" in refused(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 20000)


# -- splitting -------------------------------------------------------------------------------

SAMPLES = [
    OK,
    CHUNKED,
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 503 Busy\r\nRetry-After: 9\r\n"
    b"Connection: keep-alive\r\nContent-Length: 4\r\n\r\nbusy",
    b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n",
]


@pytest.mark.parametrize("raw", SAMPLES)
def test_an_answer_split_at_every_byte_boundary_parses_the_same(raw):
    whole = parse(raw)
    assert whole[2] is True
    for cut in range(1, len(raw)):
        assert feed([raw[:cut], raw[cut:]]) == whole, cut
    assert feed([raw[i : i + 1] for i in range(len(raw))]) == whole


def test_an_until_close_answer_split_anywhere_parses_the_same():
    whole = parse(UNTIL_CLOSE, eof=True)
    for cut in range(1, len(UNTIL_CLOSE)):
        assert feed([UNTIL_CLOSE[:cut], UNTIL_CLOSE[cut:]], eof=True) == whole, cut


# -- arbitrary input -------------------------------------------------------------------------

PREFIXES = [
    b"",
    b"HTTP/1.1 200 OK\r\n",
    CHUNKED_HEAD,
    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
]
SEEDS = [b"\r\n", b"\r\n\r\n", b":", b" ", b"0", b"5", b";", b"\r", b"\n", b"chunked", b"HTTP/1.1 "]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.sampled_from(PREFIXES),
    pieces=st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(SEEDS)), max_size=12),
    eof=st.booleans(),
)
def test_arbitrary_bytes_raise_nothing_but_invalid_response(prefix, pieces, eof):
    chunks = [prefix, *pieces] if prefix else pieces
    with contextlib.suppress(InvalidResponse):
        feed([c for c in chunks if c], eof=eof)
