"""Extended public key import, receiving-address derivation and address validation.

dashpay is watch-only: it holds an account's extended PUBLIC key and derives one fresh
P2PKH address per receiver at ``<key>/<chain>/<index>``. This module is the single place
that knows the Dash key and address formats (see docs/dash-keys.md):

- The key text is decoded here with the stdlib (base58check over sha256), so a typo,
  a private key or a key for the other network gets an error that says what is wrong
  and how to fix it, instead of bip-utils' terse messages.
- Legacy Dash Core prefixes (``drkv``/``DRKV``) are read like ``xpub``/``tpub``; the
  configured network, never the key prefix, picks the address version byte.
- Public derivation (BIP32 CKDpub) is done here over coincurve (libsecp256k1), imported
  lazily: bip-utils, which uses the same library, costs ~220 ms and ~14 MB to import
  whatever part of it is asked for, and the daemon needs only this. bip-utils makes
  the sandbox's random key (private derivation from a seed) and is the tests' oracle.
- Importing this module costs only the stdlib: the CLI imports it to validate addresses
  and keys.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAINNET = "mainnet"
TESTNET = "testnet"
NETWORKS = (MAINNET, TESTNET)

# Address version bytes: the network decides (a key prefix like xpub is used on both).
P2PKH_VERSION = {MAINNET: 0x4C, TESTNET: 0x8C}  # addresses start with X / y
P2SH_VERSION = {MAINNET: 0x10, TESTNET: 0x13}  # addresses start with 7 / 8 or 9

# BIP32 serialisation: 4 version + 1 depth + 4 parent fingerprint + 4 child number
# + 32 chain code + 33 key data.
EXTENDED_KEY_SIZE = 78
_KEY_DATA_OFFSET = 45
# A base58check address is 1 version byte + 20-byte hash160 + 4-byte checksum.
ADDRESS_SIZE = 25
_CHECKSUM_SIZE = 4

# Text longer than these cannot be a key / an address (an extended key is 111 base58
# characters, an address 34). Refusing early keeps hostile input from costing
# quadratic big-integer work in the base58 decoder.
MAX_KEY_TEXT = 200
MAX_ADDRESS_TEXT = 64

# Non-hardened child numbers: hardened derivation (>= 2**31) needs the private key.
HARDENED_OFFSET = 2**31

# Version bytes -> (prefix, network the prefix implies or None for "either").
_PUBLIC_VERSIONS: dict[bytes, tuple[str, str | None]] = {
    bytes.fromhex("0488B21E"): ("xpub", None),
    bytes.fromhex("043587CF"): ("tpub", TESTNET),
    bytes.fromhex("02FE52F8"): ("drkv", MAINNET),
    bytes.fromhex("3A8061A0"): ("DRKV", TESTNET),
}
# Private versions -> (their label, the public version they pair with). Third-party
# tools swap the legacy labels, so byte 45 (not the label) decides public vs private.
_PRIVATE_VERSIONS: dict[bytes, tuple[str, bytes]] = {
    bytes.fromhex("0488ADE4"): ("xprv", bytes.fromhex("0488B21E")),
    bytes.fromhex("04358394"): ("tprv", bytes.fromhex("043587CF")),
    bytes.fromhex("02FE52CC"): ("drkp", bytes.fromhex("02FE52F8")),
    bytes.fromhex("3A805837"): ("DRKP", bytes.fromhex("3A8061A0")),
}
# What bip-utils' Bip32Secp256k1 expects by default.
_NORMALIZED_VERSION = bytes.fromhex("0488B21E")
# The usual public serialisation for a fresh key on each network.
_USUAL_PUBLIC_VERSION = {MAINNET: bytes.fromhex("0488B21E"), TESTNET: bytes.fromhex("043587CF")}
# BIP44 coin types (SLIP-44): Dash is 5; every testnet uses 1.
_BIP44_COIN_TYPE = {MAINNET: 5, TESTNET: 1}

_ACCEPTED = "xpub, tpub, drkv or DRKV"
_PUBLIC_KEY_HINT = (
    "export the account's extended PUBLIC key (xpub/tpub; in Electrum-Dash: "
    "Wallet > Information > Master Public Key)"
)


class WalletKeyError(ValueError):
    """The extended key or a derivation request is unusable; the message says how to fix it."""


class AddressError(ValueError):
    """A Dash address is malformed or for another network."""


# -- base58check (stdlib) -------------------------------------------------------------

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}


class _Base58Error(ValueError):
    pass


def _checksum(payload: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:_CHECKSUM_SIZE]


def b58decode_check(text: str) -> bytes:
    """Decode base58check text to its payload; raise _Base58Error with a plain reason."""
    number = 0
    for position, char in enumerate(text, 1):
        digit = _B58_INDEX.get(char)
        if digit is None:
            raise _Base58Error(
                f"character {char!r} at position {position} is not base58 "
                "(0, O, I and l never appear): check for a copy/paste mistake"
            )
        number = number * 58 + digit
    leading_zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    raw = b"\x00" * leading_zeros + body
    if len(raw) <= _CHECKSUM_SIZE:
        raise _Base58Error("too short to carry a checksum")
    payload, check = raw[:-_CHECKSUM_SIZE], raw[-_CHECKSUM_SIZE:]
    if _checksum(payload) != check:
        raise _Base58Error("checksum mismatch (typo?): copy it again from its source")
    return payload


def b58encode_check(payload: bytes) -> str:
    raw = payload + _checksum(payload)
    number = int.from_bytes(raw, "big")
    chars = []
    while number:
        number, digit = divmod(number, 58)
        chars.append(_B58_ALPHABET[digit])
    leading_zeros = len(raw) - len(raw.lstrip(b"\x00"))
    return "1" * leading_zeros + "".join(reversed(chars))


def _check_network(network: object, error: type[ValueError]) -> str:
    if network not in NETWORKS:
        raise error(f"network must be 'mainnet' or 'testnet', got {network!r}")
    return network  # type: ignore[return-value]


# -- extended public keys -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExtendedPublicKey:
    """A decoded BIP32 extended public key; ``prefix`` is the label it was given in."""

    prefix: str  # "xpub" | "tpub" | "drkv" | "DRKV"
    network_hint: str | None  # the network the prefix implies; None for xpub (either)
    depth: int
    parent_fingerprint: bytes
    child_number: int
    chain_code: bytes
    public_key: bytes  # 33-byte compressed secp256k1 point

    def serialize(self, version: bytes) -> str:
        """Base58check text of this key under the given 4 version bytes."""
        return b58encode_check(
            version
            + bytes([self.depth])
            + self.parent_fingerprint
            + self.child_number.to_bytes(4, "big")
            + self.chain_code
            + self.public_key
        )

    def normalized(self) -> str:
        """This key as an ``xpub`` (version 0488B21E), the form bip-utils accepts."""
        return self.serialize(_NORMALIZED_VERSION)


def parse_extended_public_key(
    text: str, network: str, *, network_flag: str | None = None
) -> ExtendedPublicKey:
    """Decode and check an extended public key for use on ``network``.

    Raises WalletKeyError for anything that is not a public key usable on that network:
    a typo (checksum), a truncated key, an unknown format, a private key, or a prefix
    that belongs to the other network. The point itself is checked by bip-utils when a
    Wallet is built from the key. A network mismatch blames the configured wallet
    network, or the command-line option ``network_flag`` when that named it.
    """
    _check_network(network, WalletKeyError)
    key = decode_extended_public_key(text)
    check_key_network(key, network, network_flag=network_flag)
    return key


def decode_extended_public_key(text: str) -> ExtendedPublicKey:
    """Decode an extended public key, whatever network it names (``network_hint``:
    tpub, drkv and DRKV name one, xpub either); WalletKeyError says what is wrong."""
    if not isinstance(text, str):
        raise WalletKeyError(f"extended public key must be text, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise WalletKeyError(f"extended public key is empty: {_PUBLIC_KEY_HINT}")
    if len(text) > MAX_KEY_TEXT:
        raise WalletKeyError(
            f"extended public key is {len(text)} characters; an xpub is 111: "
            "paste only the key (one line, no surrounding text)"
        )
    try:
        raw = b58decode_check(text)
    except _Base58Error as exc:
        raise WalletKeyError(f"extended public key {_abbrev(text)} is not valid: {exc}") from None
    if len(raw) != EXTENDED_KEY_SIZE:
        looks_like = (
            " (that is the size of an address, not of an extended key)"
            if len(raw) == ADDRESS_SIZE - _CHECKSUM_SIZE
            else ""
        )
        raise WalletKeyError(
            f"extended public key {_abbrev(text)} decodes to {len(raw)} bytes, not "
            f"{EXTENDED_KEY_SIZE}{looks_like}: {_PUBLIC_KEY_HINT}"
        )
    version, key_data = raw[:4], raw[_KEY_DATA_OFFSET:]
    if version not in _PUBLIC_VERSIONS and version not in _PRIVATE_VERSIONS:
        raise WalletKeyError(
            f"extended key {_abbrev(text)} has unknown version bytes {version.hex()}: "
            f"dashpay accepts {_ACCEPTED} keys (segwit ypub/zpub keys are Bitcoin-only)"
        )
    label = _PUBLIC_VERSIONS[version][0] if version in _PUBLIC_VERSIONS else None
    label = label or _PRIVATE_VERSIONS[version][0]
    if key_data[0] == 0x00:
        raise WalletKeyError(
            f"this is a private key ({label}...); dashpay is watch-only: "
            f"{_PUBLIC_KEY_HINT}, and never put a private key on the server"
        )
    if key_data[0] not in (0x02, 0x03):
        raise WalletKeyError(
            f"extended key {_abbrev(text)} holds neither a compressed public key nor a "
            f"private key (key byte {key_data[0]:#04x}): the key is damaged; "
            "export it again from your wallet"
        )
    if version in _PRIVATE_VERSIONS:
        # Public key data under a private label: some tools swap the legacy labels.
        version = _PRIVATE_VERSIONS[version][1]
    prefix, hint = _PUBLIC_VERSIONS[version]
    return ExtendedPublicKey(
        prefix=prefix,
        network_hint=hint,
        depth=raw[4],
        parent_fingerprint=raw[5:9],
        child_number=int.from_bytes(raw[9:13], "big"),
        chain_code=raw[13:45],
        public_key=key_data,
    )


def check_key_network(
    key: ExtendedPublicKey, network: str, *, network_flag: str | None = None
) -> None:
    """WalletKeyError when ``key``'s prefix names the other network than ``network``:
    the configured wallet network, or the command line's ``network_flag`` (then the
    message blames that option, not the configuration)."""
    hint = key.network_hint
    if hint is None or hint == network:
        return
    usual = "xpub" if network == MAINNET else "tpub"
    if network_flag is None:
        raise WalletKeyError(
            f"the key is a {hint} key ({key.prefix}...) but dashpay is configured for "
            f"{network}: set the wallet network to {hint}, or use your {network} "
            f"account key ({usual}...)"
        )
    raise WalletKeyError(
        f"the key is a {hint} key ({key.prefix}...) but {network_flag} says {network}: "
        f"pass {network_flag} {hint} or leave it out (the key names its network), or "
        f"give your {network} account key ({usual}...)"
    )


def network_warning(key: ExtendedPublicKey, network: str) -> str | None:
    """A caution for a key whose prefix does not settle its network, else None.

    ``xpub`` is the usual mainnet prefix, but some wallets export testnet accounts with
    it too, so an ``xpub`` with testnet is allowed; a mainnet key used on testnet would
    hand out addresses no wallet of the user watches, so it is worth saying."""
    if key.network_hint is None and network == TESTNET:
        return (
            f"the key is an {key.prefix} key, the usual mainnet prefix, but the network "
            "is testnet: if it is a mainnet key, every address would be wrong; compare "
            "`dashpay wallet derive --count 5` with your wallet's testnet receiving "
            "addresses (y...) before going live"
        )
    return None


def _abbrev(text: str) -> str:
    """Enough of a key to recognise it in a message, not the whole thing."""
    return repr(text if len(text) <= 16 else f"{text[:8]}...{text[-4:]}")


# -- derivation (coincurve, imported lazily) -----------------------------------------


def _check_child_index(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WalletKeyError(f"{what} must be an integer, got {type(value).__name__}")
    if not 0 <= value < HARDENED_OFFSET:
        raise WalletKeyError(
            f"{what} must be from 0 to {HARDENED_OFFSET - 1} (hardened derivation needs "
            f"the private key), got {value}"
        )
    return value


class _Node:
    """A public BIP32 node: its point (a coincurve PublicKey), compressed bytes, chain
    code and depth. Public derivation (CKDpub) is a HMAC-SHA512 and one point addition
    done here over coincurve (libsecp256k1), the library bip-utils itself uses for
    secp256k1: importing bip-utils for it would add ~14 MB to the daemon's memory and
    ~220 ms to its start (every bip-utils submodule imports the whole package)."""

    __slots__ = ("point", "public_key", "chain_code", "depth")

    def __init__(self, point: Any, chain_code: bytes, depth: int) -> None:
        self.point = point
        self.public_key: bytes = point.format(compressed=True)
        self.chain_code = chain_code
        self.depth = depth


def _hash160(data: bytes) -> bytes:
    digest = hashlib.sha256(data).digest()
    try:
        return hashlib.new("ripemd160", digest).digest()
    except ValueError:  # an OpenSSL without its legacy provider: bip-utils has its own
        from bip_utils import Ripemd160

        return Ripemd160.QuickDigest(digest)


def _bip32_from(key: ExtendedPublicKey) -> _Node:
    """The key's node, its point checked (as ``Bip32Secp256k1.FromExtendedKey`` does)."""
    from coincurve import PublicKey

    if key.depth == 0 and (key.parent_fingerprint != bytes(4) or key.child_number != 0):
        what = "fingerprint" if key.parent_fingerprint != bytes(4) else "child index"
        problem = f"Invalid extended master key (wrong {what})"
    else:
        try:
            return _Node(PublicKey(key.public_key), key.chain_code, key.depth)
        except (ValueError, TypeError) as exc:
            problem = f"invalid public key ({exc})"
    raise WalletKeyError(
        f"extended public key is not usable: {problem}; export the key again from your wallet"
    )


def _child(node: _Node, index: int) -> _Node:
    """CKDpub (BIP32): child ``index`` (not hardened) of a public node."""
    point, chain_code = _child_point(node, index)
    return _Node(point, chain_code, node.depth + 1)


_ZERO_TWEAK = bytes(32)


def _child_point(node: _Node, index: int) -> tuple[Any, bytes]:
    """CKDpub's point (``point + IL*G``) and chain code of child ``index``.

    ``IL*G`` is libsecp256k1's multiplication of the generator (its precomputed table:
    about half the cost of adding a tweak to an arbitrary point, which walks a table
    built for that point on every call), then one point addition. ``from_secret``
    refuses ``IL >= n`` and ``combine_keys`` the point at infinity: the children BIP32
    says to skip (odds ~2**-127)."""
    digest = hmac.digest(node.chain_code, node.public_key + index.to_bytes(4, "big"), "sha512")
    tweak = digest[:32]
    try:
        # A key already at depth 255 cannot have children.
        if node.depth >= 255:
            raise ValueError("the key is at depth 255, the deepest BIP32 allows")
        if tweak == _ZERO_TWEAK:  # valid in BIP32, refused by from_secret: the parent's point
            return node.point, digest[32:]
        public_key = _public_key_class()
        point = public_key.combine_keys([node.point, public_key.from_secret(tweak)])
    except ValueError as exc:
        raise WalletKeyError(f"cannot derive child {index}: {exc}") from None
    return point, digest[32:]


_PUBLIC_KEY: Any = None


def _public_key_class() -> Any:
    """coincurve's ``PublicKey``, imported at the first derivation."""
    global _PUBLIC_KEY
    if _PUBLIC_KEY is None:
        from coincurve import PublicKey

        _PUBLIC_KEY = PublicKey
    return _PUBLIC_KEY


def _p2pkh(node: _Node, network: str) -> str:
    return _p2pkh_of(node.public_key, network)


def _p2pkh_of(public_key: bytes, network: str) -> str:
    return b58encode_check(bytes([P2PKH_VERSION[network]]) + _hash160(public_key))


def _child_address(node: _Node, index: int, network: str) -> str:
    """The P2PKH address of child ``index`` of ``node`` (no node built for it)."""
    point, _ = _child_point(node, index)
    return _p2pkh_of(point.format(compressed=True), network)


def derive_address(key: ExtendedPublicKey | str, path: Sequence[int], network: str) -> str:
    """The P2PKH address of ``<key>/path[0]/path[1]/...`` on ``network`` (uncached).

    For one-off checks, such as legacy Dash Core keys whose addresses sit directly at
    ``<key>/i``. Receivers use ``Wallet``, which caches the chain key.
    """
    _check_network(network, WalletKeyError)
    if isinstance(key, str):
        key = parse_extended_public_key(key, network)
    indices = [_check_child_index(i, "path index") for i in path]
    node = _bip32_from(key)
    for index in indices:
        node = _child(node, index)
    return _p2pkh(node, network)


class Wallet:
    """Receiving addresses ``<key>/<chain>/<index>`` of one account key on one network."""

    __slots__ = ("network", "chain", "key", "wallet_id", "fingerprint", "_chain_node")

    def __init__(self, key: ExtendedPublicKey | str, network: str, chain: int = 0) -> None:
        _check_network(network, WalletKeyError)
        if isinstance(key, str):
            key = parse_extended_public_key(key, network)
        elif not isinstance(key, ExtendedPublicKey):
            raise WalletKeyError(
                f"key must be an extended public key or its text, got {type(key).__name__}"
            )
        else:
            check_key_network(key, network)
        self.network = network
        self.chain = _check_child_index(chain, "chain")
        self.key = key
        self.wallet_id = hashlib.sha256(
            key.public_key + key.chain_code + network.encode()
        ).hexdigest()[:16]
        root = _bip32_from(key)  # validates the point
        self.fingerprint = _hash160(root.public_key)[:4].hex()
        # Cached once: each address then costs one public derivation (~40 µs).
        self._chain_node = _child(root, self.chain)

    def address(self, index: int) -> str:
        """The P2PKH address at ``<key>/<chain>/<index>``."""
        _check_child_index(index, "address index")
        return _child_address(self._chain_node, index, self.network)

    def addresses(self, start: int, count: int) -> list[str]:
        """``count`` consecutive addresses from ``start``."""
        _check_child_index(start, "start index")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise WalletKeyError(f"count must be a non-negative integer, got {count!r}")
        if start + count > HARDENED_OFFSET:
            raise WalletKeyError(
                f"start + count must not exceed {HARDENED_OFFSET} (the last non-hardened "
                f"index is {HARDENED_OFFSET - 1}), got {start} + {count}"
            )
        node, network = self._chain_node, self.network
        return [_child_address(node, i, network) for i in range(start, start + count)]

    def __repr__(self) -> str:
        return (
            f"Wallet(fingerprint={self.fingerprint!r}, network={self.network!r}, "
            f"chain={self.chain})"
        )


# -- addresses ------------------------------------------------------------------------


def validate_address(address: str, network: str) -> str:
    """Check that ``address`` is a P2PKH or P2SH address on ``network``; return it stripped."""
    _check_network(network, AddressError)
    if not isinstance(address, str):
        raise AddressError(f"address must be text, got {type(address).__name__}")
    text = address.strip()
    if not text:
        raise AddressError("address is empty")
    if len(text) > MAX_ADDRESS_TEXT:
        raise AddressError(
            f"address is {len(text)} characters; a Dash address is 34: paste only the address"
        )
    try:
        raw = b58decode_check(text)
    except _Base58Error as exc:
        raise AddressError(f"address {text!r} is not valid: {exc}") from None
    if len(raw) != ADDRESS_SIZE - _CHECKSUM_SIZE:
        raise AddressError(
            f"address {text!r} decodes to {len(raw) + _CHECKSUM_SIZE} bytes, not "
            f"{ADDRESS_SIZE}: it is not a Dash address"
        )
    version = raw[0]
    if version in (P2PKH_VERSION[network], P2SH_VERSION[network]):
        return text
    for other in NETWORKS:
        if other != network and version in (P2PKH_VERSION[other], P2SH_VERSION[other]):
            raise AddressError(
                f"address {text!r} is for {other} but dashpay is configured for {network}"
            )
    raise AddressError(
        f"address {text!r} has version byte {version:#04x}: it is not a Dash address "
        "(Bitcoin and other coins use different version bytes)"
    )


# -- sandbox --------------------------------------------------------------------------


def generate_account_key(network: str = TESTNET) -> str:
    """A fresh, random BIP44 account-level extended PUBLIC key (for the sandbox).

    Derives m/44'/<coin>'/0' from a random 64-byte seed and returns only the public
    key, serialised with the network's usual prefix (tpub / xpub). The seed and the
    private keys are dropped here: never returned, stored or logged.
    """
    _check_network(network, WalletKeyError)
    from bip_utils import Bip32Secp256k1

    node = Bip32Secp256k1.FromSeed(secrets.token_bytes(64))
    node = node.DerivePath(f"m/44'/{_BIP44_COIN_TYPE[network]}'/0'")
    node.ConvertToPublic()
    public = ExtendedPublicKey(
        prefix="xpub" if network == MAINNET else "tpub",
        network_hint=None if network == MAINNET else TESTNET,
        depth=int(node.Depth()),
        parent_fingerprint=bytes(node.ParentFingerPrint()),
        child_number=int(node.Index()),
        chain_code=bytes(node.ChainCode()),
        public_key=bytes(node.PublicKey().RawCompressed()),
    )
    del node
    return public.serialize(_USUAL_PUBLIC_VERSION[network])
