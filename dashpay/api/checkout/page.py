"""The checkout page as one HTML document, pure: a receiver's state in, the document
and its headers out (``render_page``). See docs/checkout.md.

- **No JavaScript needed.** The page is complete as served; while the customer still
  has something to wait for it reloads itself (``<meta http-equiv="refresh">`` inside
  ``<noscript>``, so it only applies with scripts off) and has a reload link.
- **Live with JavaScript.** The script listens to ``<token>/events`` (``events.py``)
  and applies each state to the elements marked ``data-views`` (shown in those views
  only), ``data-value``, ``data-uri`` and ``data-qr``: the same document, no reload.
- **Loads nothing.** One inline style, one inline script, images as ``data:`` URIs;
  the CSP (``policy.csp_header``) names the two blocks by hash.
- **Every value is escaped** (``html.escape`` in text and attributes; the JSON data
  block cannot close its ``<script>``), and only what the customer needs is shown.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from html import escape
from importlib import resources
from typing import Any

from dashpay.api.checkout import catalogue
from dashpay.api.checkout.events import page_values
from dashpay.api.checkout.policy import NO_STORE, SECURITY_HEADERS, cache_headers, csp_header
from dashpay.api.checkout.qr import qr_data_uri
from dashpay.api.checkout.state import (
    CANCELLED_VIEW,
    CONFIRMING,
    DONE_VIEWS,
    EXPIRED_VIEW,
    OVERPAID,
    PAID_LATE,
    PARTLY_PAID,
    PAYING_VIEWS,
    REDIRECT_VIEWS,
    SETTLED_INSTANT,
    SETTLED_VIEW,
    VIEWS,
    WAITING,
    CheckoutState,
    checkout_state,
)
from dashpay.config.checkout import CheckoutConfig
from dashpay.domain.model import Payment, Receiver

# With JavaScript off, the page reloads itself this often while the customer waits
# (for a payment or its confirmation): InstantSend makes a payment final in ~2 s, and
# 10 s is quick enough to feel live without hammering the server.
REFRESH_SECONDS = 10
REFRESH_VIEWS = PAYING_VIEWS | {CONFIRMING}
# Seconds the "paid" page stays before it takes the customer back (redirect_url).
REDIRECT_SECONDS = 5
# Views after which live updates stop: nothing more will change.
CLOSED_VIEWS = (SETTLED_VIEW, SETTLED_INSTANT, CANCELLED_VIEW)
# Views that show what was received: all but the first.
RECEIVED_VIEWS = tuple(view for view in VIEWS if view != WAITING)
# Each view's tone: the status panel's colour and its mark (a symbol beside the title,
# so the state never rests on colour alone). "open": still to pay or to confirm;
# "done": paid; "attention": paid, but the shop has to look at it; "stopped": do not
# pay any more.
TONES = {
    WAITING: "open",
    PARTLY_PAID: "open",
    CONFIRMING: "open",
    SETTLED_VIEW: "done",
    SETTLED_INSTANT: "done",
    PAID_LATE: "attention",
    OVERPAID: "attention",
    EXPIRED_VIEW: "stopped",
    CANCELLED_VIEW: "stopped",
}


@dataclass(frozen=True, slots=True)
class Theme:
    accent: str  # "#rrggbb"
    on_accent: str  # the text colour on it, "#000" or "#fff"
    shop_name: str | None = None
    logo_uri: str | None = None  # a data: URI


@dataclass(frozen=True, slots=True)
class Page:
    html: str
    view: str
    language: str
    headers: tuple[tuple[str, str], ...]  # Content-Type, CSP, caching, security

    @property
    def body(self) -> bytes:
        return self.html.encode("utf-8")

    @property
    def content_security_policy(self) -> str:
        return dict(self.headers)["Content-Security-Policy"]


def _luminance(color: str) -> float:
    """WCAG 2.1 relative luminance of "#rrggbb"."""
    channels = []
    for at in (1, 3, 5):
        c = int(color[at : at + 2], 16) / 255
        channels.append(c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4)
    red, green, blue = channels
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def text_color_on(accent: str) -> str:
    """Black or white, whichever contrasts more with ``accent`` (WCAG contrast ratio)."""
    light = _luminance(accent)
    return "#000" if (light + 0.05) / 0.05 >= 1.05 / (light + 0.05) else "#fff"


def theme_of(config: CheckoutConfig) -> Theme:
    logo = None
    if config.logo is not None:
        encoded = base64.b64encode(config.logo.data).decode("ascii")
        logo = f"data:{config.logo.media_type};base64,{encoded}"
    accent = config.accent_color
    return Theme(accent, text_color_on(accent), config.shop_name, logo)


@cache
def _asset(name: str) -> str:
    return (resources.files("dashpay.api.checkout") / "assets" / name).read_text("utf-8")


@lru_cache(maxsize=16)
def stylesheet(accent: str, on_accent: str) -> str:
    return f":root{{--accent:{accent};--on-accent:{on_accent}}}\n" + _asset("checkout.css")


def script() -> str:
    return _asset("checkout.js")


def json_block(value: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``: no ``<``, ``>``
    or ``&`` (so no ``</script>`` or ``<!--``), no U+2028/U+2029."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, code)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _shown(views: Sequence[str] | frozenset[str], current: str) -> str:
    """The ``data-views`` attribute (in VIEWS order) and ``hidden`` when not current."""
    names = " ".join(view for view in VIEWS if view in views)
    return f' data-views="{names}"' + ("" if current in views else " hidden")


def _minutes_left(state: CheckoutState, texts: dict[str, str]) -> str:
    assert state.expires_at is not None
    left_ms = state.expires_at - state.now
    if left_ms <= 0:
        return texts["expires.now"]
    return catalogue.fill(texts["expires.minutes"], {"minutes": -(-left_ms // 60_000)})


def render_page(
    receiver: Receiver,
    payments: Sequence[Payment],
    *,
    now: int,
    accept_language: str | None,
    theme: Theme,
) -> Page:
    """The checkout page of ``receiver`` at ``now`` (epoch ms), in the language the
    browser prefers, with its headers. ValueError for a receiver without a token."""
    state = checkout_state(receiver, payments, now)
    language = catalogue.negotiate(accept_language)
    texts = catalogue.messages(language)
    values = page_values(state, texts)
    css = stylesheet(theme.accent, theme.on_accent)
    js = script()
    html = _document(state, values, texts, language, theme, css, js)
    headers = (
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Language", language),
        ("Content-Security-Policy", csp_header([css], [js])),
        *cache_headers(state),
        *SECURITY_HEADERS,
    )
    return Page(html, state.view, language, headers)


def render_missing(*, accept_language: str | None, theme: Theme) -> Page:
    """The page for a token that finds no receiver (answer it with 404): no script,
    never cached (the receiver may be created a moment later on another node)."""
    language = catalogue.negotiate(accept_language)
    texts = catalogue.messages(language)
    css = stylesheet(theme.accent, theme.on_accent)
    title, text = escape(texts["missing.title"]), escape(texts["missing.text"])
    html = (
        "<!DOCTYPE html>\n"
        f'<html lang="{escape(language)}" dir="ltr"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light dark">'
        f"<title>{title}</title><style>{css}</style></head><body><main>"
        f'<section class="status"><h1>{title}</h1><p>{text}</p></section>'
        "</main></body></html>\n"
    )
    headers = (
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Language", language),
        ("Content-Security-Policy", csp_header([css], [])),
        ("Cache-Control", NO_STORE),
        *SECURITY_HEADERS,
    )
    return Page(html, "missing", language, headers)


def _document(
    state: CheckoutState,
    values: dict[str, Any],
    texts: dict[str, str],
    language: str,
    theme: Theme,
    css: str,
    js: str,
) -> str:
    def t(key: str) -> str:
        return escape(catalogue.fill(texts[key], values))

    view = state.view
    token = escape(state.token)
    head_refresh = ""
    refresh = None
    if view in REFRESH_VIEWS:
        refresh = str(REFRESH_SECONDS)
    elif view in REDIRECT_VIEWS and state.redirect_url:
        refresh = f"{REDIRECT_SECONDS}; url={state.redirect_url}"
    if refresh is not None:  # inside <noscript>: only with scripts off
        head_refresh = (
            f'<noscript><meta http-equiv="refresh" content="{escape(refresh)}"></noscript>'
        )
    header = ""
    if theme.logo_uri or theme.shop_name:
        logo = ""
        if theme.logo_uri:
            logo = f'<img src="{escape(theme.logo_uri)}" alt="{escape(theme.shop_name or "")}">'
        name = f'<p class="shop">{escape(theme.shop_name)}</p>' if theme.shop_name else ""
        header = f"<header>{logo}{name}</header>"
    uri = escape(state.payment_uri)
    # Hidden when nothing is due, but never an empty src (which would load the page).
    qr = escape(values["qr"] or qr_data_uri(state.payment_uri))
    countdown = ""
    if state.expires_at is not None:
        countdown = (
            f"<div{_shown(PAYING_VIEWS, view)}><dt>{t('expires.label')}</dt>"
            f'<dd class="value"><span data-countdown>{escape(_minutes_left(state, texts))}'
            "</span></dd></div>"
        )
    fiat = ""
    if values["fiat_shown"] is not None:
        fiat = f"<div><dt>{t('fiat.label')}</dt><dd>{escape(values['fiat_shown'])}</dd></div>"

    description = ""
    if state.description:
        description = (
            f"<div><dt>{t('description.label')}</dt><dd>{escape(state.description)}</dd></div>"
        )
    back = ""
    if state.redirect_url:
        back = (
            f'<a class="button"{_shown(DONE_VIEWS, view)} href="{escape(state.redirect_url)}">'
            f"{t('back.link')}</a>"
            f'<p class="note"{_shown(REDIRECT_VIEWS, view)}>{t("redirect.note")}</p>'
        )
    data = {
        "state": values,
        "messages": texts,
        "events": f"{state.token}/events",
        "redirect": state.redirect_url,
        "redirect_views": sorted(REDIRECT_VIEWS),
        "redirect_after": REDIRECT_SECONDS,
        "closed_views": list(CLOSED_VIEWS),
        "tones": TONES,
    }
    copy_note = '<span class="copied" role="status" aria-live="polite"></span>'
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="{escape(language)}" dir="ltr"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light dark">'
        '<meta name="referrer" content="no-referrer">'
        f"{head_refresh}"
        f"<title>{t(f'view.{view}.title')} · {t('page.title')}</title>"
        f"<style>{css}</style></head>"
        f"<body><main>{header}"
        f'<section class="status" id="status" data-tone="{TONES[view]}">'
        '<div role="status" aria-live="polite" aria-atomic="true">'
        '<h1><span class="mark" aria-hidden="true"></span>'
        f'<span id="status-title">{t(f"view.{view}.title")}</span></h1>'
        f'<p id="status-text">{t(f"view.{view}.text")}</p></div></section>'
        f'<section class="pay"{_shown(PAYING_VIEWS, view)}>'
        f'<a class="qr" href="{uri}" data-uri>'
        f'<img data-qr src="{qr}" alt="{t("qr.alt")}" width="240" height="240"></a>'
        "<dl>"
        f'<div><dt>{t("due.label")}</dt><dd><span class="value" data-value="due_shown">'
        f"{escape(values['due_shown'])}</span> DASH "
        f'<button type="button" data-copy="due_dash" hidden>{t("copy.amount")}</button>'
        f"{copy_note}</dd></div>"
        f"<div><dt>{t('address.label')}</dt><dd><code>{escape(state.address)}</code> "
        f'<button type="button" data-copy="address" hidden>{t("copy.address")}</button>'
        f"{copy_note}</dd></div>"
        f"{countdown}</dl>"
        f'<a class="button" href="{uri}" data-uri>{t("wallet.link")}</a></section>'
        '<section class="summary"><dl>'
        # While waiting, the amount to send above is the amount: shown once.
        f"<div{_shown(RECEIVED_VIEWS, view)}><dt>{t('amount.label')}</dt>"
        f'<dd><span data-value="amount_shown">{escape(values["amount_shown"])}</span> DASH'
        "</dd></div>"
        f"{fiat}"
        f"<div{_shown(RECEIVED_VIEWS, view)}><dt>{t('received.label')}</dt>"
        f'<dd><span data-value="received_shown">{escape(values["received_shown"])}</span> DASH'
        "</dd></div>"
        f"<div{_shown(['partly_paid'], view)}><dt>{t('remaining.label')}</dt>"
        f'<dd><span data-value="due_shown">{escape(values["due_shown"])}</span> DASH</dd></div>'
        f"<div{_shown(['overpaid'], view)}><dt>{t('overpaid.label')}</dt>"
        f'<dd><span data-value="overpaid_shown">{escape(values["overpaid_shown"])}</span> DASH'
        "</dd></div>"
        f"{description}</dl></section>"
        f"<nav>{back}"
        f'<a href="{token}">{t("reload.link")}</a></nav>'
        f'<noscript><p class="note"{_shown(REFRESH_VIEWS, view)}>'
        f"{escape(catalogue.fill(texts['refresh.note'], {'seconds': REFRESH_SECONDS}))}"
        "</p></noscript>"
        f'<p id="live" class="note" role="status" hidden>{t("live.lost")}</p>'
        "</main>"
        f'<script type="application/json" id="checkout-data">{json_block(data)}</script>'
        f"<script>{js}</script>"
        "</body></html>\n"
    )
