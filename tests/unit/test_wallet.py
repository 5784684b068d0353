"""dashpay.wallet: key import, derivation against the vectors in docs/dash-keys.md,
address validation, and the promise that importing the module does not load bip-utils.

Keys for the negative cases are built with bip-utils' own base58 (not ours), so the
tests do not trust the code they check.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
from bip_utils import (
    Base58Decoder,
    Base58Encoder,
    Bip32KeyNetVersions,
    Bip32Secp256k1,
    Hash160,
    P2PKHAddrEncoder,
    P2SHAddrEncoder,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from dashpay.domain.wallet import (
    NETWORKS,
    AddressError,
    ExtendedPublicKey,
    Wallet,
    WalletKeyError,
    derive_address,
    generate_account_key,
    parse_extended_public_key,
    validate_address,
)
from tests.conftest import REPO, VECTOR_XPUB, VECTOR_XPUB_ADDRESSES

# Legacy Dash Core keys (dash-keys.md): their addresses sit at <key>/i, not <key>/0/i.
DRKV_MAINNET = (
    "drkvjJe5sJgqomjLnk5GECkZ5qhnfU2T1zUQaLZCh6kVPKk2CNSanUSxaTL9QRwDrD1WaMgzEWCZbZEL3mhQh8sr"
    "YxLaGn7JDSofMWh1kJnk2yB"
)
DRKV_MAINNET_ADDRESSES = [
    "XnV2RDKcibaGN6fs5t6gbizqRCecCWS9Qr",
    "XxB84tnC2bj21hPazzm8sN6BWGirhyvyDH",
    "Xx1zAA2trZ5dzpdiLMFQ4mzYRSoXxbw1gf",
]
DRKV_TESTNET = (
    "DRKVrRjogj3bNiLD8UsktBH9SS9ihVNm1n7zxchfaFAP7ANmDM94J9e9Y99h6cMSipCvAXDcAdDvyxEgJqmnb3iva"
    "5CZq9Giwzd1eJ4Bwbd5MFed"
)
DRKV_TESTNET_ADDRESSES = [
    "yZYmXREuHxLmcG7bEgh5LTabTaSU44HVNb",
    "yUXdLDraBDeV4nc6dmZvRJ88JAWb3LJfUo",
    "yg1JtW31LyrFrScc1NDKYwNSbTDCGq8yMD",
]

SEED = bytes(range(64))  # the seed the VECTOR_XPUB vector was made from (m/44'/5'/0')
VERSIONS = {
    "xpub": "0488b21e",
    "xprv": "0488ade4",
    "tpub": "043587cf",
    "tprv": "04358394",
    "drkv": "02fe52f8",
    "drkp": "02fe52cc",
    "DRKV": "3a8061a0",
    "DRKP": "3a805837",
}


def reversion(key: str, prefix: str) -> str:
    """The same key material under another label (bip-utils' base58, not ours)."""
    raw = Base58Decoder.CheckDecode(key)
    return Base58Encoder.CheckEncode(bytes.fromhex(VERSIONS[prefix]) + raw[4:])


def account_private_key(prefix: str) -> str:
    node = Bip32Secp256k1.FromSeed(
        SEED,
        Bip32KeyNetVersions(bytes.fromhex(VERSIONS["tpub"]), bytes.fromhex(VERSIONS["tprv"]))
        if prefix == "tprv"
        else None,
    ).DerivePath("m/44'/5'/0'")
    extended = node.PrivateKey().ToExtended()
    return extended if prefix in ("xprv", "tprv") else reversion(extended, prefix)


# -- vectors --------------------------------------------------------------------------


def test_bip44_xpub_derives_the_documented_mainnet_addresses():
    wallet = Wallet(VECTOR_XPUB, "mainnet")
    assert [wallet.address(i) for i in range(3)] == VECTOR_XPUB_ADDRESSES
    assert wallet.addresses(0, 3) == VECTOR_XPUB_ADDRESSES


def test_bip44_account_key_from_the_vector_seed_is_the_documented_xpub():
    node = Bip32Secp256k1.FromSeed(SEED).DerivePath("m/44'/5'/0'")
    assert node.PublicKey().ToExtended() == VECTOR_XPUB


@pytest.mark.parametrize(
    ("key", "network", "expected"),
    [
        (DRKV_MAINNET, "mainnet", DRKV_MAINNET_ADDRESSES),
        (DRKV_TESTNET, "testnet", DRKV_TESTNET_ADDRESSES),
    ],
    ids=["drkv-mainnet", "DRKV-testnet"],
)
def test_legacy_key_vectors_are_the_addresses_directly_below_the_key(key, network, expected):
    # The legacy vectors are <key>/i: the key itself plays the chain-key role, so with our
    # <key>/<chain>/<index> model they are derive_address(key, [i]), the same code path
    # Wallet uses (checked against Wallet in the next test).
    assert [derive_address(key, [i], network) for i in range(3)] == expected


@pytest.mark.parametrize(
    ("key", "network"),
    [
        (VECTOR_XPUB, "mainnet"),
        (VECTOR_XPUB, "testnet"),
        (DRKV_MAINNET, "mainnet"),
        (DRKV_TESTNET, "testnet"),
    ],
)
@pytest.mark.parametrize("chain", [0, 1, 7])
def test_wallet_address_is_the_key_chain_index_path(key, network, chain):
    wallet = Wallet(key, network, chain)
    for index in (0, 1, 2, 1000):
        assert wallet.address(index) == derive_address(key, [chain, index], network)


def test_wallet_addresses_match_an_independent_bip_utils_derivation():
    # Straight bip-utils with the re-versioned key: what the docs say the steps are.
    node = Bip32Secp256k1.FromExtendedKey(reversion(DRKV_TESTNET, "xpub")).ChildKey(1)
    expected = [
        P2PKHAddrEncoder.EncodeKey(
            node.ChildKey(i).PublicKey().RawCompressed().ToBytes(), net_ver=b"\x8c"
        )
        for i in range(5)
    ]
    assert Wallet(DRKV_TESTNET, "testnet", chain=1).addresses(0, 5) == expected


def test_the_network_not_the_prefix_picks_the_address_version_byte():
    mainnet = Wallet(VECTOR_XPUB, "mainnet").address(0)
    testnet = Wallet(VECTOR_XPUB, "testnet").address(0)
    assert mainnet.startswith("X") and testnet.startswith("y")
    # Same hash160, different version byte.
    assert Base58Decoder.CheckDecode(mainnet)[1:] == Base58Decoder.CheckDecode(testnet)[1:]


def test_every_public_label_of_the_same_key_derives_the_same_addresses():
    expected = Wallet(VECTOR_XPUB, "testnet").addresses(0, 3)
    for prefix in ("tpub", "DRKV"):
        assert Wallet(reversion(VECTOR_XPUB, prefix), "testnet").addresses(0, 3) == expected
    assert Wallet(reversion(VECTOR_XPUB, "drkv"), "mainnet").addresses(0, 3) == (
        Wallet(VECTOR_XPUB, "mainnet").addresses(0, 3)
    )


# -- parsing --------------------------------------------------------------------------


def test_parse_reports_the_fields_and_normalizes_to_xpub():
    key = parse_extended_public_key(reversion(VECTOR_XPUB, "DRKV"), "testnet")
    assert key.prefix == "DRKV"
    assert key.network_hint == "testnet"
    assert key.depth == 3
    assert key.child_number == 2**31  # m/44'/5'/0': the last step is hardened 0
    assert len(key.chain_code) == 32 and len(key.public_key) == 33
    assert key.public_key[0] in (2, 3)
    assert key.normalized() == VECTOR_XPUB


@pytest.mark.parametrize(
    ("prefix", "hint"),
    [("xpub", None), ("tpub", "testnet"), ("drkv", "mainnet"), ("DRKV", "testnet")],
)
def test_each_prefix_implies_its_network(prefix, hint):
    network = hint or "mainnet"
    key = parse_extended_public_key(reversion(VECTOR_XPUB, prefix), network)
    assert (key.prefix, key.network_hint) == (prefix, hint)


def test_leading_and_trailing_whitespace_is_ignored():
    key = parse_extended_public_key(f"  \t{VECTOR_XPUB}\n ", "mainnet")
    assert key.normalized() == VECTOR_XPUB
    assert Wallet(f" {VECTOR_XPUB} ", "mainnet").address(0) == VECTOR_XPUB_ADDRESSES[0]


@pytest.mark.parametrize("prefix", ["xprv", "tprv", "drkp", "DRKP"])
def test_private_keys_are_refused_with_a_watch_only_explanation(prefix):
    private = account_private_key(prefix)
    assert private.startswith(prefix)
    with pytest.raises(WalletKeyError) as excinfo:
        parse_extended_public_key(private, "testnet" if prefix in ("tprv", "DRKP") else "mainnet")
    message = str(excinfo.value)
    assert f"this is a private key ({prefix}...)" in message
    assert "watch-only" in message and "PUBLIC" in message
    assert private[8:] not in message  # the secret is not echoed


def test_private_key_data_under_a_public_label_is_refused():
    # Third-party tools swap the legacy labels: byte 45, not the label, decides.
    swapped = reversion(account_private_key("xprv"), "drkv")
    assert swapped.startswith("drkv")
    with pytest.raises(WalletKeyError, match="this is a private key"):
        parse_extended_public_key(swapped, "mainnet")


def test_public_key_data_under_a_private_label_is_accepted_as_public():
    swapped = reversion(DRKV_MAINNET, "drkp")
    key = parse_extended_public_key(swapped, "mainnet")
    assert (key.prefix, key.network_hint) == ("drkv", "mainnet")
    assert derive_address(key, [0], "mainnet") == DRKV_MAINNET_ADDRESSES[0]


def test_a_typo_fails_the_checksum_and_says_so():
    typo = VECTOR_XPUB[:50] + ("A" if VECTOR_XPUB[50] != "A" else "B") + VECTOR_XPUB[51:]
    with pytest.raises(WalletKeyError, match=r"checksum mismatch \(typo\?\)"):
        parse_extended_public_key(typo, "mainnet")


def test_a_non_base58_character_is_named_with_its_position():
    bad = VECTOR_XPUB[:10] + "0" + VECTOR_XPUB[11:]
    with pytest.raises(WalletKeyError, match="'0' at position 11 is not base58"):
        parse_extended_public_key(bad, "mainnet")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (VECTOR_XPUB_ADDRESSES[0], "size of an address"),
        (VECTOR_XPUB * 2, "paste only the key"),
        (Base58Encoder.CheckEncode(bytes.fromhex("04b24746") + bytes(74)), "unknown version"),
        (
            Base58Encoder.CheckEncode(bytes.fromhex("0488b21e") + bytes(41) + b"\x04" + bytes(32)),
            "neither a compressed public key",
        ),
    ],
    ids=["empty", "blank", "address", "too-long", "zpub-version", "bad-key-byte"],
)
def test_malformed_keys_are_refused_with_the_reason(text, reason):
    with pytest.raises(WalletKeyError, match=reason):
        parse_extended_public_key(text, "mainnet")


def test_an_invalid_point_is_refused_when_building_the_wallet():
    # 0x02 followed by 32 0xff bytes is not on secp256k1 (x >= p).
    bogus = Base58Encoder.CheckEncode(
        bytes.fromhex("0488b21e") + bytes([1]) + bytes(8) + bytes(32) + b"\x02" + b"\xff" * 32
    )
    key = parse_extended_public_key(bogus, "mainnet")
    with pytest.raises(WalletKeyError, match="not usable"):
        Wallet(key, "mainnet")


@pytest.mark.parametrize(
    ("key", "configured", "implied"),
    [
        (reversion(VECTOR_XPUB, "tpub"), "mainnet", "testnet"),
        (DRKV_TESTNET, "mainnet", "testnet"),
        (DRKV_MAINNET, "testnet", "mainnet"),
    ],
    ids=["tpub-on-mainnet", "DRKV-on-mainnet", "drkv-on-testnet"],
)
def test_a_prefix_for_the_other_network_is_a_configuration_error(key, configured, implied):
    with pytest.raises(WalletKeyError) as excinfo:
        parse_extended_public_key(key, configured)
    message = str(excinfo.value)
    assert f"is a {implied} key" in message
    assert f"configured for {configured}" in message
    assert f"set the wallet network to {implied}" in message


def test_wallet_rechecks_the_network_of_an_already_parsed_key():
    key = parse_extended_public_key(DRKV_TESTNET, "testnet")
    with pytest.raises(WalletKeyError, match="configured for mainnet"):
        Wallet(key, "mainnet")


def test_an_unknown_network_is_refused():
    with pytest.raises(WalletKeyError, match="mainnet' or 'testnet"):
        parse_extended_public_key(VECTOR_XPUB, "regtest")
    with pytest.raises(WalletKeyError):
        Wallet(VECTOR_XPUB, "livenet")
    with pytest.raises(AddressError):
        validate_address(VECTOR_XPUB_ADDRESSES[0], "MAINNET")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=150))
def test_any_text_either_parses_or_raises_wallet_key_error(text):
    try:
        key = parse_extended_public_key(text, "mainnet")
    except WalletKeyError:
        return
    assert isinstance(key, ExtendedPublicKey)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=4, max_value=len(VECTOR_XPUB) - 1), st.sampled_from("23456789abcdefg"))
def test_any_single_character_change_is_caught(position, char):
    if VECTOR_XPUB[position] == char:
        return
    changed = VECTOR_XPUB[:position] + char + VECTOR_XPUB[position + 1 :]
    with pytest.raises(WalletKeyError):
        parse_extended_public_key(changed, "mainnet")


# -- wallet ---------------------------------------------------------------------------


@pytest.mark.parametrize("index", [-1, 2**31, 2**32, True, 1.0, "0"])
def test_out_of_range_or_non_integer_indices_are_refused(index):
    wallet = Wallet(VECTOR_XPUB, "mainnet")
    with pytest.raises(WalletKeyError):
        wallet.address(index)


def test_the_last_non_hardened_index_derives():
    wallet = Wallet(VECTOR_XPUB, "mainnet")
    last = 2**31 - 1
    assert wallet.addresses(last, 1) == [wallet.address(last)]
    assert wallet.address(last) == derive_address(VECTOR_XPUB, [0, last], "mainnet")


@pytest.mark.parametrize(("start", "count"), [(-1, 1), (0, -1), (2**31 - 1, 2), (2**31, 0)])
def test_address_ranges_past_the_non_hardened_space_are_refused(start, count):
    with pytest.raises(WalletKeyError):
        Wallet(VECTOR_XPUB, "mainnet").addresses(start, count)


def test_addresses_with_zero_count_is_empty():
    assert Wallet(VECTOR_XPUB, "mainnet").addresses(5, 0) == []


@pytest.mark.parametrize("chain", [-1, 2**31, None])
def test_a_hardened_or_invalid_chain_is_refused(chain):
    with pytest.raises(WalletKeyError):
        Wallet(VECTOR_XPUB, "mainnet", chain)


def test_derive_address_refuses_hardened_path_steps():
    with pytest.raises(WalletKeyError, match="hardened"):
        derive_address(VECTOR_XPUB, [2**31], "mainnet")


def test_wallet_id_is_stable_and_depends_on_network_and_key_material_only():
    mainnet = Wallet(VECTOR_XPUB, "mainnet")
    key = parse_extended_public_key(VECTOR_XPUB, "mainnet")
    expected = hashlib.sha256(key.public_key + key.chain_code + b"mainnet").hexdigest()[:16]
    assert mainnet.wallet_id == expected
    assert Wallet(VECTOR_XPUB, "testnet").wallet_id != mainnet.wallet_id
    # The label is not key material: drkv of the same key is the same wallet.
    assert Wallet(reversion(VECTOR_XPUB, "drkv"), "mainnet").wallet_id == mainnet.wallet_id
    assert Wallet(VECTOR_XPUB, "mainnet", chain=1).wallet_id == mainnet.wallet_id


def test_fingerprint_is_the_bip32_fingerprint_of_the_key():
    wallet = Wallet(VECTOR_XPUB, "mainnet")
    pubkey = parse_extended_public_key(VECTOR_XPUB, "mainnet").public_key
    assert wallet.fingerprint == Hash160.QuickDigest(pubkey)[:4].hex()
    assert len(wallet.fingerprint) == 8
    child = Bip32Secp256k1.FromSeed(SEED).DerivePath("m/44'/5'/0'/0")
    assert bytes(child.ParentFingerPrint()).hex() == wallet.fingerprint


# -- addresses ------------------------------------------------------------------------


def test_derived_addresses_validate_on_their_network():
    for network in NETWORKS:
        for address in Wallet(VECTOR_XPUB, network).addresses(0, 5):
            assert validate_address(address, network) == address


def test_validate_address_strips_whitespace():
    assert validate_address(f"  {VECTOR_XPUB_ADDRESSES[0]}\n", "mainnet") == VECTOR_XPUB_ADDRESSES[0]


@pytest.mark.parametrize(("network", "version"), [("mainnet", b"\x10"), ("testnet", b"\x13")])
def test_p2sh_addresses_are_accepted(network, version):
    address = P2SHAddrEncoder.EncodeKey(
        parse_extended_public_key(VECTOR_XPUB, "mainnet").public_key, net_ver=version
    )
    assert address[0] in ("7" if network == "mainnet" else "89")
    assert validate_address(address, network) == address


def test_an_address_for_the_other_network_is_refused_both_ways():
    testnet_address = Wallet(VECTOR_XPUB, "testnet").address(0)
    with pytest.raises(AddressError, match="is for testnet but dashpay is configured for mainnet"):
        validate_address(testnet_address, "mainnet")
    with pytest.raises(AddressError, match="is for mainnet but dashpay is configured for testnet"):
        validate_address(VECTOR_XPUB_ADDRESSES[0], "testnet")


def test_an_address_typo_fails_the_checksum():
    address = VECTOR_XPUB_ADDRESSES[0]
    typo = address[:-1] + ("8" if address[-1] != "8" else "9")
    with pytest.raises(AddressError, match=r"checksum mismatch \(typo\?\)"):
        validate_address(typo, "mainnet")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("X" * 200, "paste only the address"),
        ("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", "not a Dash address"),  # bitcoin genesis
        ("XxFKyXX1ibFAn4s4VLVZodgBeciLWhu8oO", "not base58"),
        (Base58Encoder.CheckEncode(b"\x4c" + bytes(19)), "not a Dash address"),
        (VECTOR_XPUB, "a Dash address is 34"),
    ],
    ids=["empty", "too-long", "bitcoin", "bad-char", "short-hash", "xpub"],
)
def test_malformed_addresses_are_refused_with_the_reason(text, reason):
    with pytest.raises(AddressError, match=reason):
        validate_address(text, "mainnet")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_either_validates_or_raises_address_error(text):
    try:
        result = validate_address(text, "testnet")
    except AddressError:
        return
    assert result == text.strip()


# -- sandbox key ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("network", "prefix", "first"), [("testnet", "tpub", "y"), ("mainnet", "xpub", "X")]
)
def test_generated_account_key_is_a_public_bip44_account_key_that_derives(network, prefix, first):
    text = generate_account_key(network)
    assert text.startswith(prefix)
    key = parse_extended_public_key(text, network)
    assert key.depth == 3 and key.child_number == 2**31  # m/44'/coin'/0'
    address = Wallet(text, network).address(0)
    assert address.startswith(first)
    assert validate_address(address, network) == address
    # Independent decoder: the payload holds a compressed public key, not a private one.
    assert Base58Decoder.CheckDecode(text)[45] in (2, 3)


def test_generated_account_keys_are_fresh():
    assert generate_account_key() != generate_account_key()


# -- import cost ----------------------------------------------------------------------


def test_importing_the_module_does_not_import_bip_utils():
    code = "import sys, dashpay.domain.wallet; print('bip_utils' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
        check=True,
    )
    assert proc.stdout.strip() == "False"
    assert "dashpay.domain.wallet" in proc.stderr  # importtime really ran
    assert "bip_utils" not in proc.stderr


def test_a_network_mismatch_blames_the_option_that_named_the_network():
    from dashpay.domain.wallet import check_key_network, decode_extended_public_key

    key = decode_extended_public_key(reversion(VECTOR_XPUB, "tpub"))
    with pytest.raises(WalletKeyError) as info:
        check_key_network(key, "mainnet", network_flag="--network")
    assert "--network says mainnet" in str(info.value)
    assert "configured" not in str(info.value)
    check_key_network(key, "testnet", network_flag="--network")
