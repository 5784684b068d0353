"""The test tooling's own behaviour: tests/node/install runs `npm ci` only when needed,
tests/mariadb-server tells how to stop a server left running, and each pytest-xdist
worker's daemons have wallet keys of their own. Offline: a fake `npm` and a fake
`mariadb-admin` on PATH stand in for the real ones."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, SERIAL_KEYS, VECTOR_XPUB, XDIST_KEYS, worker_keys

FAKE_NPM = """#!/bin/sh
# Records the call; `ci` lays out node_modules as npm does (a package, npm's record).
echo "$*" >>"$NPM_CALLS"
[ -z "$NPM_FAIL" ] || exit 1
rm -rf node_modules
mkdir -p node_modules/socket.io node_modules/@dashevo/dashcore-lib
cp package-lock.json node_modules/.package-lock.json
"""


@pytest.fixture
def node_dir(tmp_path) -> Path:
    directory = tmp_path / "node"
    directory.mkdir()
    shutil.copy(REPO / "tests" / "node" / "install", directory / "install")
    shutil.copy(REPO / "tests" / "node" / "package-lock.json", directory / "package-lock.json")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text(FAKE_NPM)
    (bin_dir / "npm").chmod(0o755)
    return directory


def run_with_fakes(command: list[str], bin_dir: Path, **env: str) -> subprocess.CompletedProcess:
    """Run a tooling script with the fake programs of ``bin_dir`` first on PATH."""
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **env},
    )


def install(node_dir: Path, **env: str) -> tuple[subprocess.CompletedProcess, int]:
    """Run the install script; (its result, how many times it ran npm)."""
    calls = node_dir.parent / "npm-calls"
    before = len(calls.read_text().splitlines()) if calls.exists() else 0
    result = run_with_fakes(
        [str(node_dir / "install")],
        node_dir.parent / "bin",
        **{"NPM_CALLS": str(calls), "NPM_FAIL": "", **env},
    )
    after = len(calls.read_text().splitlines()) if calls.exists() else 0
    return result, after - before


def age_stamp(node_dir: Path) -> None:
    """Make the last install a while ago, as it is between two real runs."""
    then = time.time() - 60
    for directory, _, files in os.walk(node_dir / "node_modules"):
        for path in [directory, *(os.path.join(directory, name) for name in files)]:
            os.utime(path, (then, then))


def test_npm_ci_runs_once_then_only_when_the_lock_changes(node_dir):
    result, calls = install(node_dir)
    assert result.returncode == 0 and calls == 1, result.stderr
    assert (node_dir / "node_modules" / ".dashpay-lock-hash").is_file()
    result, calls = install(node_dir)
    assert result.returncode == 0 and calls == 0, result.stderr
    assert "up to date" in result.stdout
    with (node_dir / "package-lock.json").open("a") as lock:
        lock.write("\n")
    assert install(node_dir)[1] == 1
    assert install(node_dir)[1] == 0


def test_npm_ci_runs_when_node_modules_is_missing_or_differs(node_dir):
    assert install(node_dir)[1] == 1
    shutil.rmtree(node_dir / "node_modules")
    assert install(node_dir)[1] == 1
    # npm's record of the tree changed (an `npm install` by hand).
    with (node_dir / "node_modules" / ".package-lock.json").open("a") as record:
        record.write(" ")
    assert install(node_dir)[1] == 1
    # A package folder removed, in a scope folder and at the top.
    for package in ("@dashevo/dashcore-lib", "socket.io"):
        age_stamp(node_dir)
        assert install(node_dir)[1] == 0
        shutil.rmtree(node_dir / "node_modules" / package)
        assert install(node_dir)[1] == 1


def test_a_failed_npm_ci_is_tried_again(node_dir):
    result, calls = install(node_dir, NPM_FAIL="1")
    assert result.returncode != 0 and calls == 1
    assert install(node_dir)[1] == 1
    assert install(node_dir)[1] == 0


def test_tests_run_uses_the_install_script_and_ends_with_the_mariadb_hint():
    run = (REPO / "tests" / "run").read_text()
    assert "tests/node/install" in run and "npm ci" not in run
    assert "tests/mariadb-server hint" in run


# -- tests/mariadb-server hint ---------------------------------------------------------


@pytest.fixture
def fake_server(tmp_path):
    """A state directory whose pid file names a live process, and a mariadb-admin that
    answers every ping: what `running` checks, without a server."""
    state = tmp_path / "state"
    (state / "mariadb").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mariadb-admin").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "mariadb-admin").chmod(0o755)
    sleeper = subprocess.Popen(["sleep", "60"])
    yield state, bin_dir, sleeper.pid
    sleeper.kill()
    sleeper.wait()


def hint(state: Path, bin_dir: Path) -> str:
    result = run_with_fakes(
        [str(REPO / "tests" / "mariadb-server"), "hint"],
        bin_dir,
        DASHPAY_TEST_STATE=str(state),
        DASHPAY_TEST_MYSQL_PORT="34567",
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_mariadb_hint_says_where_it_runs_and_how_to_stop_it(fake_server):
    state, bin_dir, pid = fake_server
    assert hint(state, bin_dir) == ""  # no pid file: not running, nothing to say
    (state / "mariadb" / "mariadbd.pid").write_text(f"{pid}\n")
    text = hint(state, bin_dir)
    assert f"still running on 127.0.0.1:34567 (pid {pid}" in text
    assert f"DASHPAY_TEST_STATE={state} {REPO}/tests/mariadb-server stop" in text


# -- wallet keys per pytest-xdist worker ------------------------------------------------


def test_every_worker_has_wallet_keys_no_other_process_uses():
    from bip_utils import Bip32Secp256k1

    keys = [SERIAL_KEYS, *XDIST_KEYS]
    every = [k.test for k in keys] + [k.shared for k in keys]
    assert len(set(every)) == len(every) == 2 * (len(XDIST_KEYS) + 1)
    assert SERIAL_KEYS.test == VECTOR_XPUB
    assert worker_keys("") is SERIAL_KEYS
    assert [worker_keys(f"gw{n}") for n in range(len(XDIST_KEYS))] == XDIST_KEYS
    # Where they come from (tests/conftest.py says so): account keys of the vector seed.
    serial_shared = Bip32Secp256k1.FromSeed(bytes(range(32))).DerivePath("m/44'/5'/7'")
    assert serial_shared.PublicKey().ToExtended() == SERIAL_KEYS.shared
    root = Bip32Secp256k1.FromSeed(bytes(range(64)))
    for n, pair in enumerate(XDIST_KEYS):
        for account, key in ((10 + 2 * n, pair.test), (11 + 2 * n, pair.shared)):
            assert root.DerivePath(f"m/44'/5'/{account}'").PublicKey().ToExtended() == key
    with pytest.raises(RuntimeError, match=f"-n {len(XDIST_KEYS)} or fewer"):
        worker_keys(f"gw{len(XDIST_KEYS)}")
