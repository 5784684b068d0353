"""The EIO3/Socket.IO codec and the client state machine, on plain strings and on the
frames captured from a real socket.io 2.4.1 Insight session; plus the pure helpers of
the trio shell (URL normalisation; the reconnect backoff is in test_backoff.py)."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashpay.net.insight_socket import is_refusal, parse_socket_url
from dashpay.wire.engineio import (
    AWAITING_CONNECT,
    AWAITING_OPEN,
    CLOSED,
    CONNECTED,
    MAX_FRAME_CHARS,
    AckFrame,
    CloseFrame,
    ConnectFrame,
    DisconnectFrame,
    EngineIOClientState,
    ErrorFrame,
    EventFrame,
    MalformedFrame,
    NoopFrame,
    OpenFrame,
    PingFrame,
    PongFrame,
    UpgradeFrame,
    decode_frame,
    encode_ack,
    encode_connect,
    encode_event,
    encode_open,
    encode_ping,
    encode_pong,
)
from dashpay.wire.insight import EventError, parse_tx_payload

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "insight"
SESSION = json.loads((FIXTURES / "ws-eio3-session-mainnet.json").read_text())
FRAMES = [f["frame"] for f in SESSION["frames"]]
DECODED = SESSION["decoded"]
TXID = "0f90cf5e03e8b8f8c4468f60fc8328cfcd5617fc2163f485fabfd227c692bf93"
BLOCK = "0000000000000005dffc9095302167894319765fbd4df76ce2f322aa4e3c2f63"
ADDRESS = "Xpj8oTSYNf6Dspjh2Eb2x3X71WRRjzjLEF"
OPEN = FRAMES[0]
SUBSCRIBE_INV = '42["subscribe","inv"]'


# --- the captured session ---------------------------------------------------------------

EXPECTED = [
    OpenFrame("3TM42ILpSYvfjhTnAAAA", (), 25.0, 5.0),
    ConnectFrame("/"),
    EventFrame("/", None, "subscribe", ("inv",)),
    EventFrame("/", None, "subscribe", ("dashd/addresstxid", [ADDRESS])),
    EventFrame("/", None, "subscribe", ("dashd/hashblock",)),
    PingFrame(""),
    PongFrame(""),
    EventFrame("/", None, "tx", (DECODED["tx"],)),
    EventFrame("/", None, "dashd/addresstxid", (DECODED["dashd/addresstxid"],)),
    EventFrame("/", None, "txlock", (DECODED["txlock"],)),
    EventFrame("/", None, "block", (BLOCK,)),
    EventFrame("/", None, "dashd/hashblock", (BLOCK,)),
    EventFrame("/", 1, "message", ({"method": "getBestBlockHash", "params": []},)),
    AckFrame("/", 1, ({"result": BLOCK},)),
    EventFrame("/", None, "unsubscribe", ("inv",)),
]


def test_fixture_has_every_frame_we_expect():
    assert len(FRAMES) == len(EXPECTED)


@pytest.mark.parametrize("index", range(len(EXPECTED)))
def test_every_captured_frame_decodes_to_the_right_frame(index):
    assert decode_frame(FRAMES[index]) == EXPECTED[index]


def test_captured_tx_event_carries_integer_duffs_not_floats():
    frame = decode_frame(FRAMES[7])
    (payload,) = frame.args
    assert payload["vout"] == [{ADDRESS: 99608}]
    assert type(payload["vout"][0][ADDRESS]) is int
    assert payload["txid"] == TXID


def test_encoders_reproduce_the_captured_frames_byte_for_byte():
    assert encode_open("3TM42ILpSYvfjhTnAAAA", 25000, 5000) == OPEN
    assert encode_connect() == "40"
    assert encode_event("subscribe", "inv") == FRAMES[2]
    assert encode_event("subscribe", "dashd/addresstxid", [ADDRESS]) == FRAMES[3]
    assert encode_ping() == FRAMES[5]
    assert encode_pong() == FRAMES[6]
    assert encode_event("tx", DECODED["tx"]) == FRAMES[7]
    assert encode_event("block", BLOCK) == FRAMES[10]
    assert (
        encode_event("message", {"method": "getBestBlockHash", "params": []}, ack_id=1)
        == (FRAMES[12])
    )
    assert encode_ack(1, {"result": BLOCK}) == FRAMES[13]


def test_open_packet_for_polling_lists_its_upgrades():
    frame = decode_frame(encode_open("abc", 25000, 20000, upgrades=["websocket"]))
    assert frame == OpenFrame("abc", ("websocket",), 25.0, 20.0)


def test_namespaced_packets_keep_their_namespace():
    assert decode_frame("40/admin,") == ConnectFrame("/admin")
    assert decode_frame("40/admin?token=x,") == ConnectFrame("/admin")
    assert decode_frame("41/admin,") == DisconnectFrame("/admin")
    assert decode_frame('42/admin,7["x",1]') == EventFrame("/admin", 7, "x", (1,))
    assert decode_frame("43/admin,7[]") == AckFrame("/admin", 7, ())
    assert decode_frame('44"not authorized"') == ErrorFrame("/", "not authorized")
    assert encode_event("x", 1, ack_id=7, namespace="/admin") == '42/admin,7["x",1]'


def test_control_packets_decode():
    assert decode_frame("1") == CloseFrame()
    assert decode_frame("2probe") == PingFrame("probe")
    assert decode_frame("3probe") == PongFrame("probe")
    assert decode_frame("5") == UpgradeFrame()
    assert decode_frame("6") == NoopFrame()
    assert decode_frame("41") == DisconnectFrame("/")


# --- round trips ------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
ack_ids = st.none() | st.integers(min_value=0, max_value=10**15)
namespaces = st.sampled_from(["/", "/admin", "/a/b"])


@settings(max_examples=300)
@given(
    name=st.text(max_size=30), args=st.lists(json_values, max_size=4), ack_id=ack_ids, ns=namespaces
)
def test_event_encode_decode_round_trip(name, args, ack_id, ns):
    frame = encode_event(name, *args, ack_id=ack_id, namespace=ns)
    assert decode_frame(frame) == EventFrame(ns, ack_id, name, tuple(args))


@settings(max_examples=300)
@given(
    args=st.lists(json_values, max_size=4),
    ack_id=st.integers(min_value=0, max_value=10**15),
    ns=namespaces,
)
def test_ack_encode_decode_round_trip(args, ack_id, ns):
    assert decode_frame(encode_ack(ack_id, *args, namespace=ns)) == AckFrame(
        ns, ack_id, tuple(args)
    )


@given(
    interval=st.integers(min_value=10, max_value=3_600_000),
    timeout=st.integers(min_value=10, max_value=3_600_000),
)
def test_open_encode_decode_round_trip_in_seconds(interval, timeout):
    frame = decode_frame(encode_open("sid", interval, timeout))
    assert frame == OpenFrame("sid", (), interval / 1000, timeout / 1000)


@given(st.text(max_size=200))
def test_decoding_arbitrary_text_either_decodes_or_raises_protocol_error(text):
    with contextlib.suppress(MalformedFrame):
        decode_frame(text)


def test_encode_refuses_what_socketio_could_not_carry():
    with pytest.raises(ValueError):
        encode_event("x", float("nan"))
    with pytest.raises(ValueError):
        encode_event("x", ack_id=-1)
    with pytest.raises(ValueError):
        encode_event("x", namespace="admin")


# --- malformed frames -------------------------------------------------------------------

MALFORMED = {
    "empty": "",
    "unknown engine.io type": "7",
    "base64 binary": "b4AAAA",
    "message without packet": "4",
    "unknown socket.io type": "49[]",
    "binary event": '451-["x",{"_placeholder":true,"num":0}]',
    "binary ack": "461-1[]",
    "event without data": "42",
    "event truncated json": '42["tx",{"txid":',
    "event not an array": '42{"tx":1}',
    "event empty array": "42[]",
    "event name not a string": "42[1,2]",
    "event with NaN": '42["x",NaN]',
    "event with Infinity": '42["x",Infinity]',
    "event trailing garbage": '42["x"]x',
    "ack without id": "43[1]",
    "ack not an array": "431{}",
    "ack id too long": "4312345678901234567[]",
    "error without data": "44",
    "connect with data": "40garbage",
    "connect with ack id": "401",
    "disconnect with data": "41[1]",
    "close with data": "1x",
    "upgrade with data": "5x",
    "noop with data": "6x",
    "open without json": "0",
    "open not an object": "0[]",
    "open without sid": '0{"pingInterval":25000,"pingTimeout":5000}',
    "open empty sid": '0{"sid":"","pingInterval":25000,"pingTimeout":5000}',
    "open without interval": '0{"sid":"a","pingTimeout":5000}',
    "open zero interval": '0{"sid":"a","pingInterval":0,"pingTimeout":5000}',
    "open boolean timeout": '0{"sid":"a","pingInterval":25000,"pingTimeout":true}',
    "open huge timeout": '0{"sid":"a","pingInterval":25000,"pingTimeout":99999999999}',
    "open upgrades not list": '0{"sid":"a","upgrades":"ws","pingInterval":1000,"pingTimeout":1000}',
    "deeply nested": "42[" + "[" * 100_000,
    "integer with too many digits": '42["x",' + "9" * 5000 + "]",
}


# JSON that orjson (the fast path) refuses but the stdlib decoder takes: decoded as before.
ORJSON_REFUSES = {
    "lone surrogate escape": '["x","\\ud800"]',
    "float past double range": '["x",1e400]',
}


@pytest.mark.parametrize("payload", ORJSON_REFUSES.values(), ids=ORJSON_REFUSES.keys())
def test_event_json_the_fast_decoder_refuses_decodes_as_the_stdlib_did(payload):
    frame = decode_frame("42" + payload)
    expected = json.loads(payload)
    assert isinstance(frame, EventFrame)
    assert frame.name == "x" and repr(frame.args) == repr(tuple(expected[1:]))


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=20,
    )
)
@settings(max_examples=200)
def test_event_json_decodes_exactly_as_the_stdlib_decoder(value):
    payload = json.dumps(["x", value])
    frame = decode_frame("42" + payload)
    assert repr(frame.args) == repr(tuple(json.loads(payload)[1:]))


def test_a_tx_amount_past_64_bits_is_still_refused():
    # The fast decoder reads it as a float; the payload check refuses it either way.
    amount = "9" * 30
    frame = decode_frame(
        '42["tx",{"txid":"'
        + "a" * 64
        + '","vout":[{"yQtw3ZQ8v8KDHfKaVudJGUTgkdVGKhV8Gy":'
        + amount
        + "}]}]"
    )
    with pytest.raises(EventError, match="amount"):
        parse_tx_payload(frame.args[0], instant_locked=False)


@pytest.mark.parametrize("frame", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frame_raises_protocol_error(frame):
    with pytest.raises(MalformedFrame):
        decode_frame(frame)


def test_oversized_frame_is_refused_before_parsing():
    frame = '42["tx","' + "a" * MAX_FRAME_CHARS + '"]'
    with pytest.raises(MalformedFrame, match="limit"):
        decode_frame(frame)


def test_binary_message_is_refused():
    with pytest.raises(MalformedFrame, match="text frame"):
        decode_frame(b'42["tx"]')  # type: ignore[arg-type]


def test_protocol_error_quotes_only_an_excerpt_of_a_huge_frame():
    with pytest.raises(MalformedFrame) as info:
        decode_frame('42["x",' + "1," * 100_000)
    assert len(str(info.value)) < 400


# --- the client state machine -----------------------------------------------------------

OPEN_300 = encode_open("sid", 300, 300)


def connected_machine(now: float = 0.0, **kwargs) -> EngineIOClientState:
    machine = EngineIOClientState(now, **kwargs)
    machine.receive(OPEN_300, now)
    machine.receive("40", now)
    return machine


def test_client_subscribes_after_the_servers_40_and_never_sends_40():
    machine = EngineIOClientState(0.0)
    assert machine.phase == AWAITING_OPEN
    machine.receive(OPEN, 0.01)
    assert machine.phase == AWAITING_CONNECT
    assert list(machine.data_to_send()) == []  # waits for the server's own 40
    machine.receive("40", 0.02)
    assert machine.phase == CONNECTED
    assert list(machine.data_to_send()) == [SUBSCRIBE_INV]
    assert list(machine.data_to_send()) == []  # each frame is handed out once


def test_client_subscribes_again_after_every_40():
    machine = connected_machine(subscriptions=("inv", "dashd/hashblock"))
    expected = [SUBSCRIBE_INV, '42["subscribe","dashd/hashblock"]']
    assert list(machine.data_to_send()) == expected
    machine.receive("40", 1.0)
    assert list(machine.data_to_send()) == expected


def test_40_before_the_open_packet_is_a_protocol_error():
    machine = EngineIOClientState(0.0)
    with pytest.raises(MalformedFrame, match="before the open packet"):
        machine.receive("40", 0.0)
    assert list(machine.data_to_send()) == []


def test_second_open_packet_is_a_protocol_error():
    machine = connected_machine()
    with pytest.raises(MalformedFrame, match="second open"):
        machine.receive(OPEN_300, 0.1)


server_frames = st.sampled_from(
    [
        OPEN_300,
        OPEN,
        "40",
        "41",
        "40/admin,",
        "1",
        "2",
        "3",
        "6",
        "5",
        '44"no"',
        '42["tx",{}]',
        "431[]",
        "garbage",
        "42[",
        "",
    ]  # fmt: skip
)


@settings(max_examples=500)
@given(st.lists(st.tuples(server_frames, st.floats(min_value=0, max_value=2)), max_size=30))
def test_client_never_sends_40_whatever_the_server_does(steps):
    machine = EngineIOClientState(0.0)
    now = 0.0
    sent = []
    for frame, delay in steps:
        now += delay
        machine.poll(now)
        with contextlib.suppress(MalformedFrame):
            machine.receive(frame, now)
        sent.extend(machine.data_to_send())
    machine.poll(now + 100)
    sent.extend(machine.data_to_send())
    assert not [f for f in sent if f.startswith("40") or f.startswith("41")]
    assert all(f in ("2", "3", SUBSCRIBE_INV) for f in sent)


def test_first_ping_is_due_one_ping_interval_after_the_open_packet():
    machine = connected_machine(now=10.0)
    machine.data_to_send()
    assert machine.next_wakeup() == pytest.approx(10.3)
    machine.poll(10.29)
    assert list(machine.data_to_send()) == []
    machine.poll(10.3)
    assert list(machine.data_to_send()) == ["2"]
    assert machine.ping_outstanding


def test_ping_schedule_repeats_every_interval_while_pongs_arrive():
    machine = connected_machine(now=0.0)
    machine.data_to_send()
    pings = []
    now = 0.0
    while now < 3.0:
        now = machine.next_wakeup()
        machine.poll(now)
        for frame in machine.data_to_send():
            assert frame == "2"
            pings.append(now)
            machine.receive("3", now + 0.01)  # pong 10 ms later
    gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
    assert len(pings) >= 9
    assert all(g == pytest.approx(0.3) for g in gaps)
    assert machine.phase == CONNECTED


def test_pings_keep_their_schedule_while_one_is_unanswered():
    machine = EngineIOClientState(0.0, handshake_timeout=100)
    machine.receive(encode_open("s", 100, 1000), 0.0)  # timeout longer than interval
    machine.receive("40", 0.0)
    machine.data_to_send()
    machine.poll(0.1)
    machine.poll(0.2)
    assert list(machine.data_to_send()) == ["2", "2"]
    assert machine.next_wakeup() == pytest.approx(0.3)
    # the deadline counts from the oldest unanswered ping (0.1), not the latest
    for now in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.09):
        machine.poll(now)
    assert machine.dead_reason is None
    machine.poll(1.1)
    assert "no pong" in machine.dead_reason


def test_link_is_dead_when_nothing_arrives_within_ping_timeout_of_a_ping():
    machine = connected_machine(now=0.0)
    machine.data_to_send()
    machine.poll(0.3)  # ping
    assert machine.next_wakeup() == pytest.approx(0.6)
    machine.poll(0.59)
    assert machine.dead_reason is None
    machine.poll(0.6)
    assert machine.phase == CLOSED
    assert "no pong" in machine.dead_reason
    assert machine.next_wakeup() == math.inf
    assert list(machine.data_to_send()) == []


def test_any_frame_after_a_ping_counts_as_a_sign_of_life():
    machine = connected_machine(now=0.0)
    machine.data_to_send()
    machine.poll(0.3)  # ping
    machine.receive('42["block","00"]', 0.5)  # an event queued ahead of the pong
    machine.poll(0.7)
    assert machine.dead_reason is None
    assert machine.next_wakeup() == pytest.approx(0.8)
    machine.poll(0.8)
    assert machine.dead_reason is not None


def test_note_alive_covers_time_the_shell_spent_not_reading():
    machine = connected_machine(now=0.0)
    machine.poll(0.3)
    machine.note_alive(0.55)
    machine.poll(0.7)
    assert machine.dead_reason is None


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([], "no open packet"),
        ([OPEN_300], "no namespace connect"),
    ],
)
def test_handshake_must_finish_within_its_timeout(frames, reason):
    machine = EngineIOClientState(0.0, handshake_timeout=5.0)
    for frame in frames:
        machine.receive(frame, 0.0)
    machine.data_to_send()
    assert machine.next_wakeup() <= 5.0
    machine.poll(4.99)
    assert machine.dead_reason is None
    machine.poll(5.0)
    assert reason in machine.dead_reason


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("1", "closed the engine.io session"),
        ("41", "disconnected the namespace"),
        ('44{"message":"nope"}', "refused the namespace"),
    ],  # fmt: skip
)
def test_server_ending_the_session_kills_the_link(frame, reason):
    machine = connected_machine()
    machine.receive(frame, 1.0)
    assert machine.phase == CLOSED
    assert reason in machine.dead_reason
    machine.poll(100.0)
    assert list(machine.data_to_send()) == []
    machine.receive("40", 2.0)
    assert list(machine.data_to_send()) == []  # nothing is sent on a dead link


def test_other_namespaces_do_not_affect_the_default_one():
    machine = connected_machine()
    machine.data_to_send()
    machine.receive("40/admin,", 1.0)
    machine.receive("41/admin,", 1.0)
    assert machine.phase == CONNECTED
    assert list(machine.data_to_send()) == []


def test_server_ping_is_answered_with_pong_carrying_its_data():
    machine = connected_machine()
    machine.data_to_send()
    machine.receive("2probe", 1.0)
    assert list(machine.data_to_send()) == ["3probe"]


def test_malformed_frame_leaves_the_state_unchanged_but_proves_life():
    machine = connected_machine(now=0.0)
    machine.data_to_send()
    machine.poll(0.3)
    with pytest.raises(MalformedFrame):
        machine.receive('42["tx",', 0.5)
    assert machine.phase == CONNECTED
    machine.poll(0.7)
    assert machine.dead_reason is None


# --- shell helpers (pure) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "display", "resource"),
    [
        ("http://127.0.0.1:3001", "ws://127.0.0.1:3001/socket.io/", None),
        ("http://127.0.0.1:3001/", "ws://127.0.0.1:3001/socket.io/", None),
        ("http://127.0.0.1:3001/insight-api", "ws://127.0.0.1:3001/socket.io/", None),
        ("https://insight.dash.org/insight-api/", "wss://insight.dash.org:443/socket.io/", None),
        ("wss://insight.dash.org", "wss://insight.dash.org:443/socket.io/", None),
        ("ws://h:80/socket.io", "ws://h:80/socket.io/", None),
        ("ws://h/proxy/socket.io/", "ws://h:80/proxy/socket.io/", None),
        (
            "http://user:secret@h:1/?x=1",
            "ws://h:1/socket.io/",
            "/socket.io/?EIO=3&transport=websocket",
        ),
        ("http://[::1]:3001", "ws://[::1]:3001/socket.io/", None),
    ],
)
def test_socket_url_is_normalised_to_the_eio3_websocket_endpoint(url, display, resource):
    endpoint = parse_socket_url(url)
    assert endpoint.display == display
    assert endpoint.resource.endswith("?EIO=3&transport=websocket")
    if resource:
        assert endpoint.resource == resource
    assert "secret" not in repr(endpoint)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("ftp://h", "scheme"),
        ("http://", "no host"),
        ("http://h:99999", "port"),
        ("insight.dash.org", "scheme"),
    ],  # fmt: skip
)
def test_bad_socket_url_says_what_to_fix(url, message):
    with pytest.raises(ValueError, match=message):
        parse_socket_url(url)


def _connect_failure(*errors: OSError) -> OSError:
    """What trio.open_tcp_stream raises when every address failed."""
    failure = OSError("all attempts to connect to h:1 failed")
    failure.__cause__ = ExceptionGroup("all attempts to connect to h:1 failed", list(errors))
    return failure


def test_a_connect_refused_by_every_address_is_a_refusal_and_nothing_else_is():
    refused = ConnectionRefusedError(111, "Connection refused")
    assert is_refusal(refused)
    assert is_refusal(_connect_failure(refused, ConnectionRefusedError(111, "refused")))
    # One address timed out or was unreachable: not the cheap case.
    assert not is_refusal(_connect_failure(refused, TimeoutError("timed out")))
    assert not is_refusal(_connect_failure(OSError(113, "No route to host")))
    assert not is_refusal(OSError("no cause"))
    assert not is_refusal(TimeoutError())
