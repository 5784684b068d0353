"""Fill a migrated dashpay database with pending receivers, fast.

Creating a million receivers through the control socket would take longer than the
benchmarks themselves, so the rows are written directly, into the real schema (the
caller runs ``dashpay db migrate`` first): ``receivers`` rows as ``receiver.create``
writes them, and the wallet's ``hd_counters`` row moved past them, so receivers the
daemon creates later never collide.

Addresses are synthetic but valid testnet P2PKH addresses (a random hash160 under the
testnet version byte, deterministic from a seed): the daemon only uses them as keys,
and deriving a million real ones would take minutes. Receivers never expire (the
engine would otherwise spend the benchmark expiring them) and have no own callback
URL (the config's ``default_url`` applies).

SQLite databases are built once per size and schema in a cache directory and copied
for each run (a copy of a 1M-receiver file takes a second, seeding it ~20 s).
"""

from __future__ import annotations

import hashlib
import random
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks import harness
from benchmarks.harness import BenchError, mysql_connect
from dashpay.domain.wallet import b58encode_check

TESTNET_P2PKH = 0x8C
ROWS_PER_STATEMENT = 5_000  # MariaDB: ~600 kB per INSERT, far below max_allowed_packet
CACHE_DIR = Path("/tmp/dashpay-bench-cache")
# Every seeded receiver asks for this much (1 DASH); benchmarks pay exactly it.
AMOUNT_DUFFS = 100_000_000

_COLUMNS = (
    "wallet_id",
    "chain",
    "hd_index",
    "address",
    "amount_duffs",
    "received_duffs",
    "status",
    "overpaid",
    "late",
    "created_at",
    "updated_at",
)


def synthetic_addresses(count: int, seed: int = 8) -> list[str]:
    rng = random.Random(seed)
    version = bytes([TESTNET_P2PKH])
    return [b58encode_check(version + rng.randbytes(20)) for _ in range(count)]


def _rows(wallet_id: str, chain: int, addresses: list[str]) -> list[tuple[Any, ...]]:
    now = time.time_ns() // 1_000_000
    return [
        (wallet_id, chain, index, address, AMOUNT_DUFFS, 0, "pending", 0, 0, now, now)
        for index, address in enumerate(addresses)
    ]


def _schema_key() -> str:
    digest = hashlib.sha256()
    migrations = harness.SOURCE / "dashpay" / "repository" / "migrations"
    for path in sorted(migrations.glob("*.sql")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def seed_sqlite(path: Path, wallet_id: str, count: int, *, chain: int = 0) -> None:
    """Add ``count`` pending receivers to the migrated SQLite database at ``path``
    (which must have no receivers yet), through a cached copy when one exists."""
    if count == 0:
        return
    cached = CACHE_DIR / f"{_schema_key()}-{wallet_id}-{chain}-{count}.sqlite3"
    if not cached.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        building = cached.with_suffix(".tmp")
        shutil.copyfile(path, building)
        _insert_sqlite(building, wallet_id, chain, synthetic_addresses(count))
        building.replace(cached)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(cached, path)


def _insert_sqlite(path: Path, wallet_id: str, chain: int, addresses: list[str]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        if conn.execute("SELECT COUNT(*) FROM receivers").fetchone()[0]:
            raise BenchError(f"{path} already has receivers; seed an empty database")
        conn.execute("PRAGMA journal_mode=DELETE")  # one self-contained file to copy
        conn.execute("BEGIN")
        marks = ", ".join("?" * len(_COLUMNS))
        conn.executemany(
            f"INSERT INTO receivers ({', '.join(_COLUMNS)}) VALUES ({marks})",
            _rows(wallet_id, chain, addresses),
        )
        _set_counter_sqlite(conn, wallet_id, chain, len(addresses))
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()


def _set_counter_sqlite(conn: sqlite3.Connection, wallet_id: str, chain: int, count: int) -> None:
    conn.execute("DELETE FROM hd_counters WHERE wallet_id = ? AND chain = ?", (wallet_id, chain))
    conn.execute(
        "INSERT INTO hd_counters (wallet_id, chain, next_index) VALUES (?, ?, ?)",
        (wallet_id, chain, count),
    )


def seed_mysql(database_url: str, wallet_id: str, count: int, *, chain: int = 0) -> None:
    """Add ``count`` pending receivers to a migrated MariaDB/MySQL database."""
    if count == 0:
        return
    parts = urlsplit(database_url)
    conn = mysql_connect(parts._replace(path="").geturl(), parts.path.strip("/"))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM receivers")
            if cur.fetchone()[0]:
                raise BenchError("the database already has receivers; seed an empty one")
            conn.begin()
            rows = _rows(wallet_id, chain, synthetic_addresses(count))
            marks = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
            for start in range(0, len(rows), ROWS_PER_STATEMENT):
                chunk = rows[start : start + ROWS_PER_STATEMENT]
                cur.execute(
                    f"INSERT INTO receivers ({', '.join(_COLUMNS)}) VALUES "
                    + ", ".join([marks] * len(chunk)),
                    [value for row in chunk for value in row],
                )
            cur.execute(
                "DELETE FROM hd_counters WHERE wallet_id = %s AND chain = %s", (wallet_id, chain)
            )
            cur.execute(
                "INSERT INTO hd_counters (wallet_id, chain, next_index) VALUES (%s, %s, %s)",
                (wallet_id, chain, count),
            )
            conn.commit()
            cur.execute("ANALYZE TABLE receivers")
            cur.fetchall()
    finally:
        conn.close()


def seed(database_url: str, wallet_id: str, count: int) -> None:
    """Seed a migrated database given by its dashpay URL."""
    if database_url.startswith("sqlite:"):
        seed_sqlite(Path(database_url.removeprefix("sqlite:///")), wallet_id, count)
    else:
        seed_mysql(database_url, wallet_id, count)


def receivers_to_pay(database_url: str, count: int) -> list[tuple[int, str]]:
    """The first ``count`` receivers, (receiver_id, address), oldest first."""
    sql = f"SELECT receiver_id, address FROM receivers ORDER BY receiver_id LIMIT {int(count)}"
    if database_url.startswith("sqlite:"):
        path = database_url.removeprefix("sqlite:///")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return [(int(r), str(a)) for r, a in conn.execute(sql).fetchall()]
        finally:
            conn.close()
    parts = urlsplit(database_url)
    conn = mysql_connect(parts._replace(path="").geturl(), parts.path.strip("/"))
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return [(int(r), str(a)) for r, a in cur.fetchall()]
    finally:
        conn.close()


def prepare(config: Path, database_url: str, wallet_id: str, count: int) -> None:
    """Migrate the database with `dashpay db migrate`, then seed ``count`` receivers."""
    from benchmarks.harness import run_cli

    run_cli(config, "db", "migrate")
    seed(database_url, wallet_id, count)
