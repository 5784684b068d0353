"""Fixtures for the repository contract: every test runs against SQLite and against a
fresh MariaDB database (``DASHPAY_TEST_MYSQL_URL``, as printed by
``tests/mariadb-server url``).

The URL is parsed here with urllib on purpose: the contract must not depend on
``dashpay.config``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

from dashpay.repository.base import Repository


@dataclass(frozen=True, slots=True)
class MysqlTarget:
    host: str | None
    port: int
    user: str
    password: str | None
    database: str
    unix_socket: str | None

    @classmethod
    def from_url(cls, url: str) -> MysqlTarget:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        return cls(
            host=parts.hostname,
            port=parts.port or 3306,
            user=unquote(parts.username or ""),
            password=unquote(parts.password) if parts.password is not None else None,
            database=unquote(parts.path.lstrip("/")),
            unix_socket=query.get("unix_socket"),
        )

    def connect(self) -> Any:
        """A plain PyMySQL connection (autocommit) to poke at the database directly."""
        import pymysql

        return pymysql.connect(
            host=self.host or "localhost",
            port=self.port,
            user=self.user,
            password=self.password or "",
            database=self.database,
            unix_socket=self.unix_socket,
            charset="utf8mb4",
            autocommit=True,
        )


@dataclass
class Store:
    """One test database and the way to open repositories on it (several instances on
    one database model several processes)."""

    backend: str
    sqlite_path: Path | None = None
    mysql: MysqlTarget | None = None
    opened: list[Repository] = field(default_factory=list)

    def open(self, **options: Any) -> Repository:
        if self.backend == "sqlite":
            from dashpay.repository.sqlite import SqliteRepository

            assert self.sqlite_path is not None
            repo: Repository = SqliteRepository(self.sqlite_path)
        else:
            from dashpay.repository.mysql import MysqlRepository

            assert self.mysql is not None
            target = self.mysql
            repo = MysqlRepository(
                host=target.host,
                port=target.port,
                user=target.user,
                password=target.password,
                database=target.database,
                unix_socket=target.unix_socket,
                **options,
            )
        self.opened.append(repo)
        return repo

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement outside the repository (``?`` placeholders) and commit."""
        if self.backend == "sqlite":
            conn = sqlite3.connect(self.sqlite_path)
            try:
                rows = conn.execute(sql, params).fetchall()
                conn.commit()
                return rows
            finally:
                conn.close()
        assert self.mysql is not None
        conn = self.mysql.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.replace("?", "%s"), params or None)
                return list(cur.fetchall())
        finally:
            conn.close()


@pytest.fixture
def mysql_target(mysql_database_url: str) -> MysqlTarget:
    """A fresh, empty MariaDB database (created and dropped by tests/conftest.py)."""
    return MysqlTarget.from_url(mysql_database_url)


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        spec = Store("sqlite", sqlite_path=tmp_path / "state" / "dashpay.sqlite3")
    else:
        spec = Store("mysql", mysql=request.getfixturevalue("mysql_target"))
    yield spec
    for repo in spec.opened:
        repo.close()


@pytest.fixture
def repo(store: Store) -> Repository:
    """A migrated repository on a fresh database."""
    repository = store.open()
    repository.migrate()
    return repository


def fake_address(wallet_id: str, chain: int) -> Callable[[int], str]:
    """A deterministic stand-in for HD derivation: unique per (wallet, chain, index) and
    shaped like a Dash address (34 characters)."""

    def derive(index: int) -> str:
        return f"X{wallet_id[:8]:<8}{chain:02d}{index:023d}"

    return derive
