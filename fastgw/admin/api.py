"""The admin API, an ASGI app for the paths under ``/admin/`` (docs/admin-api.md).

Every request must carry ``Authorization: Bearer <admin token>``; the token is compared in
constant time (``hmac.compare_digest`` of SHA-256 digests, so neither its content nor its
length leaks through timing). The API manages the keys created at run time (kept in a
``fastgw.policy.store.RecordStore``, shared by every worker); the keys of the config file are
listed read-only. A created key's secret is answered once, in the 201 of its creation; only
its SHA-256 is stored, and no answer ever shows a secret or a whole hash.

Errors have OpenAI's shape (``fastgw.api.errors.GatewayError``): 400 with ``param`` naming the
field, 401, 404, 405 with ``Allow``, 409, 413, 501, 503 when the store is unreachable. A
failure of the API itself is a 500 without details (and a log line with the traceback).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import msgspec

from ..api.errors import GatewayError, bad_request, not_found
from ..asgi import Receive, Scope, Send, read_body
from ..config.keyspec import (
    check_admin_token,
    key_hash,
    parse_expiry,
)
from ..config.schema import KeyConfig, LimitsConfig
from ..policy.store import KeyRecord, RecordStore, RecordStoreError, now_iso

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


_ROUTES: dict[str, tuple[str, ...]] = {
    "openapi": ("GET",),
    "keys": ("GET", "POST"),
    "key": ("GET", "PATCH", "DELETE"),
    "usage": ("GET",),
}


def _route(path: str, prefix: str) -> tuple[str, str | None] | None:
    """(route, key name) of ``path``; None when it names nothing."""
    if not path.startswith(prefix + "/"):
        return None
    parts = path[len(prefix) + 1 :].rstrip("/").split("/")
    if parts == ["openapi.json"]:
        return "openapi", None
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
    ``teams``, when given, are the team names a key may belong to."""

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
    ) -> None:
        problem = check_admin_token(token)
        if problem is not None:
            raise ValueError(problem)
        self._token_digest = hashlib.sha256(token.encode()).digest()
        self.store = store
        self.usage = usage
        self.teams = None if teams is None else frozenset(teams)
        self.prefix = prefix.rstrip("/")
        self.max_body = max_body
        #: Config keys by name: (the key with its secret dropped, its hash).
        self._config: dict[str, tuple[KeyConfig, str]] = {}
        for k in config_keys:
            digest = key_hash(k.key) if k.key is not None else str(k.hash)
            self._config[k.name] = (msgspec.structs.replace(k, key=None), digest)
        self._openapi = _encoder.encode(openapi_document(self.prefix))

    # -- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            await self._handle(scope, receive, send)
        except GatewayError as err:
            await self._send(send, err.status, err.body(), err.headers)
        except RecordStoreError as exc:
            log.warning("admin API: key store unavailable: %s", exc)
            unavailable = GatewayError(
                503,
                "The key store is unavailable; retry shortly.",
                "unavailable",
                "store_unavailable",
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


def openapi_document(prefix: str = "/admin") -> dict[str, Any]:
    """The OpenAPI 3.1 description of the admin API (served at ``<prefix>/openapi.json``)."""
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
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fastgw admin API",
            "version": "1",
            "description": "Virtual keys created, changed and revoked at run time. A change "
            "reaches every worker within the key sync interval (0.5 s) plus one poll.",
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
                "KeyList": {
                    "type": "object",
                    "required": ["object", "data"],
                    "properties": {
                        "object": {"const": "list"},
                        "data": {"type": "array", "items": _ref("Key")},
                    },
                },
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
