"""The admin API, an ASGI app for the paths under ``/admin/`` (docs/admin-api.md).

Every request must carry ``Authorization: Bearer <admin token>``; the token is compared in
constant time (``hmac.compare_digest`` of SHA-256 digests, so neither its content nor its
length leaks through timing). The API manages the keys created at run time (kept in a
``fastgw.policy.store.RecordStore``, shared by every worker); the keys of the config file are
listed read-only. A created key's secret is answered once, in the 201 of its creation; only
its SHA-256 is stored, and no answer ever shows a secret or a whole hash.

With a ``fastgw.policy.budgets.Budgets`` it also reports spend (``/admin/spend``, from the
ledger every worker journals to) and sets budgets at run time (``/admin/budgets``, records in
the same store, delivered to every worker by the key sync).

Errors have OpenAI's shape (``fastgw.api.errors.GatewayError``): 400 with ``param`` naming the
field, 401, 404, 405 with ``Allow``, 409, 413, 501, 503 when the store is unreachable. A
failure of the API itself is a 500 without details (and a log line with the traceback).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import math
import re
import secrets
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import msgspec

from ..api.errors import GatewayError, bad_request, not_found
from ..asgi import Receive, Scope, Send, read_body
from ..config.budgetspec import BUDGET_KINDS, budget_errors
from ..config.keyspec import (
    check_admin_token,
    key_hash,
    parse_expiry,
)
from ..config.schema import BudgetConfig, KeyConfig, LimitsConfig
from ..policy.ledger import QUERY_BY, QUERY_INTERVALS, LedgerError
from ..policy.store import (
    BudgetRecord,
    BudgetStore,
    KeyRecord,
    RecordStore,
    RecordStoreError,
    now_iso,
    to_budget_config,
)
from ..state import StateUnavailable

if TYPE_CHECKING:
    from ..policy.budgets import Budgets

__all__ = [
    "KEY_PREFIX",
    "MAX_BODY",
    "AdminAPI",
    "UsageFn",
    "check_admin_token",
    "new_secret",
    "openapi_document",
]

log = logging.getLogger(__name__)

#: Largest request body accepted (413 above it).
MAX_BODY = 64 * 1024
#: What every key created here starts with (then 43 URL-safe characters: 256 random bits).
KEY_PREFIX = "sk-fgw-"
#: The shortest admin token accepted, and the fewest distinct characters in it.

UsageFn = Callable[[str], Awaitable[dict[str, object]]]
Headers = list[tuple[bytes, bytes]]

#: A key name (also a URL path segment, hence neither "." nor "..").
_NAME_RE = re.compile(r"^(?!\.\.?$)[A-Za-z0-9._-]{1,64}$")
_LIST_FIELDS = ("tags", "models", "deny_models", "providers", "regions", "endpoints")
_CREATE_FIELDS = frozenset(("name", "team", "expires", "max_tokens", "limits", *_LIST_FIELDS))
_PATCH_FIELDS = frozenset((*_CREATE_FIELDS - {"name"}, "disabled"))
_LIMIT_FIELDS = ("rpm", "tpm", "concurrency")
_BUDGET_FIELDS = ("usd", "period", "soft", "on_exceed", "fallback_model")
#: A team or tag name in a path (free-form in the config, but one path segment here).
_SCOPE_NAME_RE = re.compile(r"^(?!\.\.?$)[^/\x00-\x1f\x7f]{1,128}$")
_SPEND_PARAMS = frozenset(("by", "since", "until", "interval", "name"))
#: Most intervals one spend query may cover.
MAX_INTERVALS = 10_000
#: Longest string in a list field, and most items in one.
_MAX_ITEM = 256
_MAX_ITEMS = 1000

_encoder = msgspec.json.Encoder()


def new_secret() -> str:
    """A new key: ``sk-fgw-`` and 43 URL-safe characters (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _short_hash(digest: str) -> str:
    """``sha256:`` and the first 8 hex digits: enough to tell keys apart, useless otherwise."""
    algo, _, hexdigest = digest.partition(":")
    return f"{algo}:{hexdigest[:8]}…"


def _expired(expires: str | None, now: float) -> bool:
    if expires is None:
        return False
    try:
        return parse_expiry(expires).timestamp() <= now
    except ValueError:
        return False


def _limits_view(lim: LimitsConfig | None) -> dict[str, int | None] | None:
    if lim is None:
        return None
    return {"rpm": lim.rpm, "tpm": lim.tpm, "concurrency": lim.concurrency}


def _view(k: KeyConfig | KeyRecord, digest: str, source: str, now: float) -> dict[str, object]:
    """What the API shows of a key: everything but the secret, and the hash truncated."""
    rec = k if isinstance(k, KeyRecord) else None
    return {
        "name": k.name,
        "source": source,
        "hash": _short_hash(digest),
        "team": k.team,
        "tags": list(k.tags),
        "expires": k.expires,
        "expired": _expired(k.expires, now),
        "disabled": k.disabled,
        "models": list(k.models),
        "deny_models": list(k.deny_models),
        "providers": list(k.providers),
        "regions": list(k.regions),
        "endpoints": list(k.endpoints),
        "max_tokens": k.max_tokens,
        "limits": _limits_view(k.limits),
        "created_at": rec.created_at if rec else None,
        "updated_at": rec.updated_at if rec else None,
        "created_by": rec.created_by if rec else None,
    }


# -- validation -----------------------------------------------------------------------------


def _field_error(param: str, message: str) -> GatewayError:
    return bad_request(f"'{param}': {message}", param=param, code="invalid_field")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_field(field: str, value: object, teams: Collection[str] | None) -> object:
    """``value`` checked (the config validator's rules) and converted for a ``KeyRecord``."""
    if field == "name":
        if not isinstance(value, str) or not _NAME_RE.match(value):
            raise _field_error(
                field,
                "expected 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-' (not '.' or '..')",
            )
        return value
    if field == "team":
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise _field_error(field, "expected a team name or null")
        if teams is not None and value not in teams:
            known = ", ".join(sorted(teams)) or "none defined"
            raise _field_error(field, f"unknown team {value!r} (teams: {known})")
        return value
    if field in _LIST_FIELDS:
        if not isinstance(value, list):
            raise _field_error(field, "expected a list of strings")
        if len(value) > _MAX_ITEMS:
            raise _field_error(field, f"at most {_MAX_ITEMS} items")
        for item in value:
            if not isinstance(item, str) or not item or len(item) > _MAX_ITEM:
                raise _field_error(
                    field, f"expected a list of non-empty strings of at most {_MAX_ITEM} chars"
                )
        return list(value)
    if field == "expires":
        if value is None:
            return None
        if not isinstance(value, str):
            raise _field_error(field, "expected an ISO 8601 date or time, or null")
        try:
            parse_expiry(value)
        except ValueError:
            raise _field_error(
                field, f"expected an ISO 8601 date or time, got {value[:64]!r}"
            ) from None
        return value
    if field == "max_tokens":
        if value is None:
            return None
        if not _is_int(value) or not isinstance(value, int) or value < 1:
            raise _field_error(field, "expected an integer of at least 1, or null")
        return value
    if field == "limits":
        return _check_limits(value)
    if field == "disabled":
        if not isinstance(value, bool):
            raise _field_error(field, "expected true or false")
        return value
    raise _field_error(field, "unknown field")  # pragma: no cover - callers check the name


def _check_limits(value: object) -> LimitsConfig | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _field_error("limits", "expected an object {rpm, tpm, concurrency} or null")
    out: dict[str, int | None] = {}
    for name, v in value.items():
        param = f"limits.{name}"
        if name not in _LIMIT_FIELDS:
            raise _field_error(param, "unknown field (expected rpm, tpm or concurrency)")
        if v is not None and (not _is_int(v) or not isinstance(v, int) or v < 1):
            raise _field_error(param, "must be an integer of at least 1 (omit it for no limit)")
        out[name] = v
    return LimitsConfig(**out)


def _parse_fields(
    body: bytes, allowed: frozenset[str], teams: Collection[str] | None
) -> dict[str, object]:
    """The JSON object ``body`` with every field checked; 400 naming the first bad one."""
    try:
        data = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        raise bad_request("The body is not valid JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("The body must be a JSON object.", code="invalid_json")
    out: dict[str, object] = {}
    for field, value in data.items():
        if field not in allowed:
            if field == "name":
                raise _field_error(field, "a key cannot be renamed")
            raise _field_error(field, "unknown field")
        out[field] = _check_field(field, value, teams)
    return out


# -- the app --------------------------------------------------------------------------------


def _parse_budget(body: bytes, models: Collection[str]) -> BudgetConfig:
    """A budget from a JSON body (the fields of the config's ``budget``), checked as the
    config validator checks it; 400 naming the first bad field."""
    try:
        data = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        raise bad_request("The body is not valid JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("The body must be a JSON object.", code="invalid_json")
    for field, value in data.items():
        if field not in _BUDGET_FIELDS:
            raise _field_error(field, f"unknown field (expected {', '.join(_BUDGET_FIELDS)})")
        nullable = field in ("soft", "fallback_model")
        if value is None and nullable:
            continue
        or_null = " or null" if nullable else ""
        if field in ("usd", "soft"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _field_error(field, f"expected a number{or_null}")
        elif not isinstance(value, str):
            raise _field_error(field, f"expected a string{or_null}")
    if "usd" not in data:
        raise _field_error("usd", "required")
    budget = msgspec.convert(data, BudgetConfig)
    for field, message in budget_errors(budget, models):
        raise _field_error(field, message)
    return budget


def _query(raw: bytes, allowed: frozenset[str]) -> dict[str, str]:
    """The query string's parameters: each at most once, none unknown (400 otherwise)."""
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise bad_request("The query string is not valid.", code="invalid_field") from None
    out: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            known = ", ".join(sorted(allowed))
            raise _field_error(name, f"unknown parameter (expected {known})")
        if name in out:
            raise _field_error(name, "given twice")
        out[name] = value
    return out


def _time(params: dict[str, str], name: str) -> float | None:
    """A Unix time from an ISO 8601 date or time parameter (UTC without an offset)."""
    value = params.get(name)
    if value is None:
        return None
    try:
        return parse_expiry(value).timestamp()
    except ValueError:
        raise _field_error(name, f"expected an ISO 8601 date or time, got {value[:64]!r}") from None


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


_ROUTES: dict[str, tuple[str, ...]] = {
    "openapi": ("GET",),
    "keys": ("GET", "POST"),
    "key": ("GET", "PATCH", "DELETE"),
    "usage": ("GET",),
    "spend": ("GET",),
    "budgets": ("GET",),
    "budget": ("GET", "PUT", "DELETE"),
}


def _route(path: str, prefix: str) -> tuple[str, str | None] | None:
    """(route, key name — for a budget ``<kind>/<name>``) of ``path``; None when it names
    nothing."""
    if not path.startswith(prefix + "/"):
        return None
    parts = path[len(prefix) + 1 :].rstrip("/").split("/")
    if parts == ["openapi.json"]:
        return "openapi", None
    if parts == ["spend"]:
        return "spend", None
    if parts[0] == "budgets":
        if len(parts) == 1:
            return "budgets", None
        if len(parts) == 3 and parts[2]:
            return "budget", f"{parts[1]}/{parts[2]}"
        return None
    if parts[0] != "keys":
        return None
    if len(parts) == 1:
        return "keys", None
    if len(parts) == 2:
        return "key", parts[1]
    if len(parts) == 3 and parts[2] == "usage":
        return "usage", parts[1]
    return None


class AdminAPI:
    """The ASGI app of ``/admin/...``. ``config_keys`` are the config file's keys (listed,
    never changed here); ``usage(name)`` answers ``GET /admin/keys/{name}/usage`` (None: 501);
    ``teams``, when given, are the team names a key may belong to. ``budgets``: the
    worker's budgets and spend ledger, for ``/admin/spend`` and ``/admin/budgets`` (None:
    501); run-time budgets are kept in ``store``, which must then hold budgets too."""

    def __init__(
        self,
        token: str,
        store: RecordStore,
        config_keys: list[KeyConfig],
        usage: UsageFn | None = None,
        *,
        teams: Collection[str] | None = None,
        prefix: str = "/admin",
        max_body: int = MAX_BODY,
        budgets: Budgets | None = None,
    ) -> None:
        problem = check_admin_token(token)
        if problem is not None:
            raise ValueError(problem)
        self._token_digest = hashlib.sha256(token.encode()).digest()
        self.store = store
        self.usage = usage
        self.teams = None if teams is None else frozenset(teams)
        self.budgets = budgets
        self.budget_store: BudgetStore | None = None
        if budgets is not None:
            if not isinstance(store, BudgetStore):
                raise TypeError("budgets need a store that holds budgets (BudgetStore)")
            self.budget_store = store
        self.prefix = prefix.rstrip("/")
        self.max_body = max_body
        #: Config keys by name: (the key with its secret dropped, its hash).
        self._config: dict[str, tuple[KeyConfig, str]] = {}
        for k in config_keys:
            digest = key_hash(k.key) if k.key is not None else str(k.hash)
            self._config[k.name] = (msgspec.structs.replace(k, key=None), digest)
        self._openapi = _encoder.encode(openapi_document(self.prefix, budgets=budgets is not None))

    # -- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            await self._handle(scope, receive, send)
        except GatewayError as err:
            await self._send(send, err.status, err.body(), err.headers)
        except (RecordStoreError, LedgerError, StateUnavailable) as exc:
            log.warning("admin API: %s unavailable: %s", _what(exc), exc)
            code = {
                "key store": "store_unavailable",
                "spend ledger": "ledger_unavailable",
                "state backend": "state_unavailable",
            }[_what(exc)]
            unavailable = GatewayError(
                503,
                f"The {_what(exc)} is unavailable; retry shortly.",
                "unavailable",
                code,
                headers=[(b"retry-after", b"1")],
            )
            await self._send(send, 503, unavailable.body(), unavailable.headers)
        except Exception:
            log.exception("admin API: internal error on %s %s", scope["method"], scope["path"])
            internal = GatewayError(
                500, "Internal admin API error.", "internal_error", "internal_error"
            )
            try:
                await self._send(send, 500, internal.body(), [])
            except Exception:  # the answer had started
                log.debug("admin API: could not send the 500", exc_info=True)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._authenticate(scope["headers"])
        path: str = scope["path"]
        method: str = scope["method"]
        found = _route(path, self.prefix)
        if found is None:
            raise not_found(f"Unknown path: {path}", code="unknown_url")
        route, name = found
        allowed = _ROUTES[route]
        if method not in allowed:
            allow = ", ".join(allowed)
            raise GatewayError(
                405,
                f"Method {method} is not allowed on {path}; use {allow}.",
                code="method_not_allowed",
                headers=[(b"allow", allow.encode())],
            )
        if route == "openapi":
            await self._send(send, 200, self._openapi)
        elif route == "spend":
            await self._spend(send, scope.get("query_string", b""))
        elif route == "budgets":
            await self._list_budgets(send)
        elif route == "budget" and name is not None:
            kind, _, bname = name.partition("/")
            await self._budget(send, method, kind, bname, scope, receive)
        elif route == "keys" and method == "GET":
            await self._list(send)
        elif route == "keys":
            await self._create(send, await self._body(scope, receive))
        elif name is None:  # pragma: no cover - the named routes always have a name
            raise not_found(f"Unknown path: {path}", code="unknown_url")
        elif route == "usage":
            await self._usage(send, name)
        elif method == "GET":
            await self._get(send, name)
        elif method == "PATCH":
            await self._patch(send, name, await self._body(scope, receive))
        else:
            await self._delete(send, name)

    def _authenticate(self, headers: list[tuple[bytes, bytes]]) -> None:
        presented: bytes | None = None
        for hname, value in headers:
            if hname == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer" and token.strip():
                    presented = token.strip()
                break
        if presented is None:
            raise GatewayError(
                401,
                "The admin API needs 'Authorization: Bearer <admin token>'.",
                "authentication_error",
                "missing_admin_token",
                headers=[(b"www-authenticate", b"Bearer")],
            )
        if not hmac.compare_digest(hashlib.sha256(presented).digest(), self._token_digest):
            raise GatewayError(
                401,
                "The admin token is not valid.",
                "authentication_error",
                "invalid_admin_token",
                headers=[(b"www-authenticate", b"Bearer")],
            )

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        """The request body, at most ``max_body`` bytes (413 above)."""
        declared = -1
        for hname, value in scope["headers"]:
            if hname == b"content-length" and value.isdigit():
                declared = int(value)
        return await read_body(receive, self.max_body, declared, self._too_large)

    def _too_large(self) -> GatewayError:
        return GatewayError(
            413,
            f"Request body is larger than the admin API's limit of {self.max_body} bytes.",
            code="request_too_large",
        )

    async def _send(
        self, send: Send, status: int, body: bytes, extra: Headers | None = None
    ) -> None:
        headers: Headers = [(b"cache-control", b"no-store")]
        if status != 204:
            headers.append((b"content-type", b"application/json"))
            headers.append((b"content-length", str(len(body)).encode()))
        if extra:
            headers.extend(extra)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # -- endpoints --------------------------------------------------------------------------

    @staticmethod
    def _now() -> float:
        return datetime.datetime.now(datetime.UTC).timestamp()

    def _config_conflict(self, name: str) -> GatewayError:
        return GatewayError(
            409,
            f"The key '{name}' is declared in the config file; change it there.",
            code="config_key",
            param="name",
        )

    def _unknown_key(self, name: str) -> GatewayError:
        return not_found(f"No key named '{name}'.", code="key_not_found")

    async def _list(self, send: Send) -> None:
        now = self._now()
        data = [_view(k, d, "config", now) for k, d in self._config.values()]
        data += [_view(r, r.hash, "admin", now) for r in await self.store.list()]
        await self._send(send, 200, _encoder.encode({"object": "list", "data": data}))

    async def _get(self, send: Send, name: str) -> None:
        view = await self._find(name)
        if view is None:
            raise self._unknown_key(name)
        await self._send(send, 200, _encoder.encode(view))

    async def _find(self, name: str) -> dict[str, object] | None:
        if name in self._config:
            k, digest = self._config[name]
            return _view(k, digest, "config", self._now())
        if not _NAME_RE.match(name):
            return None
        r = await self.store.get(name)
        return None if r is None else _view(r, r.hash, "admin", self._now())

    async def _create(self, send: Send, body: bytes) -> None:
        fields = _parse_fields(body, _CREATE_FIELDS, self.teams)
        name = fields.pop("name", None)
        if not isinstance(name, str):
            raise _field_error("name", "required")
        if name in self._config:
            raise GatewayError(
                409,
                f"A key named '{name}' is declared in the config file.",
                code="key_exists",
                param="name",
            )
        secret = new_secret()
        values: dict[str, Any] = fields
        record = KeyRecord(name=name, hash=key_hash(secret), created_at=now_iso(), **values)
        if not await self.store.create(record):
            raise GatewayError(
                409, f"A key named '{name}' exists already.", code="key_exists", param="name"
            )
        log.info("admin API: key %r created (%s)", name, _short_hash(record.hash))
        answer = {"key": secret, **_view(record, record.hash, "admin", self._now())}
        location = f"{self.prefix}/keys/{name}".encode()
        await self._send(send, 201, _encoder.encode(answer), [(b"location", location)])

    async def _patch(self, send: Send, name: str, body: bytes) -> None:
        if name in self._config:
            raise self._config_conflict(name)
        fields = _parse_fields(body, _PATCH_FIELDS, self.teams)
        if not _NAME_RE.match(name):
            raise self._unknown_key(name)
        stamp = now_iso()

        def change(r: KeyRecord) -> KeyRecord:
            return msgspec.structs.replace(r, updated_at=stamp, **fields)

        new = await self.store.update(name, change)
        if new is None:
            raise self._unknown_key(name)
        log.info("admin API: key %r changed (%s)", name, ", ".join(sorted(fields)) or "nothing")
        await self._send(send, 200, _encoder.encode(_view(new, new.hash, "admin", self._now())))

    async def _delete(self, send: Send, name: str) -> None:
        if name in self._config:
            raise self._config_conflict(name)
        if not _NAME_RE.match(name) or not await self.store.delete(name):
            raise self._unknown_key(name)
        log.info("admin API: key %r revoked", name)
        await self._send(send, 204, b"")

    async def _usage(self, send: Send, name: str) -> None:
        if await self._find(name) is None:
            raise self._unknown_key(name)
        if self.usage is None:
            raise GatewayError(
                501,
                "Usage reporting is not available in this gateway.",
                "not_implemented",
                "usage_unavailable",
            )
        try:
            data = await self.usage(name)
        except Exception:
            log.exception("admin API: usage of key %r failed", name)
            raise GatewayError(
                503,
                "The usage of this key cannot be read right now; retry shortly.",
                "unavailable",
                "usage_unavailable",
                headers=[(b"retry-after", b"1")],
            ) from None
        await self._send(send, 200, _encoder.encode(data))

    # -- spend and budgets ------------------------------------------------------------------

    def _need_budgets(self) -> tuple[Budgets, BudgetStore]:
        if self.budgets is None or self.budget_store is None:
            raise GatewayError(
                501,
                "Spend and budgets are not available in this gateway.",
                "not_implemented",
                "budgets_unavailable",
            )
        return self.budgets, self.budget_store

    async def _spend(self, send: Send, raw_query: bytes) -> None:
        budgets, _ = self._need_budgets()
        params = _query(raw_query, _SPEND_PARAMS)
        by = params.get("by", "key")
        if by not in QUERY_BY:
            raise _field_error("by", f"expected one of {', '.join(QUERY_BY)}, got {by[:64]!r}")
        interval = params.get("interval", "day")
        if interval not in QUERY_INTERVALS:
            raise _field_error("interval", f"expected hour or day, got {interval[:64]!r}")
        step = QUERY_INTERVALS[interval] * 60.0
        until = _time(params, "until") or self._now()
        since = _time(params, "since")
        if since is None:  # a day by the hour, 30 days by the day
            since = (math.floor(until / step) - (23 if interval == "hour" else 29)) * step
        if since >= until:
            raise _field_error("since", "must be before until")
        if (until - since) / step > MAX_INTERVALS:
            raise _field_error("since", f"at most {MAX_INTERVALS} {interval}s per query")
        name = params.get("name")
        await budgets.ledger.flush()  # this worker's spend so far; the others' as flushed
        rows = await budgets.ledger.query(by, since, until, interval, name)
        total = math.fsum(float(str(r["cost_usd"])) for r in rows)
        for r in rows:
            r["start"] = _iso(float(str(r["start"])))
        answer = {
            "object": "list",
            "by": by,
            "interval": interval,
            "since": _iso(since),
            "until": _iso(until),
            "name": name,
            "total_usd": total,
            "data": rows,
        }
        await self._send(send, 200, _encoder.encode(answer))

    async def _budget_items(
        self, store: BudgetStore, only: tuple[str, str] | None = None
    ) -> list[tuple[str, str, BudgetConfig, BudgetRecord | None]]:
        """Every budget (or the one ``only`` names): the config's, with the run-time records
        (fresh from the store) over them."""
        budgets, _ = self._need_budgets()
        items: dict[tuple[str, str], tuple[BudgetConfig, BudgetRecord | None]] = {
            ident: (b, None) for ident, b in budgets.config.items()
        }
        if only is not None:
            items = {only: items[only]} if only in items else {}
            found = await store.get_budget(*only)
            records = [found] if found is not None else []
        else:
            records = await store.list_budgets()
        for r in records:
            items[r.kind, r.name] = (to_budget_config(r), r)
        return [(k, n, b, r) for (k, n), (b, r) in sorted(items.items(), key=lambda kv: kv[0])]

    async def _budget_views(
        self, items: list[tuple[str, str, BudgetConfig, BudgetRecord | None]]
    ) -> list[dict[str, object]]:
        budgets, _ = self._need_budgets()
        statuses = await budgets.status([(k, n, b) for k, n, b, _ in items])
        out = []
        for (kind, name, _, r), st in zip(items, statuses, strict=True):
            out.append(
                {
                    **st,
                    "source": "admin" if r is not None else "config",
                    "overrides_config": r is not None and (kind, name) in budgets.config,
                    "created_at": r.created_at if r else None,
                    "updated_at": r.updated_at if r else None,
                }
            )
        return out

    async def _list_budgets(self, send: Send) -> None:
        _, store = self._need_budgets()
        views = await self._budget_views(await self._budget_items(store))
        await self._send(send, 200, _encoder.encode({"object": "list", "data": views}))

    async def _budget(
        self, send: Send, method: str, kind: str, name: str, scope: Scope, receive: Receive
    ) -> None:
        budgets, store = self._need_budgets()
        if kind not in BUDGET_KINDS:
            raise not_found(
                f"Unknown budget kind '{kind[:64]}' (expected key, team or tag).",
                code="unknown_url",
            )
        pattern = _NAME_RE if kind == "key" else _SCOPE_NAME_RE
        if not pattern.match(name) and (kind, name) not in budgets.config:
            raise _field_error("name", f"not a valid {kind} name")
        if method == "GET":
            items = await self._budget_items(store, (kind, name))
            if not items:
                raise self._unknown_budget(kind, name)
            await self._send(send, 200, _encoder.encode((await self._budget_views(items))[0]))
        elif method == "PUT":
            await self._put_budget(send, budgets, store, kind, name, scope, receive)
        else:
            if await store.delete_budget(kind, name):
                log.info("admin API: budget of %s %r removed", kind, name)
                await self._send(send, 204, b"")
            elif (kind, name) in budgets.config:
                raise GatewayError(
                    409,
                    f"The budget of {kind} '{name}' is declared in the config file; change it "
                    "there (a PUT sets a run-time budget over it).",
                    code="config_budget",
                    param="name",
                )
            else:
                raise self._unknown_budget(kind, name)

    async def _put_budget(
        self,
        send: Send,
        budgets: Budgets,
        store: BudgetStore,
        kind: str,
        name: str,
        scope: Scope,
        receive: Receive,
    ) -> None:
        budget = _parse_budget(await self._body(scope, receive), budgets.models)
        if kind == "key" and await self._find(name) is None:
            raise self._unknown_key(name)
        teams = self.teams if self.teams is not None else budgets.teams
        if kind == "team" and name not in teams:
            raise not_found(f"No team named '{name}'.", code="team_not_found")
        before = await store.get_budget(kind, name)
        stamp = now_iso()
        record = BudgetRecord(
            kind=kind,
            name=name,
            usd=budget.usd,
            period=budget.period,
            soft=budget.soft,
            on_exceed=budget.on_exceed,
            fallback_model=budget.fallback_model,
            created_at=before.created_at if before is not None else stamp,
            updated_at=stamp if before is not None else None,
        )
        created = await store.put_budget(record)
        log.info("admin API: budget of %s %r set to $%g %s", kind, name, budget.usd, budget.period)
        view = (await self._budget_views([(kind, name, budget, record)]))[0]
        location = f"{self.prefix}/budgets/{kind}/{name}".encode()
        await self._send(
            send, 201 if created else 200, _encoder.encode(view), [(b"location", location)]
        )

    @staticmethod
    def _unknown_budget(kind: str, name: str) -> GatewayError:
        return not_found(f"No budget for {kind} '{name}'.", code="budget_not_found")


def _what(exc: Exception) -> str:
    if isinstance(exc, LedgerError):
        return "spend ledger"
    if isinstance(exc, StateUnavailable):
        return "state backend"
    return "key store"


# -- OpenAPI --------------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _strings(description: str) -> dict[str, Any]:
    return {
        "type": "array",
        "items": {"type": "string", "minLength": 1, "maxLength": _MAX_ITEM},
        "maxItems": _MAX_ITEMS,
        "description": description,
    }


def _typed(**types: str) -> dict[str, dict[str, str]]:
    """Properties of a plain JSON type each: ``name="integer"`` gives
    ``"name": {"type": "integer"}``."""
    return {name: {"type": t} for name, t in types.items()}


def _date_time() -> dict[str, str]:
    return {"type": "string", "format": "date-time"}


def _list_of(
    items: dict[str, Any], *, required: tuple[str, ...] = (), **props: Any
) -> dict[str, Any]:
    """A list answer: ``object`` ("list"), ``props``, then ``data``, an array of ``items``."""
    return {
        "type": "object",
        "required": ["object", "data", *required],
        "properties": {
            "object": {"const": "list"},
            **props,
            "data": {"type": "array", "items": items},
        },
    }


def _query_param(
    name: str, description: str, enum: list[str] | None = None, default: str | None = None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if enum is not None:
        schema["enum"] = enum
    if default is not None:
        schema["default"] = default
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _budget_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["usd"],
        "properties": {
            "usd": {"type": "number", "exclusiveMinimum": 0, "description": "The hard limit."},
            "period": {
                "type": "string",
                "default": "monthly",
                "pattern": r"^(daily|weekly|monthly|[1-9][0-9]{0,2}d)$",
                "description": "daily, weekly (ISO), monthly (UTC) or <N>d: the last N days "
                "(1 to 366), moving by whole UTC days.",
            },
            "soft": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "exclusiveMaximum": 1,
                "default": 0.8,
                "description": "Fraction of usd past which answers carry a warning.",
            },
            "on_exceed": {"type": "string", "enum": ["reject", "fallback"], "default": "reject"},
            "fallback_model": {
                "type": ["string", "null"],
                "description": "on_exceed fallback: the model served once over the limit.",
            },
        },
    }


def openapi_document(prefix: str = "/admin", *, budgets: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the admin API (served at ``<prefix>/openapi.json``);
    ``budgets``: with the spend and budget endpoints (a gateway with a ``Budgets``)."""
    name_param = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": _NAME_RE.pattern},
        "description": "The key's name.",
    }
    rules: dict[str, Any] = {
        "team": {
            "type": ["string", "null"],
            "minLength": 1,
            "description": "The team whose rules and limits apply too.",
        },
        "tags": _strings("Free-form labels."),
        "expires": {
            "type": ["string", "null"],
            "description": "ISO 8601 date or time after which the key stops working "
            "(UTC without an offset).",
            "examples": ["2027-01-01", "2026-12-31T23:59:59+01:00"],
        },
        "models": _strings("Glob patterns of the models allowed (empty: all)."),
        "deny_models": _strings("Glob patterns of the models refused (a deny always wins)."),
        "providers": _strings("Providers the key may be served by (empty: all)."),
        "regions": _strings("Regions the key may be served in (empty: all)."),
        "endpoints": _strings(
            "API paths without /v1 (chat/completions, embeddings, messages, ...; empty: all)."
        ),
        "max_tokens": {
            "type": ["integer", "null"],
            "minimum": 1,
            "description": "Largest max_tokens / max_completion_tokens a request may ask for.",
        },
        "limits": {"oneOf": [_ref("Limits"), {"type": "null"}]},
    }
    view_props: dict[str, Any] = {
        "name": {"type": "string"},
        "source": {
            "type": "string",
            "enum": ["config", "admin"],
            "description": "config: declared in the config file (read-only here); admin: "
            "created through this API.",
        },
        "hash": {
            "type": "string",
            "description": "The start of the key's SHA-256, e.g. sha256:5e884898…",
        },
        **rules,
        "expired": {"type": "boolean"},
        "disabled": {"type": "boolean"},
        "created_at": {"type": ["string", "null"], "format": "date-time"},
        "updated_at": {"type": ["string", "null"], "format": "date-time"},
        "created_by": {"type": ["string", "null"]},
    }
    auth_errors = {
        "401": _error("No admin token, or a wrong one."),
    }
    store_error = {"503": _error("The key store is unreachable.")}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "fastgw admin API",
            "version": "1",
            "description": "Virtual keys created, changed and revoked at run time, spend "
            "reports and run-time budgets. A change reaches every worker within the key sync "
            "interval (0.5 s) plus one poll.",
        },
        "servers": [{"url": "/"}],
        "security": [{"adminToken": []}],
        "paths": {
            f"{prefix}/keys": {
                "get": {
                    "operationId": "listKeys",
                    "summary": "List every key: the config file's and the run-time ones.",
                    "responses": {
                        "200": _json(_ref("KeyList"), "The keys (no secret, hashes truncated)."),
                        **auth_errors,
                        **store_error,
                    },
                },
                "post": {
                    "operationId": "createKey",
                    "summary": "Create a key; its secret is in this answer only.",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("KeyCreate")}},
                    },
                    "responses": {
                        "201": {
                            **_json(_ref("CreatedKey"), "Created; `key` is the secret."),
                            "headers": {
                                "Location": {
                                    "schema": {"type": "string"},
                                    "description": "The new key's URL.",
                                }
                            },
                        },
                        "400": _error("Invalid JSON or field (`param` names it)."),
                        **auth_errors,
                        "409": _error("A key of that name exists (config or run time)."),
                        "413": _error("Body larger than 64 KiB."),
                        **store_error,
                    },
                },
            },
            f"{prefix}/keys/{{name}}": {
                "parameters": [name_param],
                "get": {
                    "operationId": "getKey",
                    "summary": "One key.",
                    "responses": {
                        "200": _json(_ref("Key"), "The key."),
                        **auth_errors,
                        "404": _error("No such key."),
                        **store_error,
                    },
                },
                "patch": {
                    "operationId": "updateKey",
                    "summary": "Change a run-time key (the fields given; null clears one).",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("KeyPatch")}},
                    },
                    "responses": {
                        "200": _json(_ref("Key"), "The key as changed."),
                        "400": _error("Invalid JSON or field (`param` names it)."),
                        **auth_errors,
                        "404": _error("No such key."),
                        "409": _error("The key is declared in the config file."),
                        "413": _error("Body larger than 64 KiB."),
                        **store_error,
                    },
                },
                "delete": {
                    "operationId": "deleteKey",
                    "summary": "Revoke a run-time key (it stops working on every worker).",
                    "responses": {
                        "204": {"description": "Revoked."},
                        **auth_errors,
                        "404": _error("No such key."),
                        "409": _error("The key is declared in the config file."),
                        **store_error,
                    },
                },
            },
            f"{prefix}/keys/{{name}}/usage": {
                "parameters": [name_param],
                "get": {
                    "operationId": "getKeyUsage",
                    "summary": "What the key has used (as the gateway's usage source reports).",
                    "responses": {
                        "200": _json(
                            {"type": "object", "additionalProperties": True}, "The key's usage."
                        ),
                        **auth_errors,
                        "404": _error("No such key."),
                        "501": _error("This gateway has no usage source."),
                        "503": _error("The key store or the usage source is unreachable."),
                    },
                },
            },
            f"{prefix}/openapi.json": {
                "get": {
                    "operationId": "getOpenAPI",
                    "summary": "This document.",
                    "responses": {
                        "200": _json({"type": "object"}, "The OpenAPI 3.1 document."),
                        **auth_errors,
                    },
                },
            },
        },
        "components": {
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin token of the config (admin.token).",
                }
            },
            "schemas": {
                "Limits": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        f: {"type": ["integer", "null"], "minimum": 1} for f in _LIMIT_FIELDS
                    },
                    "description": "rpm: requests/minute, tpm: tokens/minute, concurrency: "
                    "requests in flight; null or omitted: unlimited.",
                },
                "KeyCreate": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "pattern": _NAME_RE.pattern},
                        **rules,
                    },
                },
                "KeyPatch": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {**rules, "disabled": {"type": "boolean"}},
                },
                "Key": {
                    "type": "object",
                    "required": list(view_props),
                    "properties": view_props,
                },
                "CreatedKey": {
                    "allOf": [
                        _ref("Key"),
                        {
                            "type": "object",
                            "required": ["key"],
                            "properties": {
                                "key": {
                                    "type": "string",
                                    "pattern": "^sk-fgw-[A-Za-z0-9_-]{43}$",
                                    "description": "The secret; shown this once, never stored.",
                                }
                            },
                        },
                    ]
                },
                "KeyList": _list_of(_ref("Key")),
                "Budget": _budget_schema(),
                "BudgetStatus": {
                    "allOf": [
                        _ref("Budget"),
                        {
                            "type": "object",
                            "properties": {
                                "kind": {"type": "string", "enum": list(BUDGET_KINDS)},
                                "name": {"type": "string"},
                                "source": {"type": "string", "enum": ["config", "admin"]},
                                "overrides_config": {"type": "boolean"},
                                "period_id": {
                                    "type": "string",
                                    "examples": ["2026-11-23", "2026-W48", "2026-11"],
                                },
                                "period_start": _date_time(),
                                "reset_at": _date_time(),
                                "reset_seconds": {"type": "integer"},
                                "spent_usd": {
                                    "type": "number",
                                    "description": "Settled spend plus reservations in flight.",
                                },
                                **_typed(
                                    remaining_usd="number",
                                    used_pct="number",
                                    soft_exceeded="boolean",
                                    exceeded="boolean",
                                ),
                                "created_at": {"type": ["string", "null"]},
                                "updated_at": {"type": ["string", "null"]},
                            },
                        },
                    ]
                },
                "BudgetList": _list_of(_ref("BudgetStatus")),
                "SpendList": _list_of(
                    {
                        "type": "object",
                        "description": "One interval of one key, team, model or tag (the "
                        "field named like `by`; null: requests without a key or team).",
                        "properties": {
                            "start": _date_time(),
                            "requests": {"type": "integer"},
                            "estimated": {
                                "type": "integer",
                                "description": "Requests whose usage was estimated.",
                            },
                            **_typed(
                                prompt_tokens="integer",
                                completion_tokens="integer",
                                cached_tokens="integer",
                                cost_usd="number",
                            ),
                        },
                    },
                    required=("total_usd",),
                    by={"type": "string", "enum": list(QUERY_BY)},
                    interval={"type": "string", "enum": ["hour", "day"]},
                    since=_date_time(),
                    until=_date_time(),
                    name={"type": ["string", "null"]},
                    total_usd={"type": "number"},
                ),
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["message", "type", "param", "code"],
                            "properties": {
                                "message": {"type": "string"},
                                "type": {"type": "string"},
                                "param": {"type": ["string", "null"]},
                                "code": {"type": ["string", "null"]},
                            },
                        }
                    },
                },
            },
        },
    }
    if budgets:
        doc["paths"].update(_budget_paths(prefix, auth_errors, store_error))
    return doc


def _budget_paths(
    prefix: str, auth_errors: dict[str, Any], store_error: dict[str, Any]
) -> dict[str, Any]:
    """The paths of ``/spend`` and ``/budgets``."""
    return {
        f"{prefix}/spend": {
            "get": {
                "operationId": "getSpend",
                "summary": "Spend per key, team, model or tag, per hour or day (from the "
                "ledger every worker journals to; each worker's spend appears once flushed).",
                "parameters": [
                    _query_param("by", "What to group by.", list(QUERY_BY), "key"),
                    _query_param("interval", "Bucket size (UTC).", ["hour", "day"], "day"),
                    _query_param(
                        "since",
                        "ISO 8601 date or time (UTC without an offset); default: 24 hours "
                        "(interval hour) or 30 days (interval day) before until.",
                    ),
                    _query_param("until", "ISO 8601 date or time; default: now."),
                    _query_param("name", "Only this key, team, model or tag."),
                ],
                "responses": {
                    "200": _json(_ref("SpendList"), "The spend, oldest interval first."),
                    "400": _error("A bad parameter (`param` names it)."),
                    **auth_errors,
                    "503": _error("The ledger cannot be read."),
                },
            },
        },
        f"{prefix}/budgets": {
            "get": {
                "operationId": "listBudgets",
                "summary": "Every budget (config file and run time) with its spend now.",
                "responses": {
                    "200": _json(_ref("BudgetList"), "The budgets, by kind and name."),
                    **auth_errors,
                    "503": _error("The store or the state backend is unreachable."),
                },
            },
        },
        f"{prefix}/budgets/{{kind}}/{{name}}": {
            "parameters": [
                {
                    "name": "kind",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": list(BUDGET_KINDS)},
                },
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                    "description": "The key's, team's or tag's name.",
                },
            ],
            "get": {
                "operationId": "getBudget",
                "summary": "One budget with its spend now.",
                "responses": {
                    "200": _json(_ref("BudgetStatus"), "The budget."),
                    **auth_errors,
                    "404": _error("No budget for it."),
                    **store_error,
                },
            },
            "put": {
                "operationId": "setBudget",
                "summary": "Set (or raise) a budget at run time; it replaces a budget of "
                "the config file for the same owner while it exists.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Budget")}},
                },
                "responses": {
                    "200": _json(_ref("BudgetStatus"), "Replaced."),
                    "201": _json(_ref("BudgetStatus"), "Created."),
                    "400": _error("Invalid JSON or field (`param` names it)."),
                    **auth_errors,
                    "404": _error("No such key or team."),
                    "413": _error("Body larger than 64 KiB."),
                    **store_error,
                },
            },
            "delete": {
                "operationId": "deleteBudget",
                "summary": "Remove a run-time budget (a budget of the config file, if "
                "any, applies again).",
                "responses": {
                    "204": {"description": "Removed."},
                    **auth_errors,
                    "404": _error("No budget for it."),
                    "409": _error("Only the config file declares this budget."),
                    **store_error,
                },
            },
        },
    }
