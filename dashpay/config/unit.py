"""The service's view of its files: the systemd unit's user, credentials and sandboxing.

`dashpay config check` runs as whoever types it, often root, who can read any file;
the daemon runs as the unit's ``User=`` and cannot. So config check reads the unit
(``--unit PATH``, else the installed ``dashpay.service`` and its drop-ins) and asks of
every file the daemon reads: can that user reach it? The answer comes from the owner,
group and mode bits of the file and of each directory above it, and from the unit's
``ProtectHome=`` and ``PrivateTmp=``, which hide /home and /tmp from the service. A
POSIX ACL changes the answer in ways the mode bits do not show: then it says so.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dashpay.config.errors import ConfigError

UNIT_NAME = "dashpay.service"
# Where systemd looks for system units, highest precedence first (systemd.unit(5)).
UNIT_DIRECTORIES = (
    Path("/etc/systemd/system"),
    Path("/run/systemd/system"),
    Path("/usr/local/lib/systemd/system"),
    Path("/usr/lib/systemd/system"),
    Path("/lib/systemd/system"),
)
# LoadCredential=ID without a path: systemd searches these (systemd.exec(5)).
CREDENTIAL_STORES = (Path("/etc/credstore"), Path("/run/credstore"), Path("/usr/lib/credstore"))
_HOME_DIRECTORIES = (Path("/home"), Path("/root"), Path("/run/user"))
_TMP_DIRECTORIES = (Path("/tmp"), Path("/var/tmp"))
_TRUE = ("1", "yes", "true", "on")
# Credentials given in a form whose content config check cannot read.
_OPAQUE_CREDENTIALS = ("SetCredential", "SetCredentialEncrypted", "LoadCredentialEncrypted")
_ACL_XATTR = "system.posix_acl_access"


@dataclass(frozen=True, slots=True)
class ServiceUnit:
    """What of a unit decides which files the service reads (after its drop-ins)."""

    path: Path
    user: str | None  # None: the service runs as root
    group: str | None
    supplementary_groups: tuple[str, ...]
    dynamic_user: bool
    credentials: Mapping[str, Path | None]  # ID -> source file; None: not readable here
    protect_home: bool  # /home, /root and /run/user are hidden
    private_tmp: bool  # /tmp and /var/tmp are the service's own


def installed_unit() -> Path | None:
    """The dashpay.service systemd would load, or None when none is installed."""
    for directory in UNIT_DIRECTORIES:
        if (directory / UNIT_NAME).is_file():
            return directory / UNIT_NAME
    return None


def read_unit(path: Path) -> ServiceUnit:
    """Parse a unit file and its drop-ins (``NAME.d/*.conf``): its [Service] settings."""
    settings: dict[str, list[str]] = {}
    for source in (path, *_drop_ins(path)):
        try:
            text = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError(
                f"the unit file {source} cannot be read ({reason})",
                hint="pass --unit with the path of dashpay.service",
            ) from None
        for name, value in _service_settings(text):
            if value == "" and name in settings:
                del settings[name]  # an empty assignment resets a list
            elif value != "":
                settings.setdefault(name, []).append(value)

    def last(name: str) -> str | None:
        values = settings.get(name)
        return values[-1] if values else None

    credentials: dict[str, Path | None] = {}
    for value in settings.get("LoadCredential", []):
        ident, _, source = value.partition(":")
        credentials[ident] = Path(source) if source else _credential_store(ident)
    for name in _OPAQUE_CREDENTIALS:
        for value in settings.get(name, []):
            credentials[value.partition(":")[0]] = None
    return ServiceUnit(
        path=path,
        user=last("User"),
        group=last("Group"),
        supplementary_groups=tuple(
            group for value in settings.get("SupplementaryGroups", []) for group in value.split()
        ),
        dynamic_user=(last("DynamicUser") or "no").lower() in _TRUE,
        credentials=credentials,
        protect_home=(last("ProtectHome") or "no").lower() in (*_TRUE, "tmpfs"),
        private_tmp=(last("PrivateTmp") or "no").lower() in (*_TRUE, "disconnected"),
    )


def _drop_ins(path: Path) -> list[Path]:
    """The unit's drop-in files in the order systemd applies them: by file name, a name
    in a directory of higher precedence hiding the same name below it."""
    directories = [path.parent / f"{path.name}.d"]
    if path.parent in UNIT_DIRECTORIES:
        directories = [directory / f"{path.name}.d" for directory in UNIT_DIRECTORIES]
    found: dict[str, Path] = {}
    for directory in directories:
        if directory.is_dir():
            for conf in directory.glob("*.conf"):
                found.setdefault(conf.name, conf)
    return [found[name] for name in sorted(found)]


def _service_settings(text: str) -> list[tuple[str, str]]:
    """(name, value) of each assignment in [Service], continuation lines joined."""
    result = []
    section = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Service" and "=" in line:
            name, _, value = line.partition("=")
            result.append((name.strip(), value.strip()))
    return result


def _credential_store(ident: str) -> Path | None:
    for store in CREDENTIAL_STORES:
        if (store / ident).exists():
            return store / ident
    return CREDENTIAL_STORES[0] / ident  # reported as missing when it is read


# -- who the service is ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    name: str
    uid: int
    gids: frozenset[int]


def service_account(unit: ServiceUnit) -> ServiceAccount | str:
    """The user and groups the service runs with, or why they cannot be known here."""
    if unit.dynamic_user:
        return f"{unit.path} has DynamicUser=yes: its user exists only while it runs"
    name = unit.user or "root"
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        return (
            f"the user {name} of {unit.path} does not exist on this machine (create it "
            "first: README, Running under systemd)"
        )
    gid = entry.pw_gid
    groups = []
    try:
        if unit.group is not None:
            gid = int(unit.group) if unit.group.isdigit() else grp.getgrnam(unit.group).gr_gid
        groups = [
            int(g) if g.isdigit() else grp.getgrnam(g).gr_gid for g in unit.supplementary_groups
        ]
    except KeyError:
        return f"a group named in {unit.path} does not exist on this machine"
    gids = frozenset([gid, *os.getgrouplist(entry.pw_name, gid), *groups])
    return ServiceAccount(name=entry.pw_name, uid=entry.pw_uid, gids=gids)


# -- can it read a file ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Access:
    """Whether the service can read a file: True, False, or None (cannot tell)."""

    readable: bool | None
    reason: str = ""


def service_access(path: Path, unit: ServiceUnit, account: ServiceAccount) -> Access:
    """Can the service (``account`` under ``unit``) open ``path`` for reading?"""
    path = Path(os.path.abspath(path))
    target = path.resolve()
    for shown in dict.fromkeys((path, target)):
        if unit.protect_home and _under(shown, _HOME_DIRECTORIES):
            return Access(
                False, f"{shown} is hidden from the service (ProtectHome= in {unit.path})"
            )
        if unit.private_tmp and _under(shown, _TMP_DIRECTORIES):
            return Access(
                False, f"{shown} is not visible to the service, which has its own /tmp "
                f"(PrivateTmp= in {unit.path})"
            )  # fmt: skip
    if account.uid == 0:
        return Access(True)
    acl = []
    for inode, needed, verb in [
        *((directory, stat.S_IXOTH, "enter") for directory in reversed(target.parents)),
        (target, stat.S_IROTH, "read"),
    ]:
        try:
            info = os.stat(inode)
        except OSError as exc:
            return Access(False, f"{inode} cannot be examined ({exc.strerror})")
        if _has_acl(inode):
            acl.append(inode)
        if not _permits(info, account, needed):
            if acl:
                break
            return Access(
                False, f"user {account.name} cannot {verb} {inode} "
                f"({_owner(info)}, mode {stat.S_IMODE(info.st_mode):04o})"
            )  # fmt: skip
    if acl:
        return Access(
            None,
            f"{acl[0]} has an ACL, which the mode bits do not show: check with "
            f"`sudo -u {account.name} head -c0 {target}`",
        )
    return Access(True)


def _permits(info: os.stat_result, account: ServiceAccount, other_bit: int) -> bool:
    """The owner, group or other permission bit that applies to ``account``."""
    if info.st_uid == account.uid:
        return bool(info.st_mode & (other_bit << 6))
    if info.st_gid in account.gids:
        return bool(info.st_mode & (other_bit << 3))
    return bool(info.st_mode & other_bit)


def _has_acl(path: Path) -> bool:
    try:
        return _ACL_XATTR in os.listxattr(path)
    except OSError:
        return False


def _owner(info: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        user = str(info.st_uid)
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    return f"owned by {user}:{group}"


def _under(path: Path, directories: tuple[Path, ...]) -> bool:
    return any(path == d or d in path.parents for d in directories)


# -- the report -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceReads:
    """The verdict on the files the service reads: refusals, cautions, what was done."""

    errors: list[ConfigError]
    cautions: list[str]
    checked_as: str | None  # "user U (User= of UNIT)" when the check could be made


def check_service_reads(
    config_path: Path, secret_files: list[tuple[str, Path]], unit: ServiceUnit
) -> ServiceReads:
    """Can the service read the config file and the secret files it names?"""
    account = service_account(unit)
    if isinstance(account, str):
        return ServiceReads([], [f"{account}: cannot check which files it can read"], None)
    errors, cautions = [], []
    for key, path in [(None, config_path), *secret_files]:
        access = service_access(path, unit, account)
        if access.readable is None:
            cautions.append(access.reason)
        elif not access.readable:
            errors.append(
                ConfigError(
                    f"not readable by the service of {unit.path}: {access.reason}",
                    path=config_path,
                    key=key,
                    hint=f"make it readable by user {account.name} (e.g. chgrp {account.name} "
                    "and chmod 0640, with its directories searchable)"
                    + (", or hand it over with LoadCredential=" if key else ""),
                )
            )
    return ServiceReads(errors, cautions, f"user {account.name} (User= of {unit.path})")


def root_cannot_tell(config_path: Path, secret_files: list[tuple[str, Path]]) -> str:
    """The caution for root without a unit: root reads any file, the service may not."""
    paths = ", ".join(str(p) for p in [config_path, *(p for _, p in secret_files)])
    return (
        f"running as root, which can read any file: cannot tell whether the service's "
        f"user can read {paths}; pass --unit with the service's unit file "
        "(e.g. systemd/dashpay.service) to check as its User="
    )
