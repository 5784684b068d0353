"""The IPv4 addresses inside IPv6 ones (domain/addresses.py), and the SSRF rules that
check them like plain IPv4 addresses (CallbacksConfig.refusal, the delivery guard's
refusal_reason): a NAT64, 6to4 or Teredo form of 169.254.169.254 is still the metadata
service, and one of 127.0.0.1 or 10.0.0.1 is still private."""

from __future__ import annotations

import ipaddress

import pytest

from dashpay.config.model import CallbacksConfig
from dashpay.domain.addresses import embedded_ipv4
from dashpay.net.guard import refusal_reason

V4 = ipaddress.IPv4Address


def teredo(server: str, client: str) -> str:
    """A Teredo address (RFC 4380 §4): 2001:0000, the server, flags, port, then the
    client's IPv4 inverted."""
    value = (0x2001_0000 << 96) | (int(V4(server)) << 64) | (0x8000 << 48) | (0x1234 << 32)
    return str(ipaddress.IPv6Address(value | (int(V4(client)) ^ 0xFFFF_FFFF)))


def forms(ipv4: str) -> dict[str, str]:
    """Every IPv6 form that embeds ``ipv4``, by name."""
    value = int(V4(ipv4))
    high, low = value >> 16, value & 0xFFFF
    return {
        "mapped": f"::ffff:{ipv4}",
        "translated": f"::ffff:0:{high:x}:{low:x}",
        "compatible": f"::{high:x}:{low:x}",
        "nat64": f"64:ff9b::{high:x}:{low:x}",
        "nat64-local-use": f"64:ff9b:1::{high:x}:{low:x}",
        "6to4": f"2002:{high:x}:{low:x}::1",
        "teredo-server": teredo(ipv4, "93.184.216.34"),
        "teredo-client": teredo("93.184.216.34", ipv4),
    }


FORMS = sorted(forms("1.2.3.4"))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("ipv4", ["169.254.169.254", "127.0.0.1", "10.0.0.1"])
def test_every_form_yields_its_ipv4(form, ipv4):
    assert V4(ipv4) in embedded_ipv4(ipaddress.IPv6Address(forms(ipv4)[form]))


def test_teredo_yields_its_server_and_its_client():
    address = ipaddress.IPv6Address(teredo("65.54.227.120", "192.0.2.45"))
    assert embedded_ipv4(address) == (V4("65.54.227.120"), V4("192.0.2.45"))
    # RFC 4380 §4's example, written out: client 192.0.2.45 is stored as 3fff:fdd2.
    assert address == ipaddress.IPv6Address("2001:0:4136:e378:8000:1234:3fff:fdd2")


def test_the_6to4_ipv4_sits_right_after_the_prefix():
    assert embedded_ipv4(ipaddress.IPv6Address("2002:a9fe:a9fe::")) == (V4("169.254.169.254"),)
    assert embedded_ipv4(ipaddress.IPv6Address("2002:c000:22d:1::5")) == (V4("192.0.2.45"),)


@pytest.mark.parametrize(
    "address",
    [
        "2606:4700::1111",
        "2001:4860:4860::8888",
        "2a00:1450:4001:80b::200e",
        "::",
        "::1",
        "fe80::1",
        "fd00::1",
        "64:ff9b:2::a9fe:a9fe",
        "2003:a9fe:a9fe::",
    ],
)
def test_ordinary_ipv6_addresses_embed_nothing(address):
    assert embedded_ipv4(ipaddress.IPv6Address(address)) == ()


def test_a_scope_id_does_not_hide_the_embedded_address():
    assert embedded_ipv4(ipaddress.IPv6Address("::ffff:a9fe:a9fe%eth0")) == (V4("169.254.169.254"),)


# -- the rules see through them ----------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
def test_every_form_of_the_metadata_address_is_refused_by_block_link_local(form):
    address = ipaddress.ip_address(forms("169.254.169.254")[form])
    reason = refusal_reason(address, CallbacksConfig())  # the defaults
    assert reason is not None and "169.254.169.254" in reason and "block_link_local" in reason
    assert CallbacksConfig(block_link_local=False).allows_address(address)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("ipv4", ["127.0.0.1", "10.0.0.1"])
def test_every_form_of_a_private_address_is_refused_without_private_targets(form, ipv4):
    address = ipaddress.ip_address(forms(ipv4)[form])
    reason = refusal_reason(address, CallbacksConfig(allow_private_targets=False))
    assert reason is not None and "allow_private_targets" in reason
    assert CallbacksConfig().allows_address(address)  # private targets are allowed by default


@pytest.mark.parametrize("form", ["nat64", "nat64-local-use", "6to4", "compatible"])
def test_the_refusal_names_the_embedded_address(form):
    address = ipaddress.ip_address(forms("127.0.0.1")[form])
    refusal = CallbacksConfig(allow_private_targets=False).refusal(address)
    assert refusal is not None and refusal.embedded == V4("127.0.0.1")
    assert str(refusal).startswith(f"{address} embeds 127.0.0.1, which is private or loopback")
    assert refusal.allowing == "allow_private_targets = true"


@pytest.mark.parametrize(
    "address",
    [
        "2606:4700::1111",
        "2001:4860:4860::8888",
        "2a00:1450:4001:80b::200e",
        "64:ff9b::808:808",
        "2002:808:808::1",
        "::ffff:8.8.8.8",
    ],
)
def test_public_ipv6_addresses_still_pass(address):
    strict = CallbacksConfig(allow_private_targets=False)
    assert refusal_reason(ipaddress.ip_address(address), strict) is None
    assert refusal_reason(ipaddress.ip_address(address), CallbacksConfig()) is None


def test_a_public_teredo_address_passes_when_private_targets_are_allowed():
    # 2001::/32 is not globally routable itself (RFC 6890), so with
    # allow_private_targets = false every Teredo address is refused anyway.
    address = ipaddress.ip_address(teredo("65.54.227.120", "93.184.216.34"))
    assert refusal_reason(address, CallbacksConfig()) is None
    assert refusal_reason(address, CallbacksConfig(allow_private_targets=False)) is not None
