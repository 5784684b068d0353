"""The shipped systemd units are valid and hardened (offline checks)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

UNITS = ["dashpay.service", "dashpay-rescan.service", "dashpay-rescan.timer"]


@pytest.fixture
def units(tmp_path) -> Path:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    dashpay = Path(sys.executable).parent / "dashpay"
    for name in UNITS:
        text = (REPO / "systemd" / name).read_text()
        # verify checks that ExecStart exists; point it at this venv's entry point.
        (tmp_path / name).write_text(text.replace("/usr/local/bin/dashpay", str(dashpay)))
    return tmp_path


def test_units_pass_systemd_analyze_verify(units):
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(units / n) for n in UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_service_exposure_score_stays_low(units):
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(units / "dashpay.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for dashpay.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


def test_service_is_notify_type_with_runtime_and_state_directories():
    text = (REPO / "systemd" / "dashpay.service").read_text()
    for line in (
        "Type=notify",
        "RuntimeDirectory=dashpay",
        "StateDirectory=dashpay",
        "User=dashpay",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    timer = (REPO / "systemd" / "dashpay-rescan.timer").read_text()
    assert "OnCalendar=hourly" in timer
    assert "rescan --since 48h" in (REPO / "systemd" / "dashpay-rescan.service").read_text()
