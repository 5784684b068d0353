"""API keys: the key format, its hash, the constant-time comparison, the checks of labels
and scopes (dashpay.domain.apikeys), and the service's memory (dashpay.services.apikeys)
over a repository that counts its reads."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest

from dashpay.api.commands import COMMANDS, SCOPES, command
from dashpay.api.params import parse_api_key_create
from dashpay.domain import apikeys
from dashpay.domain.apikeys import (
    ADMIN,
    RECEIVERS_READ,
    RECEIVERS_WRITE,
    SANDBOX,
    ApiKey,
    check_scopes,
    is_token,
    new_token,
    token_hash,
    token_prefix,
)
from dashpay.domain.errors import InvalidParams, NotFound, Unavailable
from dashpay.services.apikeys import ApiKeyService

# -- the key -----------------------------------------------------------------------------


def test_a_key_is_dp_and_the_base64url_of_32_random_bytes():
    raw = bytes(range(32))
    token = new_token(lambda n: raw[:n])
    assert token == "dp_" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert len(token) == 46 and re.fullmatch(r"dp_[A-Za-z0-9_-]{43}", token)
    assert base64.urlsafe_b64decode(token[3:] + "=") == raw
    assert is_token(token)


def test_fresh_keys_differ():
    assert len({new_token() for _ in range(100)}) == 100


def test_a_short_random_source_is_refused():
    with pytest.raises(ValueError, match="32 random bytes"):
        new_token(lambda n: b"x" * 16)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "dp_",
        "dp_" + "A" * 42,
        "dp_" + "A" * 44,
        "xx_" + "A" * 43,
        "dp_" + "A" * 42 + "=",
        "dp_" + "A" * 42 + "+",
        "dp_" + "A" * 42 + "é",
        "Bearer dp_" + "A" * 43,
        None,
        46,
    ],
)
def test_what_is_not_shaped_like_a_key(text):
    assert not is_token(text)


def test_the_stored_hash_is_the_sha256_of_the_key_text():
    token = new_token()
    assert token_hash(token) == hashlib.sha256(token.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", token_hash(token))
    assert token_prefix(token) == token[:11] and token_prefix(token).startswith("dp_")


@pytest.fixture
def compare_digest_calls(monkeypatch) -> list[tuple[bytes, bytes]]:
    """Every call of hmac.compare_digest while the test runs."""
    calls = []
    original = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


def test_hashes_are_compared_with_hmac_compare_digest(compare_digest_calls):
    assert apikeys.same_hash("a" * 64, "a" * 64)
    assert not apikeys.same_hash("a" * 64, "b" * 64)
    assert len(compare_digest_calls) == 2


async def test_authentication_compares_the_hash_in_constant_time(compare_digest_calls):
    keys = service(CountingRepo())
    _, token = await keys.create("shop1", [RECEIVERS_READ])
    assert await keys.authenticate(token) is not None
    digest = token_hash(token).encode()
    assert compare_digest_calls == [(digest, digest)]


# -- labels and scopes ----------------------------------------------------------------


def test_scopes_are_checked_against_the_table_and_count_once():
    assert check_scopes([RECEIVERS_READ, RECEIVERS_WRITE, RECEIVERS_READ]) == frozenset(
        {RECEIVERS_READ, RECEIVERS_WRITE}
    )
    with pytest.raises(InvalidParams) as refused:
        check_scopes(["receivers:reed"])
    assert "unknown scope 'receivers:reed'" in refused.value.message
    for scope in SCOPES:
        assert scope in refused.value.message
    for bad in (None, [], [7], "", {"admin": 1}):
        with pytest.raises(InvalidParams, match="valid scopes"):
            check_scopes(bad)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"scopes": [ADMIN]}, "label is required"),
        ({"label": "  ", "scopes": [ADMIN]}, "label is required"),
        ({"label": "a\nb", "scopes": [ADMIN]}, "control characters"),
        ({"label": "a" * 101, "scopes": [ADMIN]}, "at most 100"),
        ({"label": "shop1"}, "at least one scope"),
        ({"label": "shop1", "scopes": ["root"]}, "unknown scope"),
    ],
)
def test_apikey_create_parameters_are_refused_with_a_reason(params, message):
    with pytest.raises(InvalidParams, match=message):
        parse_api_key_create(params)


def test_every_command_declares_a_scope():
    for cmd in COMMANDS.values():
        assert cmd.scope in SCOPES, cmd.name
    for name in ("apikey.create", "apikey.list", "apikey.revoke"):
        assert COMMANDS[name].scope == ADMIN


def test_a_command_cannot_be_declared_without_a_known_scope():
    async def handler(s):  # pragma: no cover - never registered
        return {}

    with pytest.raises(TypeError):
        command("test.noscope", help="x", needs=None)(handler)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="not one of"):
        command("test.badscope", help="x", scope="everything", needs=None)(handler)
    assert "test.badscope" not in COMMANDS


def test_a_key_allows_exactly_its_scopes_until_revoked():
    key = ApiKey(1, "shop1", frozenset({RECEIVERS_READ}), "dp_abcdefgh", 0)
    assert key.allows(RECEIVERS_READ)
    assert not key.allows(RECEIVERS_WRITE)
    admin = ApiKey(2, "ops", frozenset({ADMIN}), "dp_abcdefgh", 0)
    assert not admin.allows(RECEIVERS_READ)  # admin is not a superset
    revoked = ApiKey(1, "shop1", frozenset({RECEIVERS_READ}), "dp_abcdefgh", 0, revoked_at=5)
    assert not revoked.allows(RECEIVERS_READ)


def test_the_key_view_never_holds_a_secret():
    view = apikeys.api_key_view(ApiKey(1, "s", frozenset({ADMIN}), "dp_abcdefgh", 0))
    assert set(view) == {
        "id", "label", "scopes", "prefix", "created_at", "revoked_at", "last_used_at"
    }  # fmt: skip
    assert view["created_at"] == "1970-01-01T00:00:00.000Z" and view["revoked_at"] is None


# -- the service's memory -----------------------------------------------------------


class CountingRepo:
    """An in-memory stand-in for the repository's API key units of work that counts
    the reads the service makes (the real repositories are proved by the contract
    tests and the integration tests)."""

    def __init__(self) -> None:
        self.rows: dict[int, tuple[ApiKey, str]] = {}
        self.finds = 0
        self.touched: list[list[tuple[int, int]]] = []
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise Unavailable("database down")

    def create_api_key(self, label, scopes, digest, prefix, created_at):
        self._check()
        key = ApiKey(len(self.rows) + 1, label, scopes, prefix, created_at)
        self.rows[key.id] = (key, digest)
        return key

    def find_api_key(self, digest):
        self._check()
        self.finds += 1
        return next(((k, d) for k, d in self.rows.values() if d == digest), None)

    def active_api_keys(self):
        self._check()
        return [(k, d) for k, d in self.rows.values() if k.revoked_at is None]

    def list_api_keys(self):
        self._check()
        return [k for k, _ in self.rows.values()]

    def revoke_api_key(self, key_id, now):
        self._check()
        if key_id not in self.rows:
            raise NotFound(f"no API key {key_id}")
        key, digest = self.rows[key_id]
        key = ApiKey(key.id, key.label, key.scopes, key.prefix, key.created_at, now)
        self.rows[key_id] = (key, digest)
        return key

    def touch_api_keys(self, used):
        self._check()
        self.touched.append(list(used))


def service(repo, **options) -> ApiKeyService:
    return ApiKeyService(repo, clock=lambda: 1000, **options)


async def test_a_known_key_is_authenticated_from_memory():
    repo = CountingRepo()
    keys = service(repo)
    key, token = await keys.create("shop1", [RECEIVERS_READ])
    repo.down = True  # a read now would fail
    assert await keys.authenticate(token) == key
    assert repo.finds == 0


async def test_a_key_another_daemon_made_is_found_once_then_remembered():
    repo = CountingRepo()
    key, token = await service(repo).create("shop1", [RECEIVERS_READ])
    other = service(repo)
    assert await other.authenticate(token) == key
    assert await other.authenticate(token) == key
    assert repo.finds == 1


async def test_wrong_malformed_and_revoked_keys_are_refused():
    repo = CountingRepo()
    keys = service(repo)
    key, token = await keys.create("shop1", [RECEIVERS_READ])
    assert await keys.authenticate(new_token()) is None
    assert await keys.authenticate("dp_short") is None
    assert await keys.authenticate("dp_" + token[3:].swapcase()) is None
    assert repo.finds == 2  # the malformed one never reached the database
    assert (await keys.revoke(key.id)).revoked_at == 1000
    assert await keys.authenticate(token) is None


async def test_a_revoked_key_is_not_brought_back_by_a_refresh_that_read_it_before():
    repo = CountingRepo()
    keys = service(repo)
    key, token = await keys.create("shop1", [RECEIVERS_READ])
    stale = repo.active_api_keys()
    await keys.revoke(key.id)
    repo.active_api_keys = lambda: stale  # read before the revocation committed
    await keys.refresh()
    assert await keys.authenticate(token) is None


async def test_a_key_revoked_through_another_daemon_fails_after_the_next_refresh():
    repo = CountingRepo()
    here, there = service(repo), service(repo)
    key, token = await here.create("shop1", [RECEIVERS_READ])
    assert await there.authenticate(token) == key
    await here.revoke(key.id)
    assert await there.authenticate(token) == key  # until its refresh
    await there.refresh()
    assert await there.authenticate(token) is None


async def test_last_uses_are_written_at_the_refresh_not_per_request():
    repo = CountingRepo()
    keys = service(repo)
    key, token = await keys.create("shop1", [RECEIVERS_READ])
    for _ in range(50):
        await keys.authenticate(token)
    assert repo.touched == []
    await keys.refresh()
    await keys.refresh()
    assert repo.touched == [[(key.id, 1000)]]


async def test_revoking_an_unknown_key_is_not_found():
    keys = service(CountingRepo())
    with pytest.raises(NotFound):
        await keys.revoke(9)


async def test_the_sandbox_scope_is_granted_only_by_a_sandbox_daemon():
    with pytest.raises(InvalidParams, match="serve --sandbox"):
        await service(CountingRepo()).create("t", [SANDBOX])
    key, _ = await service(CountingRepo(), sandbox=True).create("t", [SANDBOX])
    assert key.scopes == frozenset({SANDBOX})
