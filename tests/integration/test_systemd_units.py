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


def exposure(units: Path, name: str) -> float:
    """The overall exposure level `systemd-analyze security` gives a unit (0 to 10)."""
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(units / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def test_service_exposure_score_stays_low(units):
    assert exposure(units, "dashpay.service") <= 2.0


def test_rescan_unit_is_hardened_like_the_main_unit(units):
    # The rescan job only talks to the control socket: it needs no more than the daemon.
    assert exposure(units, "dashpay-rescan.service") <= exposure(units, "dashpay.service") + 0.2


def test_documentation_links_point_at_what_the_install_steps_install():
    readme = (REPO / "README.md").read_text()
    for name in UNITS:
        text = (REPO / "systemd" / name).read_text()
        links = re.findall(r"^Documentation=(.+)$", text, re.M)
        assert links, f"{name} has no Documentation="
        for link in (word for line in links for word in line.split()):
            assert re.match(r"(https?|file|man|info):", link), link
            if link.startswith("file://"):
                installed = Path(link.removeprefix("file://"))
                assert (REPO / installed.name).is_file(), link
                install_line = f"-t {installed.parent} {installed.name}"
                assert install_line in readme, f"README's install steps do not install {link}"


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
