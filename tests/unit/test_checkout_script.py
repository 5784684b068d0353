"""The checkout page's script, run by node against the page's own elements: live
events change the page without a reload (view, amounts, QR code, links, title), the
copy buttons appear, and a paid page takes the customer back to the shop."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from dashpay.api.checkout import catalogue
from dashpay.api.checkout.events import sse_frame
from dashpay.api.checkout.qr import qr_data_uri
from dashpay.api.checkout.state import checkout_state
from tests.conftest import require
from tests.unit.test_checkout_page import CASES, NOW, TOKEN, Document, render

HARNESS = Path(__file__).resolve().parents[1] / "node" / "checkout-script.js"
EN = catalogue.messages("en")


def node() -> str:
    found = shutil.which("node")
    if found is None:
        if require("NODE"):
            pytest.fail("DASHPAY_REQUIRE_NODE=1 but node is missing")
        pytest.skip("node is not installed")
    return found


def event_data(name: str, **fields) -> str:
    r, payments = CASES[name]
    frame = sse_frame(checkout_state(replace(r, **fields), payments, NOW), EN).decode()
    return next(line[6:] for line in frame.splitlines() if line.startswith("data: "))


def run_script(page_html: str, events: list[str]) -> dict:
    doc = Document(page_html)
    (script,) = doc.executable_scripts()
    (data,) = [t for tag, a, t in doc.blocks if a.get("type") == "application/json"]
    elements = [
        {"tag": tag, "attrs": {k: ("" if v is None else v) for k, v in attrs.items()}}
        for tag, attrs in doc.elements
        if tag not in ("script", "style", "meta", "html", "head", "body", "title")
    ]
    payload = {"script": script, "data": data, "elements": elements, "events": events}
    done = subprocess.run(
        [node(), str(HARNESS)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_partial_payment_shows_without_a_reload_with_a_new_qr_code():
    r, payments = CASES["waiting"]
    result = run_script(render(r, payments).html, [event_data("partly_paid")])
    assert result["events_url"] == f"{TOKEN}/events"
    by_id = {e["attrs"].get("id"): e for e in result["elements"]}
    assert by_id["status-title"]["text"] == EN["view.partly_paid.title"]
    assert by_id["status-text"]["text"] == EN["view.partly_paid.text"].format(due_shown="1")
    assert result["title"].startswith(EN["view.partly_paid.title"])
    remainder = f"dash:{r.address}?amount=1"
    (qr,) = [e for e in result["elements"] if "data-qr" in e["attrs"]]
    assert qr["attrs"]["src"] == qr_data_uri(remainder)
    assert {e["attrs"]["href"] for e in result["elements"] if "data-uri" in e["attrs"]} == {
        remainder
    }
    due = [e["text"] for e in result["elements"] if e["attrs"].get("data-value") == "due_shown"]
    assert due == ["1", "1"]
    for element in result["elements"]:
        if "data-views" in element["attrs"]:
            expected = "partly_paid" in element["attrs"]["data-views"].split()
            assert element["hidden"] is not expected, element
    assert not result["closed"] and result["assigned"] == []


def test_copy_buttons_appear_with_the_script():
    result = run_script(render(*CASES["waiting"]).html, [])
    buttons = [e for e in result["elements"] if e["tag"] == "button"]
    assert len(buttons) == 2 and not any(b["hidden"] for b in buttons)


def test_a_settled_payment_takes_the_customer_back_to_the_shop_and_stops_listening():
    r, payments = CASES["waiting"]
    page = render(replace(r, redirect_url="https://shop.example/done"), payments).html
    result = run_script(page, [event_data("partly_paid"), event_data("settled_instant")])
    by_id = {e["attrs"].get("id"): e for e in result["elements"]}
    assert by_id["status-title"]["text"] == EN["view.settled_instant.title"]
    (pay,) = [e for e in result["elements"] if e["attrs"].get("class") == "pay"]
    assert pay["hidden"]
    (back,) = [
        e for e in result["elements"] if e["attrs"].get("href") == "https://shop.example/done"
    ]
    assert not back["hidden"]
    assert result["closed"] and result["assigned"] == ["https://shop.example/done"]
    assert by_id["status"]["attrs"]["data-tone"] == "done"  # waiting was "open"
    assert result["redirect_after_ms"] == [5000]


def test_an_expired_page_does_not_redirect_and_keeps_listening():
    r, payments = CASES["waiting"]
    page = render(replace(r, redirect_url="https://shop.example/done"), payments).html
    result = run_script(page, [event_data("expired")])
    assert result["assigned"] == [] and not result["closed"]
