"""The IPv4 addresses an IPv6 address carries inside it.

A callback to such an address can reach the IPv4 host: directly (an IPv4-mapped address
is the IPv4 socket itself), or through a translator or tunnel on the path (NAT64, 6to4,
Teredo). The SSRF rules (``CallbacksConfig.refusal``) therefore check these addresses
with the same rules as a plain IPv4 address.
"""

from __future__ import annotations

import ipaddress

_TEREDO = ipaddress.IPv6Network("2001::/32")
# Where the IPv4 address sits in each form, as (network, bit offset from the top).
_LAST_32 = 96
_FORMS: tuple[tuple[ipaddress.IPv6Network, int], ...] = (
    # RFC 4291 §2.5.5.2 IPv4-mapped ::ffff:a.b.c.d
    (ipaddress.IPv6Network("::ffff:0:0/96"), _LAST_32),
    # RFC 2765 §2.1 IPv4-translated ::ffff:0:a.b.c.d (SIIT)
    (ipaddress.IPv6Network("::ffff:0:0:0/96"), _LAST_32),
    # RFC 6052 §2.1 the NAT64 well-known prefix, /96 by definition
    (ipaddress.IPv6Network("64:ff9b::/96"), _LAST_32),
    # RFC 8215 the NAT64 local-use prefix, used as a /96 (the IPv4 in the last 32 bits)
    (ipaddress.IPv6Network("64:ff9b:1::/48"), _LAST_32),
    # RFC 3056 §2 6to4: 2002:a.b.c.d::/48, the IPv4 in bits 16-48
    (ipaddress.IPv6Network("2002::/16"), 16),
    # RFC 4380 §4 Teredo: the server's IPv4 in bits 32-64 (the client's is below)
    (_TEREDO, 32),
)
# RFC 4291 §2.5.5.1 IPv4-compatible ::a.b.c.d (deprecated, still routed by some stacks);
# :: and ::1 are the unspecified and loopback addresses, not IPv4 ones.
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NOT_COMPATIBLE = frozenset({ipaddress.IPv6Address("::"), ipaddress.IPv6Address("::1")})
_MASK_32 = 0xFFFF_FFFF


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """Every IPv4 address ``address`` embeds, in a fixed order without repeats; empty
    for an ordinary IPv6 address. A Teredo address embeds two: its server's and its
    client's (RFC 4380 §4: the client's is stored inverted, XOR 0xffffffff)."""
    plain = ipaddress.IPv6Address(int(address))  # without a scope id
    value = int(plain)
    found: list[ipaddress.IPv4Address] = []
    for network, offset in _FORMS:
        if plain in network:
            found.append(_bits(value, offset))
    if plain in _TEREDO:
        found.append(ipaddress.IPv4Address((value & _MASK_32) ^ _MASK_32))
    if plain in _COMPATIBLE and plain not in _NOT_COMPATIBLE:
        found.append(_bits(value, _LAST_32))
    return tuple(dict.fromkeys(found))


def _bits(value: int, offset: int) -> ipaddress.IPv4Address:
    """The 32 bits of a 128-bit ``value`` that start ``offset`` bits from the top."""
    return ipaddress.IPv4Address((value >> (128 - 32 - offset)) & _MASK_32)
