"""Database URLs: parsing ``[database] url`` into a ``DatabaseConfig``, and showing it
without its password."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from dashpay.config.errors import ConfigError
from dashpay.config.keys import MAX_URL_CHARS, default
from dashpay.config.secrets import OfflineCheck, read_secret_file
from dashpay.config.text import close_matches, describe, quote, redact_url

# One daemon makes a handful of concurrent queries; MySQL's default max_connections is
# 151 and is shared with the merchant's other applications.
MAX_POOL_SIZE = 64
DEFAULT_POOL_SIZE = 4
# MySQL identifiers (database names) are at most 64 characters.
MAX_DATABASE_NAME_CHARS = 64
DEFAULT_MYSQL_PORT = 3306
# A Galera cluster of more nodes than this is not one a daemon should know each of.
MAX_NODES = 16


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    url: str = field(repr=False)  # as written; may hold a password (see display_url)
    backend: str  # "sqlite" | "mysql"
    path: Path | None = None  # sqlite: absolute path of the database file
    host: str | None = None
    port: int = DEFAULT_MYSQL_PORT
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    unix_socket: str | None = None
    pool_size: int = DEFAULT_POOL_SIZE
    connect_timeout: float = default("database", "connect_timeout")
    lease: float = default("database", "lease")  # seconds (MySQL/MariaDB ownership)
    # Every node of a cluster, in the order tried (host, port); () for one server,
    # which is host and port.
    nodes: tuple[tuple[str, int], ...] = ()

    def display_url(self) -> str:
        """The URL with any password replaced by "***" (safe to log and print)."""
        if self.backend == "sqlite" and self.path is not None:
            return f"sqlite:///{self.path}"
        return redact_url(self.url)


_MYSQL_SCHEMES = ("mysql", "mysql+pymysql", "mariadb", "mariadb+pymysql")
_SQLITE_SCHEMES = ("sqlite", "sqlite+pysqlite")
_MYSQL_QUERY_PARAMS = ("unix_socket", "pool_size")
_DATABASE_URL_HINT = (
    "use sqlite:////absolute/path.sqlite3, sqlite:///path/relative/to/config.sqlite3 "
    "or mysql://USER[:PASSWORD]@HOST[:PORT][,HOST2[:PORT]...]/DATABASE"
)


def parse_database_url(
    url: str,
    *,
    key: str = "database.url",
    base_dir: Path | None = None,
    password_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    offline: OfflineCheck | None = None,
) -> DatabaseConfig:
    """A SQLAlchemy-style database URL as a ``DatabaseConfig``.

    ``sqlite:////abs/path`` is absolute; ``sqlite:///rel/path`` is relative to
    ``base_dir`` (the config file's directory), else the current directory.
    ``mysql://user[:password]@host[:port]/db[?unix_socket=/path&pool_size=N]``, with
    ``mysql+pymysql://`` and ``mariadb://`` as synonyms; the nodes of a Galera
    cluster as ``host1[:port],host2[:port],...`` (``nodes``); user and password are
    percent-decoded. ``password_file`` (mysql only; may use $CREDENTIALS_DIRECTORY) is
    read and wins over a password in the URL (``offline``: see ``OfflineCheck``). Errors
    never show the password.
    """
    if not isinstance(url, str):
        raise ConfigError(
            f"expected a string, found {describe(url)}", key=key, hint=_DATABASE_URL_HINT
        )
    text = url.strip()
    if not text:
        raise ConfigError("is empty", key=key, hint=_DATABASE_URL_HINT)
    if len(text) > MAX_URL_CHARS:
        raise ConfigError(f"is longer than {MAX_URL_CHARS} characters", key=key)
    scheme, separator, rest = text.partition("://")
    scheme = scheme.lower()
    password_key = _sibling_key(key, "password_file")
    if not separator:
        raise ConfigError("is not a database URL (no '://')", key=key, hint=_DATABASE_URL_HINT)
    if any(ord(ch) <= 32 or ord(ch) == 127 for ch in text):
        raise ConfigError(
            "contains spaces or control characters",
            key=key,
            hint="percent-encode them (a space in a password is %20)",
        )
    if scheme in _SQLITE_SCHEMES:
        if password_file is not None:
            raise ConfigError(
                "applies only to MySQL/MariaDB; SQLite has no password",
                key=password_key,
                hint="remove password_file",
            )
        return _parse_sqlite_url(text, rest, key, base_dir)
    if scheme in _MYSQL_SCHEMES:
        config = _parse_mysql_url(text, key)
        if password_file is not None:
            _, password = read_secret_file(
                password_file, key=password_key, base_dir=base_dir, env=env, offline=offline
            )
            config = replace(config, password=password)
        return config
    suggestion = close_matches(scheme, _SQLITE_SCHEMES + _MYSQL_SCHEMES)
    hint = f"did you mean {suggestion[0]}://?" if suggestion else _DATABASE_URL_HINT
    raise ConfigError(
        f"unknown database type {quote(scheme)}; dashpay supports SQLite and MySQL/MariaDB",
        key=key,
        hint=hint,
    )


def _parse_sqlite_url(text: str, rest: str, key: str, base_dir: Path | None) -> DatabaseConfig:
    if "?" in rest:
        raise ConfigError(
            "SQLite URLs take no query parameters", key=key, hint="remove everything from '?'"
        )
    memory_hint = "give a file, e.g. sqlite:////var/lib/dashpay/dashpay.sqlite3"
    if rest in ("", "/", "/:memory:"):
        raise ConfigError(
            "an in-memory SQLite database would lose every receiver at restart",
            key=key,
            hint=memory_hint,
        )
    if not rest.startswith("/"):
        raise ConfigError(
            f"{quote(redact_url(text))} names a host; SQLite URLs have none",
            key=key,
            hint="use sqlite:////absolute/path (four slashes) or sqlite:///relative/path",
        )
    path = Path(rest[1:])
    if not path.is_absolute():
        path = (base_dir if base_dir is not None else Path.cwd()) / path
    return DatabaseConfig(url=text, backend="sqlite", path=path)


def _parse_mysql_url(text: str, key: str) -> DatabaseConfig:
    encode_hint = (
        "percent-encode special characters in the password (/ as %2F, ? as %3F, # as %23, @ as %40)"
    )
    scheme, _, rest = text.partition("://")
    authority, slash, after = rest.partition("/")
    userinfo, at, hostlist = authority.rpartition("@")
    nodes: tuple[tuple[str, int], ...] = ()
    if "," in hostlist:
        nodes = _parse_nodes(hostlist, key)
        text = f"{scheme}://{userinfo}{at}{hostlist.split(',', 1)[0]}{slash}{after}"
    config = _parse_one_mysql_url(text, key, encode_hint)
    if nodes:
        if config.unix_socket is not None:
            raise ConfigError(
                "names several hosts and a unix_socket",
                key=key,
                hint="a unix socket is one local server: remove ?unix_socket or the other hosts",
            )
        url = f"{scheme}://{userinfo}{at}{hostlist}{slash}{after}"
        config = replace(config, url=url, nodes=nodes)
    return config


def _parse_nodes(hostlist: str, key: str) -> tuple[tuple[str, int], ...]:
    """``h1[:port],h2[:port],...`` as (host, port) pairs: the nodes of a cluster."""
    items = hostlist.split(",")
    if len(items) > MAX_NODES:
        raise ConfigError(
            f"names {len(items)} hosts; at most {MAX_NODES}",
            key=key,
            hint="list the nodes this daemon should use (a few are enough to fail over)",
        )
    nodes: list[tuple[str, int]] = []
    for item in items:
        try:
            parts = urlsplit(f"//{item}")
            host, port = parts.hostname, parts.port
        except ValueError:
            host, port = None, None
        if not item or not host or port == 0:
            raise ConfigError(
                f"host {quote(item)} of the host list is not valid",
                key=key,
                hint="write HOST[:PORT],HOST[:PORT]/DATABASE, e.g. db1:3306,db2:3306/dashpay",
            )
        node = (host, port if port is not None else DEFAULT_MYSQL_PORT)
        if node in nodes:
            raise ConfigError(
                f"host {quote(item)} is listed twice", key=key, hint="list each node once"
            )
        nodes.append(node)
    return tuple(nodes)


def _parse_one_mysql_url(text: str, key: str, encode_hint: str) -> DatabaseConfig:
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ConfigError("is not a valid URL", key=key, hint=encode_hint) from None
    # A raw "/", "?" or "#" in the password ends the host part early, and the rest of the
    # password lands in the path, query or fragment: refuse without echoing any of it.
    if "@" not in parts.netloc and "@" in text.partition("://")[2]:
        raise ConfigError("cannot find the host in the URL", key=key, hint=encode_hint)
    if parts.fragment or text.endswith("#"):
        raise ConfigError("the URL contains '#'", key=key, hint=encode_hint)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user_text, colon, password_text = userinfo.partition(":")
    user = unquote(user_text) or None
    password = unquote(password_text) if colon and password_text else None
    try:
        host = parts.hostname
        port = parts.port
    except ValueError:
        raise ConfigError(
            "the host or port is not valid",
            key=key,
            hint=f"the port must be a number from 1 to 65535; {encode_hint}",
        ) from None
    if port == 0:
        raise ConfigError("port 0 is not valid", key=key, hint="give a port from 1 to 65535")
    database = unquote(parts.path.removeprefix("/"))
    if not database:
        raise ConfigError(
            "no database name",
            key=key,
            hint="end the URL with /DATABASE, e.g. mysql://dashpay@localhost/dashpay",
        )
    if "/" in database or len(database) > MAX_DATABASE_NAME_CHARS:
        raise ConfigError(
            f"database name {quote(database)} is not valid",
            key=key,
            hint=f"use at most {MAX_DATABASE_NAME_CHARS} characters and no '/'",
        )
    params = _parse_mysql_query(parts.query, key)
    unix_socket = params.get("unix_socket")
    if unix_socket is not None and not unix_socket.startswith("/"):
        raise ConfigError(
            f"unix_socket {quote(unix_socket)} must be an absolute path",
            key=key,
            hint="e.g. ?unix_socket=/run/mysqld/mysqld.sock",
        )
    pool_size = DEFAULT_POOL_SIZE
    if "pool_size" in params:
        raw = params["pool_size"]
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_POOL_SIZE:
            raise ConfigError(
                f"pool_size {quote(raw)} is not an integer from 1 to {MAX_POOL_SIZE}",
                key=key,
                hint=f"e.g. ?pool_size={DEFAULT_POOL_SIZE}",
            )
        pool_size = int(raw)
    if not user:
        raise ConfigError(
            "no user name", key=key, hint="write mysql://USER@HOST/DATABASE (or USER:PASSWORD@)"
        )
    if not host and unix_socket is None:
        raise ConfigError(
            "no host and no unix_socket",
            key=key,
            hint="write mysql://USER@HOST/DATABASE or add ?unix_socket=/run/mysqld/mysqld.sock",
        )
    return DatabaseConfig(
        url=text,
        backend="mysql",
        host=host or None,
        port=port if port is not None else DEFAULT_MYSQL_PORT,
        user=user,
        password=password,
        database=database,
        unix_socket=unix_socket,
        pool_size=pool_size,
    )


def _parse_mysql_query(query: str, key: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigError(
            "the query string (after '?') is malformed",
            key=key,
            hint="write ?name=value&name=value",
        ) from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name not in _MYSQL_QUERY_PARAMS:
            close = close_matches(name, _MYSQL_QUERY_PARAMS)
            hint = f"did you mean {close[0]}?" if close else None
            raise ConfigError(
                f"unknown URL parameter {quote(name)}; known: {', '.join(_MYSQL_QUERY_PARAMS)}",
                key=key,
                hint=hint,
            )
        if name in params:
            raise ConfigError(f"URL parameter {name} is given twice", key=key, hint="keep one")
        params[name] = value
    return params


def _sibling_key(key: str, name: str) -> str:
    section, dot, _ = key.rpartition(".")
    return f"{section}.{name}" if dot else name
