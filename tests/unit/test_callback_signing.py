"""The Dashpay-Signature header: format, verification, and agreement with the shell
recipe merchants are given in docs/callbacks.md (openssl)."""

from __future__ import annotations

import hashlib
import hmac
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from dashpay.services.callbacks.signing import (
    SignatureError,
    compute_signature,
    parse_signature_header,
    signature_header,
    verify_signature,
)

SECRET = "whsec-0123456789abcdef"
BODY = b'{"event":"receiver.paid","event_id":"evt_1","amount_duffs":100000000}'
T = 1_767_225_600  # 2026-01-01T00:00:00Z
DOCS = Path(__file__).resolve().parents[2] / "docs" / "callbacks.md"


def test_the_header_is_timestamp_and_v1_hmac_of_timestamp_dot_body():
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert signature_header(SECRET, BODY, T) == f"t={T},v1={expected}"
    assert len(expected) == 64


def test_a_signature_verifies_with_the_secret_and_fails_with_another():
    header = signature_header(SECRET, BODY, T)
    assert verify_signature(SECRET, BODY, header, now=T)
    assert not verify_signature("whsec-another-secret-000", BODY, header, now=T)


def test_any_change_to_the_body_or_the_timestamp_breaks_the_signature():
    header = signature_header(SECRET, BODY, T)
    assert not verify_signature(SECRET, BODY.replace(b"100000000", b"900000000"), header, now=T)
    forged = header.replace(f"t={T}", f"t={T + 1}")
    assert not verify_signature(SECRET, BODY, forged, now=T)


def test_an_old_signature_is_refused_unless_the_age_check_is_off():
    header = signature_header(SECRET, BODY, T)
    assert verify_signature(SECRET, BODY, header, now=T + 300)
    assert not verify_signature(SECRET, BODY, header, now=T + 301)
    assert not verify_signature(SECRET, BODY, header, now=T - 301)
    assert verify_signature(SECRET, BODY, header, now=T + 10**6, tolerance=None)


def test_a_header_with_several_v1_entries_matches_any_of_them():
    good = compute_signature(SECRET, BODY, T)
    header = f"t={T},v1={'0' * 64},v1={good},v0=legacy"
    assert parse_signature_header(header) == (T, ["0" * 64, good])
    assert verify_signature(SECRET, BODY, header, now=T)


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("", "not key=value"),
        (f"v1={'a' * 64}", "no t= timestamp"),
        (f"t={T}", "no v1= signature"),
        (f"t=soon,v1={'a' * 64}", "not unix seconds"),
        (f"t=-5,v1={'a' * 64}", "not unix seconds"),
        ("t=1," + "v1=a," * 300, "over 1024 characters"),
    ],
)
def test_malformed_headers_are_reported_and_never_verify(header, problem):
    with pytest.raises(SignatureError, match=problem):
        parse_signature_header(header)
    assert not verify_signature(SECRET, BODY, header, now=T)


def test_a_non_ascii_signature_does_not_crash_the_verifier():
    assert not verify_signature(SECRET, BODY, f"t={T},v1=ü{'a' * 63}", now=T)


def test_a_unicode_secret_is_used_as_utf8():
    secret = "sécret-ünïcode-0123"
    expected = hmac.new(secret.encode("utf-8"), f"{T}.".encode() + BODY, hashlib.sha256)
    assert compute_signature(secret, BODY, T) == expected.hexdigest()


def docs_block(language: str) -> str:
    """The first ```language block of docs/callbacks.md (what merchants copy)."""
    text = DOCS.read_text()
    match = re.search(rf"```{language}\n(.*?)```", text, re.DOTALL)
    assert match is not None, f"no {language} block in {DOCS}"
    return match[1]


def test_the_documented_python_verifier_agrees_with_the_signer():
    namespace: dict = {}
    exec(docs_block("python"), namespace)  # noqa: S102 - our own documentation
    verify = namespace["verify_dashpay"]
    now = int(time.time())
    header = signature_header(SECRET, BODY, now)
    assert verify(SECRET, BODY, header)
    assert not verify("whsec-another-secret-000", BODY, header)
    assert not verify(SECRET, BODY + b" ", header)
    assert not verify(SECRET, BODY, signature_header(SECRET, BODY, now - 301))
    assert not verify(SECRET, BODY, f"t={now},v1=ü")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
@pytest.mark.parametrize(
    ("secret", "valid"), [(SECRET, "valid"), ("whsec-wrong-0000000", "INVALID")]
)
def test_the_documented_openssl_recipe_checks_the_signature(tmp_path, secret, valid):
    (tmp_path / "body.json").write_bytes(BODY)
    result = subprocess.run(
        ["sh", "-c", docs_block("sh")],
        cwd=tmp_path,
        env={
            "HEADER": signature_header(SECRET, BODY, T),
            "SECRET": secret,
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == valid
