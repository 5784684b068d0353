"""The secret that signs callbacks: configured, or generated once and kept in the
database."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field

from dashpay.config.model import CallbacksConfig
from dashpay.repository.base import Repository

# Where the generated secret lives (settings table) when the config sets none.
SECRET_SETTING = "callback_secret"
# token_urlsafe(32): 256 random bits, 43 characters; far above MIN_SECRET_CHARS.
GENERATED_SECRET_BYTES = 32


# -- the secret -----------------------------------------------------------------------

log = logging.getLogger("dashpay.callbacks")


@dataclass(frozen=True, slots=True)
class CallbackSecret:
    value: str = field(repr=False)
    source: str  # where it came from, for `callbacks secret` and the log


def resolve_secret(rules: CallbacksConfig, repo: Repository) -> CallbackSecret:
    """The HMAC key: ``[callbacks] secret_file`` or ``secret`` when set, else the one
    generated at the first start and kept in the database (blocking: call it in a
    thread). Several daemons sharing a database generate at most one between them."""
    if rules.secret is not None:
        if rules.secret_file is not None:
            return CallbackSecret(rules.secret, f"[callbacks] secret_file {rules.secret_file}")
        return CallbackSecret(rules.secret, "[callbacks] secret")
    fresh = secrets.token_urlsafe(GENERATED_SECRET_BYTES)
    stored = repo.set_setting_if_absent(SECRET_SETTING, fresh)
    if stored == fresh:
        log.info("callback secret generated and stored setting=%s", SECRET_SETTING)
    return CallbackSecret(stored, f"generated, stored in the database (setting {SECRET_SETTING})")
