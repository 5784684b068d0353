"""The control protocol without I/O: framing, request validation, encoding, decoding."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal

import pytest

from dashpay.domain.errors import ERROR_KINDS, DashpayError, NotFound
from dashpay.wire.jsonrpc import (
    CODE_APPLICATION,
    MAX_MESSAGE_BYTES,
    ErrorResponse,
    LineBuffer,
    LineTooLong,
    MalformedReply,
    RemoteError,
    Request,
    code_for_kind,
    decode_response,
    encode_error,
    encode_notification,
    encode_request,
    encode_result,
    parse_request,
)

# -- LineBuffer -----------------------------------------------------------------------


def test_line_split_across_feeds_comes_out_whole():
    buffer = LineBuffer(100)
    buffer.feed(b'{"a":')
    assert buffer.next_line() is None
    buffer.feed(b"1")
    assert buffer.next_line() is None
    assert buffer.pending == 6
    buffer.feed(b"}\n")
    assert buffer.next_line() == b'{"a":1}'
    assert buffer.next_line() is None
    assert buffer.pending == 0


def test_several_lines_in_one_feed_come_out_in_order_and_keep_the_remainder():
    buffer = LineBuffer(100)
    buffer.feed(b"one\ntwo\n\nthree\nfou")
    assert buffer.lines() == [b"one", b"two", b"", b"three"]
    assert buffer.pending == 3
    buffer.feed(b"r\n")
    assert buffer.lines() == [b"four"]


def test_line_of_exactly_the_limit_including_newline_is_accepted():
    buffer = LineBuffer(10)
    buffer.feed(b"123456789\n")
    assert buffer.next_line() == b"123456789"


def test_line_one_byte_over_the_limit_is_refused_even_with_its_newline():
    buffer = LineBuffer(10)
    buffer.feed(b"1234567890\n")
    with pytest.raises(LineTooLong) as info:
        buffer.next_line()
    assert info.value.kind == "too_large" and info.value.limit == 10


def test_oversize_line_without_newline_is_refused_as_soon_as_the_limit_is_reached():
    buffer = LineBuffer(10)
    buffer.feed(b"123456789")
    assert buffer.next_line() is None  # the newline may still come
    buffer.feed(b"0")
    with pytest.raises(LineTooLong):
        buffer.next_line()


def test_complete_lines_before_an_oversize_line_are_still_delivered():
    buffer = LineBuffer(10)
    buffer.feed(b"ok\n" + b"x" * 50)
    assert buffer.next_line() == b"ok"
    with pytest.raises(LineTooLong):
        buffer.next_line()


def test_default_limit_is_the_message_limit():
    buffer = LineBuffer()
    buffer.feed(b"x" * (MAX_MESSAGE_BYTES - 1) + b"\n")
    assert len(buffer.next_line()) == MAX_MESSAGE_BYTES - 1
    buffer.feed(b"x" * MAX_MESSAGE_BYTES)
    with pytest.raises(LineTooLong):
        buffer.next_line()


# -- parse_request: accepted ----------------------------------------------------------


def test_well_formed_request_is_parsed():
    request = parse_request(b'{"jsonrpc":"2.0","id":7,"method":"status","params":{"a":"b"}}')
    assert request == Request(7, "status", {"a": "b"}, notification=False)


@pytest.mark.parametrize("request_id", ["abc", 0, -5, 2**53, None])
def test_string_integer_and_null_ids_are_accepted(request_id):
    line = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "m"}).encode()
    request = parse_request(line)
    assert isinstance(request, Request)
    assert request.id == request_id and request.notification is False


def test_absent_params_are_an_empty_object():
    assert parse_request(b'{"jsonrpc":"2.0","id":1,"method":"status"}').params == {}


def test_request_without_id_is_a_notification():
    request = parse_request(b'{"jsonrpc":"2.0","method":"ping"}')
    assert isinstance(request, Request)
    assert request.notification is True and request.id is None


def test_json_numbers_in_params_are_exact_decimals_never_floats():
    request = parse_request(b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"amount":0.1}}')
    amount = request.params["amount"]
    assert isinstance(amount, Decimal) and amount == Decimal("0.1")


def test_trailing_carriage_return_is_tolerated():
    assert isinstance(parse_request(b'{"jsonrpc":"2.0","id":1,"method":"m"}\r'), Request)


# -- parse_request: refused -----------------------------------------------------------


def _refused(line: bytes) -> ErrorResponse:
    response = parse_request(line)
    assert isinstance(response, ErrorResponse), response
    assert response.message
    return response


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (b"\x00\xffnot json at all", "not UTF-8"),
        (b"not json", "not valid JSON"),
        (b'{"jsonrpc":"2.0","id":1,"method":"m"', "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":NaN}}', "NaN"),
        (b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":-Infinity}}', "Infinity"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"id":' + b"9" * 5000 + b"}", "not valid JSON"),
    ],
)
def test_malformed_json_is_a_parse_error_with_null_id(line, fragment):
    response = _refused(line)
    assert response.kind == "parse_error" and response.id is None
    assert fragment in response.message


def test_batch_is_refused_as_invalid_request():
    response = _refused(b'[{"jsonrpc":"2.0","id":1,"method":"m"}]')
    assert response.kind == "invalid_request" and response.id is None
    assert "batches are not supported" in response.message


def test_empty_array_is_refused_as_a_batch():
    assert _refused(b"[]").kind == "invalid_request"


@pytest.mark.parametrize("line", [b'"status"', b"42", b"null", b"true"])
def test_non_object_message_is_invalid_request(line):
    response = _refused(line)
    assert response.kind == "invalid_request" and "JSON object" in response.message


@pytest.mark.parametrize("bad_id", ["true", "false", "1.5", "1.0", '{"a":1}', "[1]"])
def test_bool_float_and_structured_ids_are_refused(bad_id):
    response = _refused(b'{"jsonrpc":"2.0","id":' + bad_id.encode() + b',"method":"m"}')
    assert response.kind == "invalid_request" and response.id is None
    assert '"id"' in response.message


@pytest.mark.parametrize(
    "version", [b"", b',"jsonrpc":"1.0"', b',"jsonrpc":2.0', b',"jsonrpc":null']
)
def test_missing_or_wrong_jsonrpc_version_is_invalid_request_echoing_the_id(version):
    response = _refused(b'{"id":"x","method":"m"' + version + b"}")
    assert response.kind == "invalid_request" and response.id == "x"
    assert '"2.0"' in response.message


@pytest.mark.parametrize("method", [b"", b',"method":""', b',"method":5', b',"method":null'])
def test_missing_or_non_string_method_is_invalid_request(method):
    response = _refused(b'{"jsonrpc":"2.0","id":3' + method + b"}")
    assert response.kind == "invalid_request" and response.id == 3


def test_positional_params_are_invalid_params():
    response = _refused(b'{"jsonrpc":"2.0","id":4,"method":"m","params":[1,2]}')
    assert response.kind == "invalid_params" and response.id == 4
    assert "named" in response.message


@pytest.mark.parametrize("params", [b'"x"', b"1", b"null", b"true"])
def test_scalar_params_are_invalid_request(params):
    response = _refused(b'{"jsonrpc":"2.0","id":5,"method":"m","params":' + params + b"}")
    assert response.kind == "invalid_request" and response.id == 5


# -- encoding -------------------------------------------------------------------------


def test_request_encodes_as_one_compact_line():
    line = encode_request(1, "receiver.create", {"amount": "1.5", "description": "ß\nx"})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert b" " not in line.replace(b"receiver.create", b"")
    assert "ß".encode() in line  # ensure_ascii=False: UTF-8 text, not \\u escapes
    assert parse_request(line[:-1]) == Request(
        1, "receiver.create", {"amount": "1.5", "description": "ß\nx"}
    )


def test_request_with_none_params_omits_the_member():
    assert b"params" not in encode_request(1, "status", None)


def test_notification_has_no_id_member():
    line = encode_notification("ping", {"a": 1})
    assert b'"id"' not in line
    assert parse_request(line[:-1]).notification is True


def test_result_round_trips():
    result = {"rows": [{"address": "yX", "amount_dash": "0.1", "n": 3}], "empty": None}
    assert decode_response(encode_result(9, result), 9) == result


def test_string_ids_round_trip():
    assert decode_response(encode_result("abc", True), "abc") is True


def test_decimal_in_a_result_is_sent_as_its_exact_text():
    line = encode_result(1, {"amount": Decimal("0.10000000")})
    assert decode_response(line, 1) == {"amount": "0.10000000"}


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), float("-inf"), Decimal("NaN"), Decimal("Infinity")]
)
def test_non_finite_numbers_are_never_emitted(value):
    with pytest.raises(ValueError):
        encode_result(1, {"x": value})


def test_objects_that_are_not_json_data_are_refused():
    with pytest.raises(TypeError):
        encode_result(1, {"x": object()})


def test_error_round_trips_with_kind_message_and_details():
    line = encode_error(3, "not_found", "no receiver r_1", receiver_id="r_1")
    message = json.loads(line)
    assert message["error"] == {
        "code": CODE_APPLICATION,
        "message": "no receiver r_1",
        "data": {"receiver_id": "r_1", "kind": "not_found"},
    }
    with pytest.raises(RemoteError) as info:
        decode_response(line, 3)
    error = info.value
    assert isinstance(error, DashpayError)
    assert (error.kind, error.message, error.code) == ("not_found", "no receiver r_1", -32000)
    assert error.data == {"kind": "not_found", "receiver_id": "r_1"}
    assert error.details == {"receiver_id": "r_1"}


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("parse_error", -32700),
        ("invalid_request", -32600),
        ("method_not_found", -32601),
        ("invalid_params", -32602),
        ("internal", -32603),
        ("not_found", -32000),
        ("conflict", -32000),
        ("price_unavailable", -32000),
        ("unavailable", -32000),
    ],
)
def test_each_kind_maps_to_its_json_rpc_code(kind, code):
    assert code_for_kind(kind) == code
    assert json.loads(encode_error(1, kind, "m"))["error"]["code"] == code


def test_every_error_kind_has_a_code():
    for kind in ERROR_KINDS:
        assert -32768 <= code_for_kind(kind) <= -32000


def test_error_details_that_are_not_json_data_still_carry_kind_and_message():
    line = encode_error(1, "conflict", "cannot cancel", when=object())
    assert json.loads(line)["error"]["data"] == {"kind": "conflict"}


def test_error_response_from_exception_carries_details():
    response = ErrorResponse.from_exception(2, NotFound("no receiver r_9", receiver_id="r_9"))
    error = json.loads(response.encode())["error"]
    assert error["data"] == {"receiver_id": "r_9", "kind": "not_found"}


def test_a_detail_named_kind_cannot_override_the_kind():
    line = ErrorResponse(1, "conflict", "m", {"kind": "internal"}).encode()
    assert json.loads(line)["error"]["data"]["kind"] == "conflict"


# -- decode_response ------------------------------------------------------------------


def test_error_with_null_id_is_raised_for_any_request():
    with pytest.raises(RemoteError) as info:
        decode_response(encode_error(None, "unavailable", "too many connections"), 5)
    assert info.value.kind == "unavailable"


def test_error_without_data_kind_takes_the_kind_from_its_code():
    line = b'{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no such method"}}'
    with pytest.raises(RemoteError) as info:
        decode_response(line, 1)
    assert info.value.kind == "method_not_found"


@pytest.mark.parametrize(
    "line",
    [
        b"\xff",
        b"not json",
        b"[]",
        b'{"id":1,"result":1}',
        b'{"jsonrpc":"2.0","id":1}',
        b'{"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1,"message":"m"}}',
        b'{"jsonrpc":"2.0","id":2,"result":1}',
        b'{"jsonrpc":"2.0","id":"1","result":1}',
        b'{"jsonrpc":"2.0","id":true,"result":1}',
        b'{"jsonrpc":"2.0","id":2,"error":{"code":1,"message":"m"}}',
        b'{"jsonrpc":"2.0","id":1,"error":"bad"}',
        b'{"jsonrpc":"2.0","id":1,"error":{"code":"x","message":"m"}}',
        b'{"jsonrpc":"2.0","id":1,"result":NaN}',
    ],
)
def test_malformed_or_mismatched_response_is_a_protocol_error(line):
    with pytest.raises(MalformedReply) as info:
        decode_response(line, 1)
    assert info.value.kind == "internal"
    assert "malformed response" in info.value.message


def test_protocol_and_client_modules_do_not_import_trio():
    # The CLI imports them on every invocation; trio would cost ~100 ms each time.
    code = (
        "import sys, dashpay.wire.jsonrpc, dashpay.net.control_client\n"
        "assert 'trio' not in sys.modules, 'trio imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
