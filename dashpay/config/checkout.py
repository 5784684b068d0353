"""[checkout]: how the hosted checkout page looks (docs/checkout.md): the shop's name,
the accent colour of its buttons and links, and a logo.

The logo file is read and checked when the config is loaded (``config check`` finds a
missing or wrong file, not the first customer), and kept in memory: the page inlines
it as a ``data:`` URI, so the page loads nothing from anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dashpay.config.checkout_values import MAX_LOGO_BYTES
from dashpay.config.keys import Reader, default

# What a logo file may be, told by its first bytes (never by its name).
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


@dataclass(frozen=True, slots=True)
class Logo:
    media_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class CheckoutConfig:
    shop_name: str | None = None
    accent_color: str = default("checkout", "accent_color")
    logo_file: Path | None = None
    logo: Logo | None = None


def logo_media_type(data: bytes) -> str | None:
    """The image type of ``data`` by its signature, or None."""
    for signature, media_type in _SIGNATURES:
        if data.startswith(signature):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<svg", b"<?xml")) and b"<svg" in head:
        return "image/svg+xml"  # shown through <img>: an SVG's scripts never run there
    return None


def build_checkout(reader: Reader, base_dir: Path | None) -> CheckoutConfig:
    checkout = CheckoutConfig(**reader.section("checkout"))
    if checkout.logo_file is None:
        return checkout
    path = checkout.logo_file
    if not path.is_absolute():
        path = (base_dir if base_dir is not None else Path.cwd()) / path
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_LOGO_BYTES + 1)
    except OSError as exc:
        raise reader.error(
            "checkout", "logo_file", f"cannot read {path}: {exc.strerror}", "check the path"
        ) from None
    if len(data) > MAX_LOGO_BYTES:
        raise reader.error(
            "checkout",
            "logo_file",
            f"{path} is larger than {MAX_LOGO_BYTES // 1024} KiB",
            "every page carries the logo: use a smaller image (an SVG is usually tiny)",
        )
    media_type = logo_media_type(data)
    if media_type is None:
        raise reader.error(
            "checkout",
            "logo_file",
            f"{path} is not a PNG, JPEG, GIF, WebP or SVG image",
            "convert the logo to one of these",
        )
    return CheckoutConfig(
        shop_name=checkout.shop_name,
        accent_color=checkout.accent_color,
        logo_file=path,
        logo=Logo(media_type, data),
    )
