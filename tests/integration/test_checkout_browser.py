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
