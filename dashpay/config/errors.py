"""ConfigError: the one exception of the config package, a problem a person can fix;
and the two a value checker raises (``WrongType``, ``Invalid``), which ``Reader`` turns
into a ConfigError naming the key."""

from __future__ import annotations

from pathlib import Path


class ConfigError(Exception):
    """A configuration problem a person can fix.

    ``str()`` reads "<file>: [section] key: <what is wrong>; <how to fix>", leaving out
    the parts that are None. ``key`` is dotted ("database.url"), or a section name.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = Path(path) if path is not None else None
        self.key = key
        self.hint = hint

    def __str__(self) -> str:
        text = self.message
        if self.hint:
            text = f"{text}; {self.hint}"
        if self.key:
            section, _, name = self.key.partition(".")
            text = f"[{section}] {name}: {text}" if name else f"[{section}]: {text}"
        if self.path is not None:
            text = f"{self.path}: {text}"
        return text


class WrongType(Exception):
    """Raised by a value checker: the value has the wrong TOML type."""


class Invalid(Exception):
    """Raised by a value checker: the type is right, the value is not."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
