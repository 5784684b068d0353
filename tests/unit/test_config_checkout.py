"""[http] public_url and the [checkout] theme: what is accepted, what is refused and
how the refusal reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashpay.config.errors import ConfigError
from dashpay.config.load import load_config
from dashpay.repository import schema

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'


def load(tmp_path: Path, text: str):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path, env={})


def error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return caught.value


def test_public_url_is_unset_by_default_and_loses_its_trailing_slash(tmp_path):
    assert load(tmp_path, "").http.public_url is None
    config = load(tmp_path, '[http]\npublic_url = "https://pay.example/shop/"\n')
    assert config.http.public_url == "https://pay.example/shop"


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("ftp://pay.example", "http:// or https://"),
        ("pay.example", "http:// or https://"),
        ("https://", "no host"),
        ("https://pay.example/?x=1", "query or fragment"),
        ("https://pay.example/#top", "query or fragment"),
        ("https://user:pw@pay.example", "user name or password"),
        ("https://pay example", "spaces"),
    ],
)
def test_a_bad_public_url_is_refused_with_the_reason(tmp_path, value, needle):
    caught = error(tmp_path, f'[http]\npublic_url = "{value}"\n')
    assert caught.key == "http.public_url"
    assert needle in caught.message
    assert "pw" not in str(caught)


def test_theme_defaults_and_a_logo_relative_to_the_config_file(tmp_path):
    plain = load(tmp_path, "").checkout
    assert (plain.shop_name, plain.accent_color, plain.logo) == (None, "#008de4", None)
    (tmp_path / "logo.svg").write_bytes(SVG)
    themed = load(
        tmp_path,
        '[checkout]\nshop_name = "Café Zoë"\naccent_color = "#AA00ff"\nlogo_file = "logo.svg"\n',
    ).checkout
    assert (themed.shop_name, themed.accent_color) == ("Café Zoë", "#aa00ff")
    assert themed.logo.media_type == "image/svg+xml" and themed.logo.data == SVG
    (tmp_path / "logo.png").write_bytes(PNG)
    png = load(tmp_path, '[checkout]\nlogo_file = "logo.png"\n').checkout.logo
    assert png.media_type == "image/png"


@pytest.mark.parametrize(
    ("text", "key", "needle"),
    [
        ('accent_color = "blue"', "checkout.accent_color", "#rrggbb"),
        ('accent_color = "#12345"', "checkout.accent_color", "#rrggbb"),
        ('shop_name = "' + "x" * 81 + '"', "checkout.shop_name", "at most 80"),
        ('shop_name = "a\\nb"', "checkout.shop_name", "control characters"),
        ('logo_file = "missing.png"', "checkout.logo_file", "cannot read"),
        ('logo_file = "big.png"', "checkout.logo_file", "larger than 64 KiB"),
        ('logo_file = "page.html"', "checkout.logo_file", "not a PNG, JPEG, GIF, WebP or SVG"),
    ],
)
def test_a_bad_theme_is_refused_with_the_reason(tmp_path, text, key, needle):
    (tmp_path / "big.png").write_bytes(PNG + b"\x00" * 64 * 1024)
    (tmp_path / "page.html").write_bytes(b"<html><script>alert(1)</script></html>")
    caught = error(tmp_path, f"[checkout]\n{text}\n")
    assert caught.key == key
    assert needle in caught.message


def test_two_migrations_with_one_number_are_refused(tmp_path, monkeypatch):
    """Two branches that each added "the next" migration must not merge silently."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    for name in ("0001_initial", "0002_one", "0002_other"):
        for dialect in ("sqlite", "mysql"):
            (folder / f"{name}.{dialect}.sql").write_text("SELECT 1;\n")
    monkeypatch.setattr(schema, "MIGRATIONS_DIR", folder)
    with pytest.raises(RuntimeError, match="migration 2 for .* exists twice"):
        schema.load_migrations("sqlite")


@pytest.mark.parametrize(
    "text", ["[http]\npublic_url = 5", "[checkout]\nshop_name = []", "[checkout]\naccent_color = 1"]
)
def test_a_theme_or_public_url_of_the_wrong_type_is_refused(tmp_path, text):
    assert "expected" in error(tmp_path, text + "\n").message
