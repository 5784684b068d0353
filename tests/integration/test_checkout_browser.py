"""The checkout page in a real browser, as a customer uses it: Debian's Chromium driven
headless by Selenium through Debian's chromedriver (nothing downloads a browser),
against a sandbox daemon. Screenshots of each state are saved under the test state
directory ($DASHPAY_TEST_STATE/checkout/); the QR code is decoded from a screenshot
with zbar (Debian's zbar-tools) and must be the BIP21 URI.

`tests/run` installs chromium, chromium-driver and zbar-tools and sets
DASHPAY_REQUIRE_BROWSER=1: there a missing piece fails instead of skipping."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli, serve_sandbox

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_SECONDS = 5


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is not installed (Debian: chromium, chromium-driver)"
    if shutil.which("zbarimg") is None:
        return "zbarimg is not installed (Debian: zbar-tools)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@contextlib.contextmanager
def chromium(*, javascript: bool = True) -> Iterator:
    """A headless Debian Chromium through Debian's chromedriver, in a fresh profile."""
    missing = _missing()
    if missing is not None:
        if os.environ.get("DASHPAY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"DASHPAY_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=390,1100"):
        options.add_argument(flag)
    options.add_argument("--lang=en-US")
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    profile = tempfile.mkdtemp(prefix="dpb-", dir="/tmp")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def sandbox() -> Iterator[dict[str, str]]:
    tmp = Path(tempfile.mkdtemp(prefix="dpb-", dir="/tmp"))
    try:
        with serve_sandbox(tmp) as (_proc, env):
            yield env
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def shots() -> Path:
    base = Path(os.environ.get("DASHPAY_TEST_STATE") or tempfile.gettempdir())
    directory = base / "checkout"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def cli(env: dict[str, str], *args: str) -> dict:
    result = run_cli(*args, "--json", env=env)
    assert result.code == 0, result.stderr
    return result.json()


def decode_qr(png: Path) -> str:
    """The text of the one QR code in ``png`` (zbarimg)."""
    proc = subprocess.run(
        ["zbarimg", "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", str(png)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, f"zbarimg found no QR code in {png}: {proc.stderr}"
    return proc.stdout.strip()


def wait_for_title(driver, prefix: str, seconds: float = WAIT_SECONDS) -> str:
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d):
        text = d.find_element(By.ID, "status-title").text
        return text if text.startswith(prefix) else False

    # A page that reloads itself (JavaScript off) replaces the element between the find
    # and the read: that is "not yet", not a failure.
    reloading = (NoSuchElementException, StaleElementReferenceException)
    try:
        wait = WebDriverWait(driver, seconds, poll_frequency=0.05, ignored_exceptions=reloading)
        return wait.until(shown)
    except TimeoutException:
        title = driver.find_element(By.ID, "status-title").text
        raise AssertionError(f"the page shows {title!r}, not {prefix!r}") from None


def qr_shot(driver, path: Path) -> str:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "img[data-qr]").screenshot(str(path))
    return decode_qr(path)


def test_pay_in_two_parts_live_without_reload(browser, sandbox, shots):
    receiver = cli(sandbox, "receiver", "new", "--amount", "1", "--description", "order 42")
    address = receiver["address"]
    browser.get(receiver["checkout_url"])
    wait_for_title(browser, "Waiting for your payment")
    browser.save_screenshot(str(shots / "waiting.png"))
    assert qr_shot(browser, shots / "qr-waiting.png") == f"dash:{address}?amount=1"
    # A mark on this document: still there after the updates means no reload happened.
    browser.execute_script("window.dashpayTestMark = 'same document';")

    cli(sandbox, "sandbox", "pay", address, "0.4")
    wait_for_title(browser, "Partly paid")
    browser.save_screenshot(str(shots / "partly_paid.png"))
    assert qr_shot(browser, shots / "qr-partly_paid.png") == f"dash:{address}?amount=0.6"

    cli(sandbox, "sandbox", "pay", address, "0.6")
    wait_for_title(browser, "Paid")
    browser.save_screenshot(str(shots / "settled.png"))
    assert browser.execute_script("return window.dashpayTestMark") == "same document"


def test_expiry_shows_live_and_hides_the_qr_code(browser, sandbox, shots):
    from selenium.webdriver.common.by import By

    receiver = cli(sandbox, "receiver", "new", "--amount", "0.25", "--expires-after", "3s")
    browser.get(receiver["checkout_url"])
    wait_for_title(browser, "Waiting for your payment")
    wait_for_title(browser, "Expired", seconds=10)
    browser.save_screenshot(str(shots / "expired.png"))
    assert not browser.find_element(By.CSS_SELECTOR, "img[data-qr]").is_displayed()
    # An expired request can still be paid late: the stream stays open, so the page
    # does not say its live updates were lost.
    time.sleep(1.5)
    assert not browser.find_element(By.ID, "live").is_displayed()


def test_without_javascript_the_page_reloads_itself(sandbox, shots):
    from selenium.webdriver.common.by import By

    receiver = cli(sandbox, "receiver", "new", "--amount", "1")
    address = receiver["address"]
    with chromium(javascript=False) as driver:
        driver.get(receiver["checkout_url"])
        wait_for_title(driver, "Waiting for your payment")
        copy = driver.find_element(By.CSS_SELECTOR, "button[data-copy=address]")
        assert not copy.is_displayed()  # copy buttons need the script
        assert qr_shot(driver, shots / "qr-nojs-waiting.png") == f"dash:{address}?amount=1"
        cli(sandbox, "sandbox", "pay", address, "0.5")
        # No script, no events: the <noscript> meta refresh (every 10 s) brings it.
        wait_for_title(driver, "Partly paid", seconds=25)  # up to two 10 s refreshes
        driver.save_screenshot(str(shots / "nojs-partly_paid.png"))
        assert qr_shot(driver, shots / "qr-nojs-partly_paid.png") == f"dash:{address}?amount=0.5"


# -- how it looks: 320 px wide, light and dark, keyboard focus ---------------------------

NARROW = 320
PHONE = 390
SHOT_HEIGHT = 1150  # tall enough for the whole page in every view
# The lowest WCAG 2.1 contrast ratio (AA) for normal text.
MIN_CONTRAST = 4.5
# For each visible element with text: its colour's contrast ratio with the first
# opaque background behind it (WCAG 2.1 relative luminance).
CONTRASTS_JS = """
function channels(c) { return c.match(/[\\d.]+/g).map(Number); }
function luminance(c) {
  var v = channels(c).slice(0, 3).map(function (x) {
    x /= 255; return x <= 0.04045 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4);
  });
  return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2];
}
function opaque(c) { var v = channels(c); return v.length < 4 || v[3] > 0; }
function background(el) {
  for (; el; el = el.parentElement) {
    var c = getComputedStyle(el).backgroundColor;
    if (opaque(c)) { return c; }
  }
  return getComputedStyle(document.documentElement).backgroundColor;
}
var out = [];
document.querySelectorAll("h1 span, p, dt, dd, a, button, code, .value, .mark").forEach(
  function (el) {
    if (el.offsetParent === null) { return; }
    var text = el.textContent.trim() || getComputedStyle(el, "::before").content;
    if (!text || text === "none") { return; }
    var a = luminance(getComputedStyle(el).color), b = luminance(background(el));
    var ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    out.push([el.tagName + "." + el.className + " " + text.slice(0, 30), ratio]);
  });
return out;
"""


def set_width(driver, width: int) -> None:
    """Lay the page out as a phone ``width`` CSS px wide shows it (headless Chromium's
    windows are at least 500 px wide)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": SHOT_HEIGHT, "deviceScaleFactor": 1, "mobile": True},
    )


def set_scheme(driver, scheme: str) -> None:
    """prefers-color-scheme: light or dark (applies to the loaded page at once)."""
    feature = {"name": "prefers-color-scheme", "value": scheme}
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [feature]})


def set_language(driver, language: str | None) -> None:
    """The Accept-Language of every request from now on (None: the browser's own)."""
    driver.execute_cdp_cmd("Network.enable", {})
    headers = {} if language is None else {"Accept-Language": language}
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": headers})


@contextlib.contextmanager
def phone(driver) -> Iterator:
    """A NARROW phone until the block ends, then the module's browser as it was."""
    set_width(driver, NARROW)
    try:
        yield
    finally:
        set_language(driver, None)
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def check_looks(driver, width: int) -> None:
    """Nothing wider than the screen, every text readable against its background."""
    wide = driver.execute_script("return document.documentElement.scrollWidth")
    assert wide <= width, f"the page is {wide} px wide on a {width} px screen"
    low = [(what, round(r, 2)) for what, r in driver.execute_script(CONTRASTS_JS)]
    low = [(what, r) for what, r in low if r < MIN_CONTRAST]
    assert not low, f"text below {MIN_CONTRAST}:1 contrast: {low}"


def shoot(driver, shots: Path, name: str) -> None:
    """The page as it is, checked and saved in light and dark: <name>-<scheme>-320.png."""
    for scheme in ("light", "dark"):
        set_scheme(driver, scheme)
        check_looks(driver, NARROW)
        driver.save_screenshot(str(shots / f"{name}-{scheme}-{NARROW}.png"))


def check_focus(driver, shots: Path) -> None:
    """Tabbing reaches links and buttons, each with a visible focus ring."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    for scheme in ("light", "dark"):
        set_scheme(driver, scheme)
        driver.find_element("css selector", "h1").click()  # the page has the focus
        for _ in range(3):  # the QR code's link, the copy-amount button, copy-address
            ActionChains(driver).send_keys(Keys.TAB).perform()
            focused = driver.execute_script(
                "var el = document.activeElement, s = getComputedStyle(el);"
                "return [el.tagName, s.outlineStyle, parseFloat(s.outlineWidth)];"
            )
            assert focused[0] in ("A", "BUTTON"), focused
            assert focused[1] != "none" and focused[2] >= 2, focused
        driver.save_screenshot(str(shots / f"focus-{scheme}-{NARROW}.png"))


def test_every_tone_reads_well_at_320_px_in_light_and_dark(browser, sandbox, shots):
    """Each tone's views at 320 px, light and dark (and the German page of a fiat
    receiver), checked for overflow, contrast and focus, and saved; readme.png (the
    waiting page at 390 px, light) is docs/checkout.png. Four page loads: the page's
    rate limit is shared with the module's other tests."""
    paying = cli(sandbox, "receiver", "new", "--amount", "1", "--description", "order 42")
    overpaid = cli(sandbox, "receiver", "new", "--amount", "0.5")
    cli(sandbox, "sandbox", "pay", overpaid["address"], "0.7")
    cancelled = cli(sandbox, "receiver", "new", "--amount", "0.5")
    cli(sandbox, "receiver", "cancel", str(cancelled["receiver_id"]))
    fiat = cli(sandbox, "receiver", "new", "--amount", "1234.5", "--currency", "EUR")
    with phone(browser):
        browser.get(paying["checkout_url"])
        wait_for_title(browser, "Waiting for your payment")
        shoot(browser, shots, "waiting")
        check_focus(browser, shots)
        set_width(browser, PHONE)
        set_scheme(browser, "light")
        browser.execute_script("document.activeElement.blur()")
        check_looks(browser, PHONE)
        browser.save_screenshot(str(shots / "readme.png"))
        set_width(browser, NARROW)
        cli(sandbox, "sandbox", "pay", paying["address"], "0.4")
        wait_for_title(browser, "Partly paid")
        shoot(browser, shots, "partly_paid")
        cli(sandbox, "sandbox", "pay", paying["address"], "0.6")
        wait_for_title(browser, "Paid")
        shoot(browser, shots, "settled")
        for name, receiver, title in (
            ("overpaid", overpaid, "Paid more than due"),
            ("cancelled", cancelled, "Cancelled"),
        ):
            browser.get(receiver["checkout_url"])
            wait_for_title(browser, title)
            shoot(browser, shots, name)
        set_language(browser, "de")
        browser.get(fiat["checkout_url"])
        wait_for_title(browser, "Warten auf Ihre Zahlung")
        due = browser.find_element("css selector", "[data-value=due_shown]").text
        assert "," in due and "." not in due, due  # 44,08928572 (DASH at the sandbox's rate)
        assert "1.234,5 EUR" in browser.find_element("css selector", ".summary").text
        copied = browser.execute_script(
            "return JSON.parse(arguments[0].textContent)",
            (browser.find_element("id", "checkout-data")),
        )["state"]["due_dash"]
        assert copied == due.replace(",", ".")  # what the copy button copies
        shoot(browser, shots, "fiat-de")
