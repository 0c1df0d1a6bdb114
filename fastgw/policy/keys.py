"""Virtual keys: authentication and access rules.

Keys are declared in the config as the secret (``key: ${TEAM_A_KEY}``) or its SHA-256
(``hash: sha256:<hex>``); only the hash is kept. A request presents its key as
``Authorization: Bearer <key>`` or ``x-api-key: <key>``; the gateway hashes it, finds the
principal by hash and checks the hash again with a constant-time comparison. Access rules
(models, providers, regions, endpoints, max tokens) come from the key and from its team;
both must allow a request, and a deny always wins.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
import time
from collections.abc import Iterable

from ..api.errors import GatewayError
from ..config.keyspec import key_hash, parse_expiry
from ..config.schema import AccessConfig, GatewayConfig, KeyConfig
from ..routing.router import Target

#: Most header values remembered per header (a new key past it starts the memory afresh).
_SEEN_MAX = 4096


class Rules:
    """Compiled access rules of one key or team."""

    __slots__ = (
        "deny",
        "endpoints",
        "max_tokens",
        "metadata",
        "models",
        "name",
        "passthrough",
        "providers",
        "regions",
    )

    def __init__(self, name: str, cfg: AccessConfig) -> None:
        self.name = name
        self.models = [re.compile(fnmatch.translate(p)) for p in cfg.models]
        self.deny = [re.compile(fnmatch.translate(p)) for p in cfg.deny_models]
        self.providers = frozenset(cfg.providers)
        self.regions = frozenset(r.lower() for r in cfg.regions)
        self.endpoints = frozenset(e.strip("/") for e in cfg.endpoints)
        self.max_tokens = cfg.max_tokens
        self.metadata = frozenset(cfg.metadata)
        self.passthrough = cfg.passthrough

    def check_model(self, model: str) -> None:
        for rx in self.deny:
            if rx.match(model):
                raise forbidden(f"{self.name} may not use model '{model}' (deny_models).")
        if self.models and not any(rx.match(model) for rx in self.models):
            raise forbidden(f"{self.name} may not use model '{model}' (models allow list).")

    def allows_target(self, t: Target) -> bool:
        if self.providers and t.provider.name not in self.providers:
            return False
        return not self.regions or t.region in self.regions

    def describe_targets(self) -> str:
        parts = []
        if self.providers:
            parts.append(f"{self.name} allows providers {', '.join(sorted(self.providers))}")
        if self.regions:
            parts.append(f"{self.name} allows regions {', '.join(sorted(self.regions))}")
        return "; ".join(parts)

    def check_endpoint(self, endpoint: str) -> None:
        if self.endpoints and endpoint not in self.endpoints:
            raise forbidden(f"{self.name} may not use /v1/{endpoint} (endpoints allow list).")


def forbidden(message: str) -> GatewayError:
    return GatewayError(403, message, "permission_error", "access_denied")


def unauthorized(message: str, code: str = "invalid_api_key") -> GatewayError:
    return GatewayError(
        401, message, "authentication_error", code, headers=[(b"www-authenticate", b"Bearer")]
    )


class Principal:
    """A caller: its key's name, team, tags, and the rules that apply to it."""

    __slots__ = (
        "_allowed",
        "digest",
        "expires",
        "hash",
        "max_tokens",
        "name",
        "restricts_targets",
        "rules",
        "tag_list",
        "tags",
        "team",
    )

    def __init__(
        self, k: KeyConfig, digest: str, team_rules: Rules | None, expires: float | None
    ) -> None:
        self.name = k.name
        self.team = k.team
        self.tags = frozenset(k.tags)
        #: The tags in order (what the spend ledger records).
        self.tag_list = tuple(sorted(self.tags))
        self.hash = digest
        #: The SHA-256 as raw bytes (what a presented key is hashed to and compared with).
        self.digest = bytes.fromhex(digest.partition(":")[2])
        self.expires = expires
        #: (model, endpoint) → the refusal of the model/endpoint rules, or None (allowed);
        #: the rules do not change while the principal exists.
        self._allowed: dict[tuple[str, str], GatewayError | None] = {}
        self.rules = [Rules(f"key '{k.name}'", k)]
        if team_rules is not None:
            self.rules.append(team_rules)
        #: The smallest max_tokens cap of the rules (None: no cap).
        caps = [r.max_tokens for r in self.rules if r.max_tokens is not None]
        self.max_tokens = min(caps) if caps else None
        self.restricts_targets = any(r.providers or r.regions for r in self.rules)

    def may_use(self, model: str) -> bool:
        try:
            for r in self.rules:
                r.check_model(model)
        except GatewayError:
            return False
        return True

    def check(self, model: str, endpoint: str, max_tokens: int | None) -> None:
        """403 unless every rule allows ``model`` on ``endpoint`` with the ``max_tokens``
        the request asks for (None: it does not say)."""
        ck = (model, endpoint)
        if ck not in self._allowed:
            refusal: GatewayError | None = None
            try:
                for r in self.rules:
                    r.check_model(model)
                    r.check_endpoint(endpoint)
            except GatewayError as e:
                refusal = e
            if len(self._allowed) > 4096:
                self._allowed.clear()
            self._allowed[ck] = refusal
        refused = self._allowed[ck]
        if refused is not None:
            raise forbidden(refused.message)
        cap = self.max_tokens
        if cap is not None:
            n = max_tokens
            if n is not None and n > cap:
                raise forbidden(
                    f"key '{self.name}' may ask for at most {cap} max_tokens; the request "
                    f"asks for {n}."
                )

    def check_metadata(self, keys: Iterable[str]) -> None:
        """403 when the request's ``x-fastgw-metadata`` has a key a rule does not allow."""
        for r in self.rules:
            if r.metadata:
                for k in keys:
                    if k not in r.metadata:
                        raise forbidden(
                            f"{r.name} may not send metadata '{k}' (allowed: "
                            f"{', '.join(sorted(r.metadata))})."
                        )

    def check_passthrough(self) -> None:
        """403 unless the key or its team may send its own provider key."""
        if not any(r.passthrough for r in self.rules):
            raise forbidden(
                f"key '{self.name}' may not send its own provider key "
                "(x-fastgw-provider-key); its access rules do not set passthrough."
            )

    def eligible(self, targets: list[Target], model: str) -> list[Target]:
        """The targets whose provider and region every rule allows (403 when none)."""
        out = [t for t in targets if all(r.allows_target(t) for r in self.rules)]
        if not out and targets:
            rules = "; ".join(r.describe_targets() for r in self.rules if r.describe_targets())
            raise forbidden(
                f"key '{self.name}' may not use any target of model '{model}' ({rules})."
            )
        return out


class KeyStore:
    """The keys a gateway accepts, by hash."""

    def __init__(self, cfg: GatewayConfig) -> None:
        teams = {name: Rules(f"team '{name}'", t) for name, t in cfg.teams.items()}
        self.by_hash: dict[str, Principal] = {}
        self.by_digest: dict[bytes, Principal] = {}
        self.disabled: dict[str, str] = {}  # hash → key name
        for k in cfg.keys:
            digest = key_hash(k.key) if k.key is not None else str(k.hash)
            if k.disabled:
                self.disabled[digest] = k.name
                continue
            expires = parse_expiry(k.expires).timestamp() if k.expires else None
            team = teams.get(k.team) if k.team else None
            principal = self.by_hash[digest] = Principal(k, digest, team, expires)
            self.by_digest[principal.digest] = principal
        #: Header values (``Authorization``, ``x-api-key``) that presented an accepted key
        #: → its principal (see ``authenticate_values``).
        self._seen_bearer: dict[bytes, Principal] = {}
        self._seen_api_key: dict[bytes, Principal] = {}
        #: Keys are asked for: some are declared, or the admin API can create them.
        self.enabled = bool(cfg.keys) or cfg.admin is not None

    def authenticate(
        self, headers: list[tuple[bytes, bytes]], now: float | None = None
    ) -> Principal:
        """The principal whose key the request presents; 401 (with the reason) otherwise.
        ``Authorization`` wins over ``x-api-key``."""
        authorization: bytes | None = None
        api_key: bytes | None = None
        for name, value in headers:
            if name == b"authorization":
                authorization = value
                break
            if name == b"x-api-key":
                api_key = value
        return self.authenticate_values(authorization, api_key, now)

    def authenticate_values(
        self, authorization: bytes | None, api_key: bytes | None, now: float | None = None
    ) -> Principal:
        """``authenticate`` given the request's first ``Authorization`` header and last
        ``x-api-key`` header (None: absent), as the request's one header scan found them.

        A key that authenticated is remembered by the header value that presented it, so
        the next request with it costs a dictionary lookup instead of a SHA-256. That
        memory holds only keys this store accepted (at most ``_SEEN_MAX`` of them, in this
        process, never written anywhere) and is dropped with the store whenever the keys
        change, so a revoked or disabled key is refused at once. Expiry is checked on
        every request."""
        if authorization is not None:
            hit = self._seen_bearer.get(authorization)
        elif api_key is not None:
            hit = self._seen_api_key.get(api_key)
        else:
            hit = None
        if hit is not None and (hit.expires is None or (now or time.time()) < hit.expires):
            return hit
        return self._authenticate(authorization, api_key, now)

    def _authenticate(
        self, authorization: bytes | None, api_key: bytes | None, now: float | None
    ) -> Principal:
        presented: bytes | None = None
        if authorization is not None:
            scheme, _, token = authorization.partition(b" ")
            if scheme.lower() != b"bearer" or not token.strip():
                raise unauthorized(
                    "The Authorization header must be 'Bearer <key>'.", "invalid_api_key"
                )
            presented = token.strip()
        elif api_key is not None:
            presented = api_key.strip()
        if not presented:
            raise unauthorized(
                "No API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
                "missing_api_key",
            )
        raw = hashlib.sha256(presented).digest()
        principal = self.by_digest.get(raw)
        if principal is None or not hmac.compare_digest(principal.digest, raw):
            digest = "sha256:" + raw.hex()
            if digest in self.disabled:
                raise unauthorized(
                    f"The API key '{self.disabled[digest]}' is disabled.", "key_disabled"
                )
            raise unauthorized("The API key is not valid.", "invalid_api_key")
        if principal.expires is not None and (now or time.time()) >= principal.expires:
            raise unauthorized(f"The API key '{principal.name}' has expired.", "key_expired")
        if authorization is not None:
            seen, value = self._seen_bearer, authorization
        else:
            assert api_key is not None
            seen, value = self._seen_api_key, api_key
        if len(seen) >= _SEEN_MAX:
            seen.clear()
        seen[value] = principal
        return principal
