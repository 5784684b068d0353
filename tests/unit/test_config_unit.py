"""dashpay.config.unit: reading a systemd unit and its drop-ins, and deciding whether the
service's user can read a file (mode bits, groups, ACLs, ProtectHome/PrivateTmp)."""

from __future__ import annotations

import grp
import os
import struct
from pathlib import Path

import pytest

from dashpay.config.unit import read_unit, service_access, service_account

NOBODY_UID = 65534


def unit(directory: Path, text: str, *dropins: tuple[str, str]) -> Path:
    path = directory / "dashpay.service"
    path.write_text(text)
    for name, body in dropins:
        (directory / "dashpay.service.d").mkdir(exist_ok=True)
        (directory / "dashpay.service.d" / name).write_text(body)
    return path


def test_settings_come_from_service_with_continuations_resets_and_drop_ins(shared_dir):
    path = unit(
        shared_dir,
        "[Unit]\nUser=not-this-one\n\n[Service]\n# User=commented\nUser=root\n"
        "LoadCredential=old:/etc/old\nLoadCredential=\nLoadCredential=db-password:/etc/db\n"
        "SupplementaryGroups=adm \\\n  daemon\nProtectHome=read-only\n",
        ("20-late.conf", "[Service]\nUser=nobody\nPrivateTmp=yes\n"),
        ("10-early.conf", "[Service]\nUser=daemon\nProtectHome=tmpfs\n"),
    )
    service = read_unit(path)
    assert service.user == "nobody"  # the last drop-in by name wins
    assert dict(service.credentials) == {"db-password": Path("/etc/db")}
    assert service.supplementary_groups == ("adm", "daemon")
    assert service.protect_home and service.private_tmp


def test_read_only_home_stays_visible(shared_dir):
    service = read_unit(unit(shared_dir, "[Service]\nProtectHome=read-only\n"))
    assert not service.protect_home and not service.private_tmp
    assert service.user is None  # root


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another group needs root")
def test_a_supplementary_group_grants_group_read(shared_dir):
    secret = shared_dir / "secret"
    secret.write_text("x")
    os.chown(secret, 0, grp.getgrnam("adm").gr_gid)
    secret.chmod(0o640)
    plain = read_unit(unit(shared_dir, "[Service]\nUser=nobody\n"))
    assert service_access(secret, plain, service_account(plain)).readable is False
    grouped = read_unit(unit(shared_dir, "[Service]\nUser=nobody\nSupplementaryGroups=adm\n"))
    assert service_access(secret, grouped, service_account(grouped)).readable is True


def _acl_granting_read_to(uid: int) -> bytes:
    """A POSIX ACL xattr (version 2): owner rw, user `uid` r, group -, mask r, other -."""

    def entry(tag: int, perm: int, ident: int = 0xFFFFFFFF) -> bytes:
        return struct.pack("<HHI", tag, perm, ident)

    return struct.pack("<I", 2) + b"".join(
        [entry(0x01, 6), entry(0x02, 4, uid), entry(0x04, 0), entry(0x10, 4), entry(0x20, 0)]
    )


def test_an_acl_makes_the_answer_unknown_not_a_refusal(shared_dir):
    secret = shared_dir / "secret"
    secret.write_text("x")
    secret.chmod(0o600)
    try:
        os.setxattr(secret, "system.posix_acl_access", _acl_granting_read_to(NOBODY_UID))
    except OSError as exc:
        pytest.skip(f"no POSIX ACLs here: {exc}")
    service = read_unit(unit(shared_dir, "[Service]\nUser=nobody\n"))
    access = service_access(secret, service, service_account(service))
    assert access.readable is None
    assert f"{secret} has an ACL" in access.reason and "sudo -u nobody" in access.reason


def test_protect_home_hides_root_and_home(shared_dir):
    service = read_unit(unit(shared_dir, "[Service]\nUser=root\nProtectHome=yes\n"))
    account = service_account(service)
    for path in (Path("/root/db-password"), Path("/home/alice/x")):
        access = service_access(path, service, account)
        assert access.readable is False and "ProtectHome=" in access.reason
    assert service_access(Path("/etc/hostname"), service, account).readable is True
