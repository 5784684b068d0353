"""The sandbox's state directory: its chain file, the lock that keeps one sandbox daemon
on it, and `dashpay sandbox reset`.

Why the chain is kept at all: the sandbox database records payments that only the
simulated chain holds. A daemon restarted on a new chain rescans, finds none of them
(404s) and reverts its settled receivers. So the chain and the database are one state,
kept together and deleted together:

- the chain file is written after every change and before anyone hears of the change (a
  socket event, a control answer): temp file, fsync, rename, fsync of the directory, so a
  crash leaves the previous chain or the new one, never a torn one;
- its first line holds the SHA-256 of the rest: a damaged file is refused with its name
  and the fix (`dashpay sandbox reset`), never silently replaced by a new chain; so is a
  chain without its database or a database without its chain;
- one sandbox daemon per directory: it holds an flock on ``sandbox.lock`` while it runs
  (released by the kernel however it ends), and reset refuses while it is held.

Directory layout (``dashpay.config.paths.state_dir()``): ``sandbox.sqlite3`` (+ SQLite's
``-wal``/``-shm``), ``sandbox-chain.json``, ``sandbox.lock``, ``sandbox-wallet.txt`` (the
account key, kept by reset: the same addresses come again from index 0) and
``control.sock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dashpay.config import paths
from dashpay.domain.errors import Conflict, Unavailable

if TYPE_CHECKING:  # `dashpay sandbox reset` does without trio (~0.25 s to import)
    from dashpay.sandbox.network import SandboxNetwork

CHAIN_FILE_NAME = "sandbox-chain.json"
LOCK_FILE_NAME = "sandbox.lock"
CHAIN_FORMAT = "dashpay-sandbox-chain"
CHAIN_FORMAT_VERSION = 1
# SQLite's companions of the database file: write-ahead log, shared memory, rollback.
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")
RESET_HINT = "`dashpay sandbox reset` starts the sandbox over (it deletes its chain and database)"


class SandboxStateError(Conflict):
    """The sandbox's state directory cannot be used as it is; the message says why and
    what to do."""


@dataclass(frozen=True, slots=True)
class SandboxState:
    directory: Path

    @property
    def chain_file(self) -> Path:
        return self.directory / CHAIN_FILE_NAME

    @property
    def database(self) -> Path:
        return self.directory / paths.SANDBOX_DB_NAME

    @property
    def lock_file(self) -> Path:
        return self.directory / LOCK_FILE_NAME

    def database_files(self) -> list[Path]:
        return [self.database.with_name(self.database.name + s) for s in SQLITE_SUFFIXES]


# -- the lock ---------------------------------------------------------------------------


class StateLock:
    """An flock on the state's lock file, held until ``release`` (or the process ends)."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def lock_state(state: SandboxState) -> StateLock:
    """Take the state directory for this process; SandboxStateError if a sandbox daemon
    already has it."""
    fd = os.open(state.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        pid = f" (pid {holder})" if holder.isdigit() else ""
        raise SandboxStateError(
            f"a sandbox daemon{pid} is running on {state.directory}; stop it first"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return StateLock(fd)


# -- the chain file ---------------------------------------------------------------------


def save_chain(path: Path, snapshot: dict[str, Any]) -> None:
    """Write ``snapshot`` (``SandboxNetwork.snapshot()``) durably and atomically.
    Unavailable (naming the file) when the disk refuses."""
    body = json.dumps(snapshot, separators=(",", ":")).encode()
    header = {
        "format": CHAIN_FORMAT,
        "version": CHAIN_FORMAT_VERSION,
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(json.dumps(header).encode() + b"\n" + body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        raise Unavailable(
            f"{path}: could not save the sandbox chain: {exc.strerror or exc}"
        ) from exc


def read_chain(path: Path) -> Any:
    """The snapshot in a chain file; ValueError says how the file is damaged."""
    header_line, newline, body = path.read_bytes().partition(b"\n")
    if not newline:
        raise ValueError("it has no header line")
    header = json.loads(header_line)
    if not isinstance(header, dict) or header.get("format") != CHAIN_FORMAT:
        raise ValueError("it is not a dashpay sandbox chain file")
    if header.get("version") != CHAIN_FORMAT_VERSION:
        raise ValueError(
            f"its format version is {header.get('version')!r}; this dashpay reads "
            f"version {CHAIN_FORMAT_VERSION}"
        )
    if hashlib.sha256(body).hexdigest() != header.get("sha256"):
        raise ValueError("its checksum does not match: the file was cut short or changed")
    return json.loads(body)


def open_network(state: SandboxState, **options: Any) -> SandboxNetwork:
    """The network kept in ``state``, saving every change to its chain file; a new
    sandbox gets a new chain, saved before its database is created. SandboxStateError
    (naming the file and the fix) for a damaged file or a chain without its database,
    or the other way round. ``options`` go to SandboxNetwork (``lock_delay``)."""
    from dashpay.sandbox.network import SandboxNetwork

    chain_file = state.chain_file

    def persist(snapshot: dict[str, Any]) -> None:
        save_chain(chain_file, snapshot)

    database = state.database
    try:
        snapshot = read_chain(chain_file)
    except FileNotFoundError:
        if database.exists():
            raise SandboxStateError(
                f"{database} exists but the sandbox chain it was paid on ({chain_file}) does "
                "not (a sandbox from before dashpay kept its chain, or a deleted file): its "
                f"payments would be reverted; {RESET_HINT}"
            ) from None
        network = SandboxNetwork(persist=persist, **options)
        persist(network.snapshot())
        return network
    except OSError as exc:
        raise SandboxStateError(
            f"{chain_file}: cannot read the sandbox chain ({exc.strerror or exc})"
        ) from exc
    except ValueError as exc:
        raise SandboxStateError(f"{chain_file} is damaged: {exc}; {RESET_HINT}") from exc
    try:
        network = SandboxNetwork.restore(snapshot, persist=persist, **options)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise SandboxStateError(
            f"{chain_file} is damaged: it does not describe one sandbox chain ({exc}); "
            f"{RESET_HINT}"
        ) from exc
    payments = network.chain.payment_count
    if payments and not database.exists():
        raise SandboxStateError(
            f"{chain_file} holds {payments} payment(s) but the sandbox database {database} "
            "is missing: new receivers would be paid by them at once; " + RESET_HINT
        )
    return network


# -- reset ------------------------------------------------------------------------------


def reset_state(state: SandboxState) -> list[Path]:
    """Delete the chain file and the database (refused while a sandbox daemon runs on
    ``state``); the files deleted. The wallet key stays."""
    if not state.directory.is_dir():
        return []
    lock = lock_state(state)
    try:
        removed = []
        for path in (state.chain_file, *state.database_files()):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
        with contextlib.suppress(FileNotFoundError):
            state.chain_file.with_name(state.chain_file.name + ".tmp").unlink()
        return removed
    finally:
        lock.release()
