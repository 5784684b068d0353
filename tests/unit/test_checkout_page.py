"""The checkout page renderer (dashpay/api/checkout): every status has a page, the
page is well-formed HTML that loads nothing, its CSP names exactly its inline blocks,
every value is escaped, the BIP21 URI is exact, and it works with JavaScript off."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from html.parser import HTMLParser

import pytest

from dashpay.api.checkout import catalogue
from dashpay.api.checkout.page import (
    REFRESH_SECONDS,
    Theme,
    render_missing,
    render_page,
    text_color_on,
    theme_of,
)
from dashpay.api.checkout.policy import source_hash
from dashpay.api.checkout.qr import qr_data_uri
from dashpay.api.checkout.state import VIEWS, checkout_state, view_of
from dashpay.config.checkout import CheckoutConfig, Logo
from dashpay.domain.model import Payment, Receiver
from dashpay.domain.status import (
    CANCELLED,
    EXPIRED,
    PAID,
    PARTIAL,
    PENDING,
    SETTLED,
    STATUSES,
)
from tests.unit.test_accounting import receiver as accounting_receiver

ADDRESS = "XxFKyXX1ibFAn4s4VLVZodgBeciLWhu8o9"
TOKEN = "q3Vh0fY6dJ9cN2xKpL7w1A"
NOW = 1_700_000_000_000
THEME = theme_of(CheckoutConfig())
VOID = {"meta", "img", "br", "hr", "input", "link", "source", "area", "base", "col", "wbr"}


def receiver(status: str = PENDING, received: int = 0, **fields) -> Receiver:
    """A receiver whose confidential fields say "secret", so a leak shows."""
    values = dict(
        receiver_id=987654,
        wallet_id="a1b2c3d4e5f60718",
        hd_index=41,
        address=ADDRESS,
        amount_duffs=150_000_000,
        created_at=NOW - 60_000,
        updated_at=NOW,
        expires_at=NOW + 15 * 60_000,
        callback_url="https://secret-callback.example/hook",
        description="Order 1001",
        username="secret-username-alice",
        idempotency_key="secret-key-1",
        public_token=TOKEN,
    )
    values.update(fields)
    return accounting_receiver(status=status, received_duffs=received, **values)


def payment(amount: int, *, locked: bool, dropped: bool = False) -> Payment:
    return Payment(1, 987654, "ab" * 32, ADDRESS, amount, locked, None, 0, dropped, NOW, NOW)


# One receiver per view: every status, and the flags and payments that refine them.
CASES = {
    "waiting": (receiver(PENDING), []),
    "partly_paid": (receiver(PARTIAL, 50_000_000), [payment(50_000_000, locked=True)]),
    "confirming": (receiver(PAID, 150_000_000), [payment(150_000_000, locked=False)]),
    "settled": (receiver(SETTLED, 150_000_000), [payment(150_000_000, locked=False)]),
    "settled_instant": (receiver(SETTLED, 150_000_000), [payment(150_000_000, locked=True)]),
    "expired": (receiver(EXPIRED, 0, expires_at=NOW - 1), []),
    "paid_late": (receiver(PAID, 150_000_000, late=True), [payment(150_000_000, locked=True)]),
    "overpaid": (
        receiver(SETTLED, 160_000_000, overpaid=True),
        [payment(160_000_000, locked=True)],
    ),
    "cancelled": (receiver(CANCELLED), []),
}


def render(r: Receiver, payments=(), *, language: str | None = None, theme: Theme = THEME):
    return render_page(r, list(payments), now=NOW, accept_language=language, theme=theme)


class Document(HTMLParser):
    """The parts of a page the tests look at, and whether its tags balance."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.blocks: list[tuple[str, dict[str, str | None], str]] = []  # style/script texts
        self.text: list[str] = []
        self._raw: list[str] | None = None
        self.feed(html)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed: {self.stack}")

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)
        if tag in ("script", "style"):
            self._raw = []

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag in ("script", "style") and self._raw is not None:
            attrs = next(a for t, a in reversed(self.elements) if t == tag)
            self.blocks.append((tag, attrs, "".join(self._raw)))
            self._raw = None

    def handle_data(self, data):
        if self._raw is not None:
            self._raw.append(data)
        else:
            self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.elements if t == tag]

    def executable_scripts(self) -> list[str]:
        return [text for tag, attrs, text in self.blocks if tag == "script" and "type" not in attrs]

    def styles(self) -> list[str]:
        return [text for tag, _, text in self.blocks if tag == "style"]

    def data_block(self) -> dict:
        (text,) = [t for tag, a, t in self.blocks if a.get("type") == "application/json"]
        return json.loads(text)


def test_every_status_has_a_page_and_every_view_is_reached():
    reached = {}
    for name, (r, payments) in CASES.items():
        page = render(r, payments)
        assert page.view == name == view_of(r, payments)
        reached.setdefault(r.status, set()).add(name)
        title = catalogue.messages("en")[f"view.{name}.title"]
        assert f'<span id="status-title">{title}</span></h1>' in page.html
    assert set(reached) == set(STATUSES)
    assert {view for views in reached.values() for view in views} == set(VIEWS)


def test_an_unknown_status_or_a_receiver_without_a_token_is_refused():
    with pytest.raises(ValueError, match="unknown receiver status"):
        view_of(receiver("refunded"))
    with pytest.raises(ValueError, match="no checkout page"):
        render(receiver(public_token=None))


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("language", ["en", "de"])
def test_every_page_is_well_formed_and_loads_nothing(name, language):
    r, payments = CASES[name]
    r = replace(
        r, redirect_url="https://shop.example/done", fiat_amount="25.00", fiat_currency="EUR"
    )
    page = render(r, payments, language=language)
    doc = Document(page.html)
    assert doc.errors == []
    assert page.html.startswith("<!DOCTYPE html>\n")
    assert doc.all("html")[0]["lang"] == language
    ids = [attrs["id"] for _, attrs in doc.elements if "id" in attrs]
    assert len(ids) == len(set(ids))
    # Nothing is loaded: every image is inline, no stylesheet, font or frame, and the
    # only links go to the wallet, the shop (navigation, not a resource) or this page.
    assert doc.all("link") == [] and doc.all("iframe") == [] and doc.all("object") == []
    for attrs in doc.all("img"):
        assert attrs["src"].startswith("data:image/"), attrs
        assert attrs.get("alt") is not None
    for _tag, attrs, _ in doc.blocks:
        assert "src" not in attrs
    for text in doc.styles() + doc.executable_scripts():
        assert "url(" not in text and "@import" not in text and "http" not in text.lower()
    hrefs = {attrs["href"] for attrs in doc.all("a")}
    assert hrefs <= {r.redirect_url, TOKEN, checkout_state(r, payments, NOW).payment_uri}
    assert not re.search(r"\s(on\w+|style)=", page.html)  # no inline handler or style
    # Accessible: the state is announced, every image has alt text.
    assert '<div role="status" aria-live="polite" aria-atomic="true">' in page.html


@pytest.mark.parametrize("name", CASES)
def test_the_csp_names_exactly_the_inline_blocks_by_hash(name):
    r, payments = CASES[name]
    page = render(r, payments, theme=theme_of(CheckoutConfig(accent_color="#ffcc00")))
    doc = Document(page.html)
    policy = dict(part.strip().split(" ", 1) for part in page.content_security_policy.split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["style-src"] == " ".join(source_hash(t) for t in doc.styles())
    assert policy["script-src"] == " ".join(source_hash(t) for t in doc.executable_scripts())
    assert len(doc.styles()) == 1 and len(doc.executable_scripts()) == 1
    assert policy["connect-src"] == "'self'" and policy["img-src"] == "data:"
    assert policy["frame-ancestors"] == "'none'" and policy["base-uri"] == "'none'"
    assert "unsafe" not in page.content_security_policy


HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)><!--'


def test_hostile_values_are_escaped_everywhere():
    r = receiver(
        PARTIAL,
        1,
        description=HOSTILE + "\u2028</script>",
        fiat_amount=HOSTILE,
        fiat_currency="</style><style>*{}</style>",
        redirect_url='https://shop.example/?q="><script>alert(3)</script>',
    )
    theme = Theme("#008de4", "#000", shop_name=HOSTILE, logo_uri='data:image/png;base64,"><b>')
    page = render(r, theme=theme)
    doc = Document(page.html)
    assert doc.errors == []
    assert len(doc.executable_scripts()) == 1 and len(doc.styles()) == 1
    assert [tag for tag, _ in doc.elements].count("img") == 2  # the QR code and the logo
    assert all(not any(k.startswith("on") for k in attrs) for _, attrs in doc.elements)
    assert "alert" not in "".join(doc.executable_scripts())
    shown = "".join(doc.text)
    assert HOSTILE in shown and "</style><style>*{}</style>" in shown
    assert doc.data_block()["state"]["view"] == "partly_paid"
    assert doc.data_block()["redirect"] == r.redirect_url  # parsed back intact


def test_only_what_the_customer_needs_is_on_the_page():
    r, payments = CASES["partly_paid"]
    html = render(r, payments).html
    for secret in ("secret-callback", "secret-username", "secret-key", "987654", "a1b2c3d4"):
        assert secret not in html


@pytest.mark.parametrize(
    ("amount", "received", "uri_amount"),
    [
        (1, 0, "0.00000001"),
        (150_000_000, 0, "1.5"),
        (123_456_789, 0, "1.23456789"),
        (2_100_000_000_000_000, 0, "21000000"),
        (100_000_000, 33_333_333, "0.66666667"),  # the remainder of a partial payment
        (30_000_001, 10_000_000, "0.20000001"),
    ],
)
def test_the_bip21_uri_is_exact_to_the_duff(amount, received, uri_amount):
    status = PARTIAL if received else PENDING
    page = render(receiver(status, received, amount_duffs=amount))
    doc = Document(page.html)
    uri = f"dash:{ADDRESS}?amount={uri_amount}"
    assert {a["href"] for a in doc.all("a") if a["href"].startswith("dash:")} == {uri}
    (qr,) = [a["src"] for a in doc.all("img") if "data-qr" in a]
    assert qr == qr_data_uri(uri)
    assert doc.data_block()["state"]["uri"] == uri


def test_amounts_show_in_dash_and_in_the_receivers_fiat():
    r = receiver(fiat_amount="25.00", fiat_currency="EUR", rate="16.66666667")
    text = " ".join(Document(render(r).html).text)
    assert "1.5 DASH" in text and "25.00 EUR" in text


class Visible(HTMLParser):
    """The text a reader sees: none from inside a ``hidden`` element, a script or a
    style block."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0  # open elements inside a hidden one (or a script/style)
        self.parts: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            return
        if self.depth or "hidden" in dict(attrs) or tag in ("script", "style", "title"):
            self.depth += 1

    def handle_endtag(self, tag):
        if self.depth and tag not in VOID:
            self.depth -= 1

    def handle_data(self, data):
        if not self.depth:
            self.parts.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.parts).split())


def test_amounts_are_written_as_the_language_writes_them_but_uri_and_copy_keep_the_dot():
    r = receiver(
        amount_duffs=123_450_000_000, fiat_amount="20576.25", fiat_currency="EUR", rate="16.6"
    )
    page = render(r, language="de")
    shown = Visible(page.html).text
    assert "1.234,5 DASH" in shown and "20.576,25 EUR" in shown
    assert "1234.5" not in shown and "1,234.5" not in shown
    doc = Document(page.html)
    uri = f"dash:{ADDRESS}?amount=1234.5"
    assert {a["href"] for a in doc.all("a") if a["href"].startswith("dash:")} == {uri}
    state = doc.data_block()["state"]
    assert state["due_dash"] == "1234.5" and state["due_shown"] == "1.234,5"
    assert [b["data-copy"] for b in doc.all("button") if b["data-copy"] != "address"] == [
        "due_dash"
    ]
    english = Visible(render(r, language="en").html).text
    assert "1,234.5 DASH" in english and "20,576.25 EUR" in english


def test_a_dash_only_receiver_shows_its_amount_once_while_waiting():
    shown = Visible(render(*CASES["waiting"]).html).text
    assert shown.count("1.5 DASH") == 1, shown
    partly = Visible(render(*CASES["partly_paid"]).html).text
    assert "1.5 DASH" in partly and partly.count("1 DASH") >= 1  # amount, and still due
    fiat = receiver(fiat_amount="25.00", fiat_currency="EUR", rate="16.66666667")
    assert Visible(render(fiat).html).text.count("1.5 DASH") == 1


@pytest.mark.parametrize(
    "name, tone",
    [
        ("waiting", "open"),
        ("partly_paid", "open"),
        ("confirming", "open"),
        ("settled", "done"),
        ("settled_instant", "done"),
        ("paid_late", "attention"),
        ("overpaid", "attention"),
        ("expired", "stopped"),
        ("cancelled", "stopped"),
    ],
)
def test_each_view_has_a_tone_and_a_mark_beside_its_title(name, tone):
    doc = Document(render(*CASES[name]).html)
    (status,) = [a for t, a in doc.elements if t == "section" and a.get("id") == "status"]
    assert status["data-tone"] == tone
    assert doc.data_block()["tones"][name] == tone
    (css,) = doc.styles()
    assert f".status[data-tone={tone}] .mark::before{{content:" in css
    assert any(t == "span" and a.get("class") == "mark" for t, a in doc.elements)


def test_with_javascript_off_waiting_pages_refresh_and_done_pages_do_not():
    waiting = render(*CASES["waiting"]).html
    assert (
        f'<noscript><meta http-equiv="refresh" content="{REFRESH_SECONDS}"></noscript>' in waiting
    )
    assert f'<a href="{TOKEN}">' in waiting  # the reload link
    assert "about 15 min" in waiting  # the countdown's text without the script
    for name in ("settled", "expired", "cancelled", "overpaid"):
        assert 'http-equiv="refresh"' not in render(*CASES[name]).html
    r, payments = CASES["settled_instant"]
    done = render(replace(r, redirect_url="https://shop.example/done?o=1&x=2"), payments).html
    assert 'content="5; url=https://shop.example/done?o=1&amp;x=2"' in done


def test_copy_buttons_appear_only_with_the_script():
    doc = Document(render(*CASES["waiting"]).html)
    buttons = doc.all("button")
    assert {b["data-copy"] for b in buttons} == {"address", "due_dash"}
    assert all("hidden" in b and b["type"] == "button" for b in buttons)


def test_sections_are_shown_for_their_views_only():
    for name, (r, payments) in CASES.items():
        doc = Document(render(r, payments).html)
        for _, attrs in doc.elements:
            if "data-views" in attrs:
                assert ("hidden" not in attrs) == (name in attrs["data-views"].split()), attrs


def test_the_page_speaks_the_browsers_language():
    page = render(*CASES["waiting"], language="fr-CH, de;q=0.8, en;q=0.5")
    assert page.language == "de" and dict(page.headers)["Content-Language"] == "de"
    assert "Warten auf Ihre Zahlung" in page.html
    assert render(*CASES["waiting"], language="fr").language == "en"


def test_theme_colours_keep_text_readable_and_the_logo_is_inline():
    assert text_color_on("#ffffff") == "#000" and text_color_on("#000000") == "#fff"
    assert text_color_on("#ffcc00") == "#000" and text_color_on("#1a237e") == "#fff"
    theme = theme_of(CheckoutConfig(shop_name="Café", logo=Logo("image/png", b"\x89PNG")))
    doc = Document(render(*CASES["waiting"], theme=theme).html)
    logo = [a for a in doc.all("img") if "data-qr" not in a][0]
    assert logo["src"] == "data:image/png;base64,iVBORw==" and logo["alt"] == "Café"


def test_an_unknown_token_gets_a_page_without_script_that_is_never_cached():
    page = render_missing(accept_language="de", theme=THEME)
    doc = Document(page.html)
    assert doc.errors == [] and doc.executable_scripts() == []
    assert "Zahlungsseite nicht gefunden" in page.html
    headers = dict(page.headers)
    assert headers["Cache-Control"] == "no-store"
    assert f"style-src {source_hash(doc.styles()[0])};" in headers["Content-Security-Policy"]
    assert "script-src 'none'" in headers["Content-Security-Policy"]
