"""`dashpay apikey create/list/revoke` end to end: real `dashpay serve` subprocess, real
CLI subprocesses, both database backends; and the service on the real repositories."""

from __future__ import annotations

import re

import trio

from dashpay.domain.apikeys import SCOPES, token_hash
from dashpay.services.apikeys import ApiKeyService
from tests.conftest import run_cli

KEY = re.compile(r"dp_[A-Za-z0-9_-]{43}")


def test_create_list_revoke_round_trip(daemon):
    made = daemon.cli(
        "apikey", "create", "--label", "shop1", "--scope", "receivers:write",
        "--scope", "receivers:read",
    )  # fmt: skip
    assert made.code == 0, made.stderr
    key = made.stdout.strip()
    assert KEY.fullmatch(key), made.stdout  # the key alone on stdout
    assert "not shown again" in made.stderr and key not in made.stderr

    as_json = daemon.cli("apikey", "create", "--label", "ops", "--scope", "admin", "--json")
    assert as_json.code == 0, as_json.stderr
    answer = as_json.json()
    assert set(answer) == {"id", "label", "scopes", "key"}
    assert answer["label"] == "ops" and answer["scopes"] == ["admin"]
    assert KEY.fullmatch(answer["key"]) and answer["key"] != key

    listed = daemon.cli("apikey", "list", "--json")
    assert listed.code == 0, listed.stderr
    keys = listed.json()["api_keys"]
    assert [k["label"] for k in keys] == ["shop1", "ops"]
    first = keys[0]
    assert first["scopes"] == ["receivers:read", "receivers:write"]
    assert first["prefix"] == key[:11] and first["revoked_at"] is None
    assert first["created_at"].endswith("Z")
    human = daemon.cli("apikey", "list")
    for text in (listed.stdout, human.stdout):
        # Never the key, never its hash.
        assert key not in text and answer["key"] not in text
        assert token_hash(key) not in text and token_hash(answer["key"]) not in text
    assert "shop1" in human.stdout and key[:11] in human.stdout

    revoked = daemon.cli("apikey", "revoke", str(first["id"]))
    assert revoked.code == 0, revoked.stderr
    assert f"api key {first['id']} (shop1) revoked" in revoked.stdout
    after = daemon.cli("apikey", "list", "--json").json()["api_keys"]
    assert after[0]["revoked_at"] is not None and after[1]["revoked_at"] is None
    assert daemon.cli("apikey", "revoke", "99").code == 4


def test_a_bad_scope_or_label_is_refused_with_exit_2(daemon):
    bad = daemon.cli("apikey", "create", "--label", "x", "--scope", "receivers:reed")
    assert bad.code == 2
    assert "unknown scope 'receivers:reed'" in bad.stderr
    for scope in SCOPES:
        assert scope in bad.stderr
    missing = daemon.cli("apikey", "create", "--label", "x")
    assert missing.code == 2 and "at least one scope" in missing.stderr
    sandbox = daemon.cli("apikey", "create", "--label", "x", "--scope", "sandbox")
    assert sandbox.code == 2 and "serve --sandbox" in sandbox.stderr
    label = daemon.cli("apikey", "create", "--label", "x" * 101, "--scope", "admin")
    assert label.code == 2 and "at most 100" in label.stderr
    assert daemon.cli("apikey", "list", "--json").json() == {"api_keys": []}


def test_a_bad_scope_is_refused_even_with_no_daemon(short_tmp):
    socket = str(short_tmp / "none.sock")
    bad = run_cli("--socket", socket, "apikey", "create", "--label", "x", "--scope", "root")
    assert bad.code == 2 and "valid scopes" in bad.stderr


async def test_the_service_on_a_real_database(outbox_repo):
    """authenticate / revoke / refresh on SQLite and MariaDB: a known key never reads
    the database, a revoked one fails at once here and after a refresh elsewhere."""
    here = ApiKeyService(outbox_repo)
    there = ApiKeyService(outbox_repo)
    key, token = await here.create("shop1", ["receivers:read"])
    assert await there.authenticate(token) == key  # found by its hash
    await here.revoke(key.id)
    assert await here.authenticate(token) is None
    assert await there.authenticate(token) == key  # from its memory, until...
    await there.refresh()
    assert await there.authenticate(token) is None
    other, other_token = await here.create("shop2", ["admin"])
    await here.authenticate(other_token)
    await here.refresh()  # writes the last use
    listed = {k.id: k for k in await trio.to_thread.run_sync(outbox_repo.list_api_keys)}
    assert listed[other.id].last_used_at is not None and listed[key.id].revoked_at is not None
