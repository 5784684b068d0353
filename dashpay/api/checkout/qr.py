"""The payment request as a QR code: segno's SVG, as a ``data:`` URI for an ``<img>``
(the page's CSP allows images from ``data:`` only, and an SVG shown through ``<img>``
can run nothing)."""

from __future__ import annotations

from functools import lru_cache

# Every watcher of a receiver gets the same frames: the URIs of the current states.
QR_CACHE = 1024


@lru_cache(maxsize=QR_CACHE)
def qr_data_uri(uri: str) -> str:
    """A QR code of ``uri`` (error correction M: still read with 15% of it damaged or
    covered, as on a cracked or glaring phone screen), black on white with the
    standard four-module quiet zone, whatever the page's colours."""
    import segno  # here, not at import: ~2 MB a daemon that shows no page does not need

    code = segno.make(uri, error="m", micro=False)
    return code.svg_data_uri(dark="#000", light="#fff", border=4)
