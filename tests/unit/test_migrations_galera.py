"""Galera needs a primary key on every table (certification and parallel apply key on
it) and InnoDB everywhere (docs/operations.md): checked on every migration, both
dialects, so a new table cannot forget one."""

from __future__ import annotations

import re

import pytest

from dashpay.repository.schema import DIALECTS, load_migrations

_CREATE = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)\s*\((.*)\)(.*)", re.S | re.I)


def tables(dialect: str) -> list[tuple[str, str, str]]:
    found = []
    for migration in load_migrations(dialect):
        for statement in migration.statements:
            match = _CREATE.match(statement.strip())
            if match:
                found.append(match.groups())
    return found


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_table_has_a_primary_key(dialect):
    created = tables(dialect)
    assert {name for name, _, _ in created} >= {"receivers", "payments", "wallet_leases"}
    for name, body, _ in created:
        assert "PRIMARY KEY" in body.upper(), f"{dialect} table {name} has no primary key"


def test_every_mysql_table_is_innodb():
    for name, _, options in tables("mysql"):
        assert "ENGINE=InnoDB" in options, (
            f"table {name} is not InnoDB (Galera replicates InnoDB only)"
        )


def test_no_migration_locks_tables():
    for dialect in DIALECTS:
        for migration in load_migrations(dialect):
            for statement in migration.statements:
                assert "LOCK TABLES" not in statement.upper()
