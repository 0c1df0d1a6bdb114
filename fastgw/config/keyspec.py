"""Key entries of the config: their hash and their checks (no dependency beyond the
config schema, so the config validator can use them)."""

from __future__ import annotations

import datetime
import hashlib
import re

from .schema import KeyConfig

_HASH_RE = re.compile(r"^sha256:([0-9a-f]{64})$")
#: Shortest secret accepted in a config (a guessable key is no key).
MIN_KEY_LENGTH = 16


def key_hash(secret: str) -> str:
    """``sha256:<hex>`` of a key: what the config's ``hash`` holds and what is stored."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def parse_expiry(text: str) -> datetime.datetime:
    """An ISO 8601 date or date-time; naive values are UTC. ValueError when unreadable."""
    value = datetime.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value


def key_errors(k: KeyConfig) -> list[tuple[str, str]]:
    """(field, message) for what is wrong with one key entry (the config validator's)."""
    out: list[tuple[str, str]] = []
    if (k.key is None) == (k.hash is None):
        out.append(("key", "give exactly one of key (the secret) and hash (sha256:<hex>)"))
    if k.key is not None and len(k.key) < MIN_KEY_LENGTH:
        out.append(("key", f"must be at least {MIN_KEY_LENGTH} characters"))
    if k.hash is not None and not _HASH_RE.match(k.hash):
        out.append(("hash", "expected sha256: and 64 lower-case hex digits"))
    if k.expires is not None:
        try:
            parse_expiry(k.expires)
        except ValueError:
            out.append(("expires", f"expected an ISO 8601 date or time, got {k.expires!r}"))
    return out


MIN_TOKEN_LENGTH = 32
MIN_TOKEN_DISTINCT = 10


def check_admin_token(token: str | None) -> str | None:
    """Why ``token`` cannot guard the admin API (missing, too short, too few distinct
    characters); None when it is acceptable. The gateway refuses to start the API otherwise."""
    if not token:
        return "the admin token is missing (set admin.token, e.g. ${FASTGW_ADMIN_TOKEN})"
    if len(token) < MIN_TOKEN_LENGTH:
        return f"the admin token must be at least {MIN_TOKEN_LENGTH} characters long"
    if len(set(token)) < MIN_TOKEN_DISTINCT:
        return f"the admin token must contain at least {MIN_TOKEN_DISTINCT} distinct characters"
    if token != token.strip() or any(ord(c) < 0x21 or ord(c) > 0x7E for c in token):
        return "the admin token must be printable ASCII without spaces"
    return None
