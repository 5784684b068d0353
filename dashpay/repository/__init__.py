"""Open the configured store. Cheap to import: the backend module (and PyMySQL, for
MySQL) is imported only when a repository is opened."""

from __future__ import annotations

from typing import Any

from dashpay.repository.base import Repository

__all__ = ["Repository", "open_repository"]


def open_repository(db: Any) -> Repository:
    """A repository for ``db`` (a ``dashpay.config.DatabaseConfig``: ``backend`` is
    "sqlite" with ``path``, or "mysql" with host/port/user/password/database,
    ``unix_socket``, ``pool_size``, ``connect_timeout`` and a cluster's ``nodes``). Does
    not migrate.

    Raises ``Unavailable`` when the database cannot be opened or reached.
    """
    if db.backend == "sqlite":
        from dashpay.repository.sqlite import SqliteRepository

        if db.path is None:
            raise ValueError("a SQLite database config needs a path")
        return SqliteRepository(db.path)
    if db.backend == "mysql":
        from dashpay.repository.mysql import MysqlRepository

        return MysqlRepository(
            host=db.host,
            port=db.port,
            user=db.user,
            password=db.password,
            database=db.database,
            unix_socket=db.unix_socket,
            pool_size=db.pool_size,
            connect_timeout=db.connect_timeout,
            nodes=db.nodes,
        )
    raise ValueError(f"unknown database backend {db.backend!r}; expected sqlite or mysql")
