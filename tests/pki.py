"""Throw-away certificates for tests, made with the openssl command (the venv has no
``cryptography``): a CA, and server certificates it issues for given names."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(folder: Path, *args: str) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)


def make_ca(folder: Path, subject: str = "dashpay test CA") -> Path:
    """A self-signed CA: ``folder/ca.pem`` (and its key ``ca.key``)."""
    openssl(folder, "req", "-x509", *EC_KEY, "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", f"/CN={subject}")  # fmt: skip
    return folder / "ca.pem"


def issue(folder: Path, name: str, alt_names: str) -> tuple[Path, Path]:
    """A server certificate signed by ``make_ca``'s CA in ``folder``, for
    ``alt_names`` (e.g. "DNS:localhost,IP:127.0.0.1"): (certificate, key)."""
    openssl(folder, "req", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")  # fmt: skip
    (folder / f"{name}.cnf").write_text(f"subjectAltName={alt_names}\n")
    openssl(folder, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
            "-extfile", f"{name}.cnf")  # fmt: skip
    return folder / f"{name}.pem", folder / f"{name}.key"
