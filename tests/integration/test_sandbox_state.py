"""`dashpay serve --sandbox` as a real subprocess: what it keeps in its state directory,
and what it never touches outside it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO, TEST_XPUB, CliResult, cli_env, run_cli, write_config


@dataclass
class SandboxProcess:
    proc: subprocess.Popen
    env: dict[str, str]
    log_path: Path

    def cli(self, *args: str) -> CliResult:
        return run_cli(*args, env=self.env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"sandbox did not stop on SIGTERM:\n{self.log()}") from None
        return self.proc.returncode


def start_sandbox(home: Path, *args: str, ready: bool = True) -> SandboxProcess:
    """`dashpay [ARGS] serve --sandbox` with its state under ``home`` (ARGS before
    `serve` are global options, after a "serve" item they are serve's own)."""
    env = {"XDG_STATE_HOME": str(home / "state"), "HOME": str(home)}
    log_path = home / f"serve-{time.monotonic_ns()}.log"
    globals_, _, serve_args = _split(args)
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dashpay", *globals_, "serve", "--sandbox", *serve_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=cli_env(env),
            cwd=REPO,
        )
    sandbox = SandboxProcess(proc, env, log_path)
    if not ready:
        return sandbox
    try:
        deadline = time.monotonic() + 20
        while (status := sandbox.cli("status", "--json")).code != 0:
            assert proc.poll() is None, sandbox.log()
            assert time.monotonic() < deadline, sandbox.log()
            time.sleep(0.1)
        assert status.json()["state"] == "ready", status.stdout
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return sandbox


def _split(args: tuple[str, ...]) -> tuple[list[str], str, list[str]]:
    if "serve" in args:
        at = args.index("serve")
        return list(args[:at]), "serve", list(args[at + 1 :])
    return list(args), "", []


def wait_for(fetch, accept, sandbox: SandboxProcess, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not accept(value := fetch()):
        assert time.monotonic() < deadline, f"last: {value!r}\n{sandbox.log()}"
        time.sleep(0.1)
    return value


def new_receiver(sandbox: SandboxProcess, *args: str) -> dict:
    created = sandbox.cli("receiver", "new", "--amount", "1", *args, "--json")
    assert created.code == 0, created.stderr
    return created.json()


def shown(sandbox: SandboxProcess, receiver_id: int) -> dict:
    result = sandbox.cli("receiver", "show", str(receiver_id), "--json")
    assert result.code == 0, result.stderr
    return result.json()


# -- item: an address can be paid again after a drop -----------------------------------


def test_an_address_can_be_paid_again_after_its_payment_was_dropped(short_tmp):
    sandbox = start_sandbox(short_tmp)
    try:
        receiver = new_receiver(sandbox)
        first = sandbox.cli("sandbox", "pay", receiver["address"], "0.4", "--no-lock")
        assert first.code == 0, first.stderr
        dropped = sandbox.cli("sandbox", "drop", first.stdout.strip())
        assert dropped.code == 0, dropped.stderr
        # The daemon's re-check timer notices (Insight has no event for a drop) and
        # drops it after the sandbox's drop_after.
        wait_for(
            lambda: shown(sandbox, receiver["receiver_id"]),
            lambda r: r["received_duffs"] == 0,
            sandbox,
        )
        again = sandbox.cli("sandbox", "pay", receiver["address"], "1")
        assert again.code == 0, again.stderr + sandbox.log()
        settled = wait_for(
            lambda: shown(sandbox, receiver["receiver_id"]),
            lambda r: r["status"] == "settled",
            sandbox,
        )
        assert settled["received_duffs"] == 100_000_000
    finally:
        assert sandbox.stop() == 0, sandbox.log()


# -- item: the sandbox keeps its chain across restarts ---------------------------------


def events_of(sandbox: SandboxProcess, receiver_id: int) -> list[str]:
    result = sandbox.cli("callbacks", "list", "--receiver", str(receiver_id), "--json")
    assert result.code == 0, result.stderr
    return [e["event"] for e in reversed(result.json()["events"])]


def test_a_restarted_sandbox_continues_its_chain_and_keeps_settled_receivers(short_tmp):
    sandbox = start_sandbox(short_tmp)
    try:
        settled = new_receiver(sandbox)
        waiting = new_receiver(sandbox)
        assert sandbox.cli("sandbox", "pay", settled["address"], "1").code == 0
        unlocked = sandbox.cli("sandbox", "pay", waiting["address"], "0.5", "--no-lock")
        assert unlocked.code == 0, unlocked.stderr
        before = wait_for(
            lambda: shown(sandbox, settled["receiver_id"]),
            lambda r: r["status"] == "settled",
            sandbox,
        )
        assert shown(sandbox, waiting["receiver_id"])["status"] == "partial"
    finally:
        assert sandbox.stop() == 0, sandbox.log()

    again = start_sandbox(short_tmp)  # ready: its bootstrap rescan is done
    try:
        assert again.cli("rescan").code == 0
        after = shown(again, settled["receiver_id"])
        assert (after["status"], after["received_duffs"]) == ("settled", 100_000_000)
        assert after["payments"] == before["payments"]
        partial = shown(again, waiting["receiver_id"])
        assert (partial["status"], partial["received_duffs"]) == ("partial", 50_000_000)
        # The unlocked payment is still in the sandbox's mempool: mining confirms it.
        assert again.cli("sandbox", "mine").code == 0
        wait_for(
            lambda: shown(again, waiting["receiver_id"])["payments"][0]["confirmations"],
            lambda confirmations: confirmations == 1,
            again,
        )
        for receiver in (settled, waiting):
            assert "receiver.payment_dropped" not in events_of(again, receiver["receiver_id"])
    finally:
        assert again.stop() == 0, again.log()
    assert "payment_dropped" not in again.log()


def test_a_damaged_chain_is_refused_until_reset_starts_over(short_tmp):
    sandbox = start_sandbox(short_tmp)
    try:
        receiver = new_receiver(sandbox)
        assert sandbox.cli("sandbox", "pay", receiver["address"], "1").code == 0
        running = sandbox.cli("sandbox", "reset", "--yes")
        assert running.code == 4 and "is running" in running.stderr, running
    finally:
        assert sandbox.stop() == 0, sandbox.log()
    chain_file = short_tmp / "state" / "dashpay" / "sandbox-chain.json"
    chain_file.write_bytes(chain_file.read_bytes()[:-1])

    refused = start_sandbox(short_tmp, ready=False)
    assert refused.proc.wait(20) == 2
    assert str(chain_file) in refused.log() and "dashpay sandbox reset" in refused.log()

    reset = run_cli("sandbox", "reset", "--yes", env=refused.env)
    assert reset.code == 0, reset.stderr
    assert "sandbox-chain.json" in reset.stdout and "sandbox.sqlite3" in reset.stdout
    fresh = start_sandbox(short_tmp)
    try:
        assert fresh.cli("receiver", "list", "--json").json()["receivers"] == []
        assert new_receiver(fresh)["address"] == receiver["address"]  # the key is kept
    finally:
        assert fresh.stop() == 0, fresh.log()


# -- item: a config file never points the sandbox at real state ------------------------


def fingerprint(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def _plus_minutes(stamp: str, minutes: int) -> str:
    import datetime

    when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (when + datetime.timedelta(minutes=minutes)).strftime("%H:%M")


def test_serve_sandbox_with_a_config_never_touches_its_database_socket_or_callbacks(
    short_tmp, http_server
):
    real = short_tmp / "real"
    real.mkdir()
    config = write_config(
        real,
        f"sqlite:///{real / 'real.sqlite3'}",
        wallet={"xpub": TEST_XPUB, "network": "testnet"},
        callbacks={"default_url": http_server.url("/shop")},
        receivers={"expires_after": "7m"},  # [receivers] is taken: rules only
    )
    migrated = run_cli("--config", str(config), "db", "migrate")
    assert migrated.code == 0, migrated.stderr
    untouched = fingerprint(real)
    assert "real.sqlite3" in untouched

    sandbox = start_sandbox(short_tmp, "--config", str(config))
    try:
        receiver = new_receiver(sandbox)
        assert receiver["hd_index"] == 0 and receiver["callback_url"] is None
        assert receiver["expires_at"][11:16] == _plus_minutes(receiver["created_at"], 7)
        assert sandbox.cli("sandbox", "pay", receiver["address"], "1").code == 0
        wait_for(
            lambda: shown(sandbox, receiver["receiver_id"]),
            lambda r: r["status"] == "settled",
            sandbox,
        )
        time.sleep(1.0)  # a callback would have been posted by now
    finally:
        assert sandbox.stop() == 0, sandbox.log()
    assert http_server.requests == []
    assert fingerprint(real) == untouched  # no write, no socket, no WAL file
    state = short_tmp / "state" / "dashpay"
    assert f"sandbox state directory: {state}" in sandbox.log()
    assert "sandbox uses [receivers] (but drop_after) and [logging] of" in sandbox.log()

    sending = start_sandbox(short_tmp, "--config", str(config), "serve", "--send-callbacks")
    try:
        second = new_receiver(sending)
        assert second["callback_url"] == http_server.url("/shop")
        assert second["hd_index"] == 1  # the sandbox's own counter, continued
        assert sending.cli("sandbox", "pay", second["address"], "1").code == 0
        posted = wait_for(
            lambda: [r.event for r in http_server.to("/shop")],
            lambda events: "receiver.settled" in events,
            sending,
        )
    finally:
        assert sending.stop() == 0, sending.log()
    assert posted == ["receiver.paid", "receiver.settled"]
    assert fingerprint(real) == untouched


def test_send_callbacks_needs_sandbox_and_a_config(short_tmp):
    alone = run_cli("serve", "--send-callbacks", env={"HOME": str(short_tmp)})
    assert alone.code == 2 and "goes with --sandbox" in alone.stderr
    no_config = run_cli("serve", "--sandbox", "--send-callbacks", env={"HOME": str(short_tmp)})
    assert no_config.code == 2 and "pass --config" in no_config.stderr
    assert not (short_tmp / ".local").exists()
