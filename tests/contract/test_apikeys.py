"""The API keys contract (dashpay.repository.apikeys), on SQLite and on MariaDB."""

from __future__ import annotations

import pytest

from dashpay.domain.apikeys import ADMIN, RECEIVERS_READ, RECEIVERS_WRITE, ApiKey
from dashpay.domain.errors import Conflict, InvalidParams, NotFound

T0 = 1_747_833_614_000
HASH_A = "a" * 64
HASH_B = "0123456789abcdef" * 4


def make(repo, label="shop1", scopes=(RECEIVERS_READ,), token_hash=HASH_A, at=T0):
    return repo.create_api_key(label, frozenset(scopes), token_hash, "dp_abcdefgh", at)


def test_created_key_reads_back_by_its_hash(repo):
    created = make(repo, scopes=(RECEIVERS_WRITE, RECEIVERS_READ))
    assert created == ApiKey(
        created.id, "shop1", frozenset({RECEIVERS_READ, RECEIVERS_WRITE}), "dp_abcdefgh", T0
    )
    assert repo.find_api_key(HASH_A) == (created, HASH_A)
    assert repo.find_api_key(HASH_B) is None


def test_only_the_hash_is_stored(store, repo):
    make(repo)
    columns = store.execute("SELECT label, scopes, token_hash, prefix FROM api_keys")
    assert columns == [("shop1", RECEIVERS_READ, HASH_A, "dp_abcdefgh")]


def test_keys_are_listed_oldest_first_with_revoked_ones(repo):
    first = make(repo, "one")
    second = make(repo, "two", (ADMIN,), HASH_B, T0 + 1)
    revoked = repo.revoke_api_key(first.id, T0 + 5)
    assert revoked.revoked_at == T0 + 5 and revoked.revoked
    assert repo.list_api_keys() == [revoked, second]
    assert repo.active_api_keys() == [(second, HASH_B)]
    assert repo.find_api_key(HASH_A) == (revoked, HASH_A)


def test_revoking_twice_keeps_the_first_time(repo):
    key = make(repo)
    repo.revoke_api_key(key.id, T0 + 5)
    assert repo.revoke_api_key(key.id, T0 + 9).revoked_at == T0 + 5


def test_revoking_an_unknown_key_is_not_found(repo):
    with pytest.raises(NotFound, match="no API key 42"):
        repo.revoke_api_key(42, T0)


def test_the_same_hash_cannot_be_stored_twice(repo):
    make(repo)
    with pytest.raises(Conflict):
        make(repo, "again")
    assert len(repo.list_api_keys()) == 1


def test_last_use_only_moves_forward(repo):
    key = make(repo)
    other = make(repo, "two", token_hash=HASH_B)
    repo.touch_api_keys([(key.id, T0 + 60_000), (other.id, T0 + 1), (999, T0)])
    repo.touch_api_keys([(key.id, T0 + 30_000)])
    used = {k.id: k.last_used_at for k in repo.list_api_keys()}
    assert used == {key.id: T0 + 60_000, other.id: T0 + 1}
    repo.touch_api_keys([])


@pytest.mark.parametrize(
    ("label", "scopes", "message"),
    [
        ("", (RECEIVERS_READ,), "label is required"),
        ("x" * 101, (RECEIVERS_READ,), "at most 100"),
        ("tab\there", (RECEIVERS_READ,), "control characters"),
        ("shop1", (), "at least one scope"),
    ],
)
def test_a_bad_key_is_refused_before_the_database(repo, label, scopes, message):
    with pytest.raises(InvalidParams, match=message):
        make(repo, label, scopes)
    assert repo.list_api_keys() == []


def test_a_label_of_100_characters_of_any_script_is_stored_whole(repo):
    label = "ключ" * 25
    make(repo, label)
    assert repo.list_api_keys()[0].label == label
