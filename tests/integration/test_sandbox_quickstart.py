"""The README's quick start, as a newcomer types it: `dashpay serve --sandbox` with no
config anywhere, then plain CLI commands in another terminal."""

from __future__ import annotations

import time

from tests.conftest import run_cli, serve_sandbox


def test_serve_sandbox_walkthrough_without_any_config(short_tmp):
    with serve_sandbox(short_tmp) as (proc, env):
        state = short_tmp / "state" / "dashpay"
        assert (state / "sandbox.sqlite3").exists() and (state / "control.sock").exists()
        assert (state / "sandbox-wallet.txt").read_text().startswith("tpub")

        created = run_cli(
            "receiver", "new", "--amount", "1", "--description", "order 42", "-q", env=env
        )
        assert created.code == 0, created.stderr
        address = created.stdout.strip()
        assert address.startswith("y")  # testnet

        paid = run_cli("sandbox", "pay", address, "1", env=env)
        assert paid.code == 0, paid.stderr
        deadline = time.monotonic() + 15
        while True:
            shown = run_cli("receiver", "show", "1", "--json", env=env).json()
            if shown["status"] == "settled":
                break
            assert time.monotonic() < deadline, shown
            time.sleep(0.1)
        assert shown["received_duffs"] == 100_000_000
        human = run_cli("receiver", "show", "1", env=env)
        assert "settled" in human.stdout and paid.stdout.strip() in human.stdout

        mined = run_cli("sandbox", "mine", "--blocks", "2", env=env)
        assert mined.code == 0 and "height 2" in mined.stdout
        status = run_cli("status", "--json", env=env).json()
        assert status["sandbox"] is True and status["wallet"]["network"] == "testnet"
        assert status["insight"]["state"] == "connected"
        bad = run_cli("sandbox", "pay", "XxFKyXX1ibFAn4s4VLVZodgBeciLWhu8o9", "1", env=env)
        assert bad.code == 2 and "testnet" in bad.stderr
    assert proc.returncode == 0, (short_tmp / "serve.log").read_text()
    assert not (short_tmp / "state" / "dashpay" / "control.sock").exists()


def test_sandbox_prices_fiat_receivers_from_its_own_fixed_rate(short_tmp):
    with serve_sandbox(short_tmp) as (_, env):
        created = run_cli(
            "receiver", "new", "--amount", "25", "--currency", "USD", "--json", env=env
        )
        assert created.code == 0, created.stderr
        data = created.json()
        # 25 USD at the sandbox's fixed 30 USD/DASH, rounded up to the duff.
        assert data["amount_duffs"] == 83_333_334
        assert (data["fiat_amount"], data["fiat_currency"]) == ("25", "USD")
        assert data["rate_provider"] == "sandbox"


def test_a_sandbox_drop_shows_within_15_seconds_without_a_rescan(short_tmp):
    with serve_sandbox(short_tmp) as (proc, env):
        address = run_cli("receiver", "new", "--amount", "1", "-q", env=env).stdout.strip()
        paid = run_cli("sandbox", "pay", address, "1", "--no-lock", env=env)
        assert paid.code == 0, paid.stderr
        txid = paid.stdout.strip()
        deadline = time.monotonic() + 15
        while run_cli("receiver", "show", "1", "--json", env=env).json()["status"] != "paid":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        dropped = run_cli("sandbox", "drop", txid, env=env)
        assert dropped.code == 0, dropped.stderr
        started = time.monotonic()
        while True:
            shown = run_cli("receiver", "show", "1", "--json", env=env).json()
            if shown["status"] == "pending":
                break
            assert time.monotonic() - started < 15, shown
            time.sleep(0.2)
        assert shown["received_duffs"] == 0 and shown["payments"][0]["dropped"] is True
    log = (short_tmp / "serve.log").read_text()
    assert f"sandbox drop txid={txid}" in log
