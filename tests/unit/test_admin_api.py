"""The admin API (fastgw/admin/api.py), driven as an ASGI app with fake receive/send over a
SQLite record store in a temp dir."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fastgw.admin import AdminAPI, check_admin_token
from fastgw.asgi import Message
from fastgw.config.keyspec import key_hash
from fastgw.config.schema import KeyConfig
from fastgw.policy.store import RecordStoreError, SQLiteRecordStore

TOKEN = "adm-0123456789abcdefghijklmnopqrstuvwxyz"
CONFIG_SECRET = "sk-config-key-0123456789abcdef"
CONFIG_KEYS = [
    KeyConfig(name="cfg-alice", key=CONFIG_SECRET, team="research"),
    KeyConfig(name="cfg-ci", hash=key_hash("another-config-secret-xyz")),
]


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        err: dict[str, Any] = self.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
        return err


async def call(
    app: AdminAPI,
    method: str,
    path: str,
    body: bytes | object | None = None,
    *,
    token: str | None = TOKEN,
    headers: list[tuple[bytes, bytes]] | None = None,
    chunks: list[bytes] | None = None,
) -> Answer:
    hdrs = list(headers or [])
    if token is not None:
        hdrs.append((b"authorization", b"Bearer " + token.encode()))
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    parts = chunks if chunks is not None else [body or b""]
    queue: list[Message] = [
        {"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
        for i, p in enumerate(parts)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(msg: Message) -> None:
        sent.append(msg)

    scope = {"type": "http", "method": method, "path": path, "headers": hdrs}
    await app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start"
    got = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    data = b"".join(m.get("body", b"") for m in sent[1:])
    if "content-length" in got:
        assert int(got["content-length"]) == len(data)
    return Answer(sent[0]["status"], got, data)


@pytest.fixture
async def store(tmp_path: os.PathLike[str]) -> AsyncIterator[SQLiteRecordStore]:
    s = SQLiteRecordStore(os.path.join(tmp_path, "keys.db"))
    yield s
    await s.close()


@pytest.fixture
def app(store: SQLiteRecordStore) -> AdminAPI:
    async def usage(name: str) -> dict[str, object]:
        return {"name": name, "requests": 3, "tokens": 42}

    return AdminAPI(TOKEN, store, CONFIG_KEYS, usage, teams=["research"])


# -- tokens and auth ------------------------------------------------------------------------


def test_check_admin_token() -> None:
    assert check_admin_token(None) is not None
    assert check_admin_token("") is not None
    assert "32" in (check_admin_token("a1b2c3d4e5f6g7h8") or "")
    assert "distinct" in (check_admin_token("ab" * 20) or "")
    assert check_admin_token(" " + TOKEN) is not None
    assert check_admin_token(TOKEN) is None


def test_weak_token_refused(store: SQLiteRecordStore) -> None:
    with pytest.raises(ValueError, match="at least 32"):
        AdminAPI("short", store, [], None)


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ([], "missing_admin_token"),
        ([(b"authorization", b"Basic abc")], "missing_admin_token"),
        ([(b"authorization", b"Bearer ")], "missing_admin_token"),
        ([(b"authorization", b"Bearer " + TOKEN.encode() + b"x")], "invalid_admin_token"),
        ([(b"authorization", b"Bearer " + CONFIG_SECRET.encode())], "invalid_admin_token"),
    ],
)
async def test_auth_401(app: AdminAPI, headers: list[tuple[bytes, bytes]], code: str) -> None:
    for method, path in [("GET", "/admin/keys"), ("POST", "/admin/keys"), ("GET", "/admin/x")]:
        a = await call(app, method, path, {"name": "x"}, token=None, headers=headers)
        assert a.status == 401
        assert a.error["code"] == code
        assert a.error["type"] == "authentication_error"
        assert a.headers["www-authenticate"] == "Bearer"


# -- create, list, get ----------------------------------------------------------------------


async def test_create_returns_the_secret_once_and_stores_only_its_hash(
    app: AdminAPI, store: SQLiteRecordStore
) -> None:
    a = await call(
        app,
        "POST",
        "/admin/keys",
        {
            "name": "svc.one",
            "team": "research",
            "tags": ["batch"],
            "expires": "2099-01-01",
            "models": ["gpt-4o*"],
            "deny_models": ["o1*"],
            "providers": ["openai"],
            "regions": ["eu"],
            "endpoints": ["chat/completions"],
            "max_tokens": 1000,
            "limits": {"rpm": 60, "concurrency": 2},
        },
    )
    assert a.status == 201, a.body
    assert a.headers["cache-control"] == "no-store"
    assert a.headers["location"] == "/admin/keys/svc.one"
    body = a.json()
    secret = body["key"]
    assert re.fullmatch(r"sk-fgw-[A-Za-z0-9_-]{43}", secret)
    assert body["source"] == "admin" and body["name"] == "svc.one"
    assert body["limits"] == {"rpm": 60, "tpm": None, "concurrency": 2}
    assert body["hash"] == key_hash(secret)[:15] + "…"
    assert body["created_by"] == "admin" and body["created_at"]
    rec = await store.get("svc.one")
    assert rec is not None and rec.hash == key_hash(secret)
    assert rec.models == ["gpt-4o*"] and rec.max_tokens == 1000 and rec.team == "research"
    # the secret is nowhere in the store, nor in any later answer
    with sqlite3.connect(store.path) as db:
        dump = "\n".join(db.iterdump())
    assert secret not in dump and secret[7:] not in dump
    for path in ("/admin/keys", "/admin/keys/svc.one"):
        later = await call(app, "GET", path)
        assert later.status == 200
        assert secret.encode() not in later.body
        assert key_hash(secret).encode() not in later.body
    # two keys never share a secret
    b = await call(app, "POST", "/admin/keys", {"name": "svc.two"})
    assert b.status == 201 and b.json()["key"] != secret


async def test_list_shows_config_and_admin_keys_without_secrets(app: AdminAPI) -> None:
    assert (await call(app, "POST", "/admin/keys", {"name": "zed"})).status == 201
    a = await call(app, "GET", "/admin/keys")
    assert a.status == 200
    data = a.json()
    assert data["object"] == "list"
    rows = {r["name"]: r for r in data["data"]}
    assert rows["cfg-alice"]["source"] == "config"
    assert rows["cfg-ci"]["source"] == "config"
    assert rows["zed"]["source"] == "admin"
    assert rows["cfg-alice"]["team"] == "research"
    assert CONFIG_SECRET.encode() not in a.body
    assert key_hash(CONFIG_SECRET).encode() not in a.body
    for r in data["data"]:
        assert "key" not in r
        assert re.fullmatch(r"sha256:[0-9a-f]{8}…", r["hash"])
    one = await call(app, "GET", "/admin/keys/cfg-alice")
    assert one.status == 200 and one.json()["source"] == "config"
    assert (await call(app, "GET", "/admin/keys/nobody")).status == 404
    assert (await call(app, "GET", "/admin/keys/bad name!")).status == 404


async def test_duplicate_names_409(app: AdminAPI) -> None:
    assert (await call(app, "POST", "/admin/keys", {"name": "dup"})).status == 201
    a = await call(app, "POST", "/admin/keys", {"name": "dup"})
    assert a.status == 409 and a.error["code"] == "key_exists" and a.error["param"] == "name"
    b = await call(app, "POST", "/admin/keys", {"name": "cfg-alice"})
    assert b.status == 409 and "config file" in b.error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "a/b"}, "name"),
        ({"name": ".."}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": 3}, "name"),
        ({"name": "ok", "colour": "red"}, "colour"),
        ({"name": "ok", "disabled": True}, "disabled"),  # create takes no 'disabled'
        ({"name": "ok", "expires": "next tuesday"}, "expires"),
        ({"name": "ok", "expires": 5}, "expires"),
        ({"name": "ok", "limits": {"rpm": 0}}, "limits.rpm"),
        ({"name": "ok", "limits": {"tpm": "many"}}, "limits.tpm"),
        ({"name": "ok", "limits": {"rpm": True}}, "limits.rpm"),
        ({"name": "ok", "limits": {"burst": 1}}, "limits.burst"),
        ({"name": "ok", "limits": [1]}, "limits"),
        ({"name": "ok", "max_tokens": 0}, "max_tokens"),
        ({"name": "ok", "max_tokens": 1.5}, "max_tokens"),
        ({"name": "ok", "models": "gpt-4o"}, "models"),
        ({"name": "ok", "models": [""]}, "models"),
        ({"name": "ok", "tags": [1]}, "tags"),
        ({"name": "ok", "team": "nope"}, "team"),
        ({"name": "ok", "team": ""}, "team"),
    ],
)
async def test_bad_fields_400_with_param(app: AdminAPI, body: object, param: str) -> None:
    a = await call(app, "POST", "/admin/keys", body)
    assert a.status == 400, a.body
    assert a.error["param"] == param
    assert a.error["type"] == "invalid_request_error"


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"[1,2]", b'"x"', b"[" * 10000])
async def test_bad_json_400(app: AdminAPI, raw: bytes) -> None:
    a = await call(app, "POST", "/admin/keys", raw)
    assert a.status == 400
    assert a.error["code"] == "invalid_json"


async def test_body_over_64k_413(app: AdminAPI) -> None:
    big = json.dumps({"name": "big", "tags": ["x" * 200] * 400}).encode()
    assert len(big) > 64 * 1024
    a = await call(app, "POST", "/admin/keys", big)
    assert a.status == 413 and a.error["code"] == "request_too_large"
    declared = await call(
        app,
        "POST",
        "/admin/keys",
        b"{}",
        headers=[(b"content-length", b"100000")],
    )
    assert declared.status == 413
    chunked = await call(app, "POST", "/admin/keys", chunks=[b"x" * 40000, b"y" * 40000])
    assert chunked.status == 413
    ok = await call(app, "POST", "/admin/keys", chunks=[b'{"name":', b'"chunky"}'])
    assert ok.status == 201


# -- patch, delete, usage -------------------------------------------------------------------


async def test_patch_disable_and_change(app: AdminAPI, store: SQLiteRecordStore) -> None:
    assert (await call(app, "POST", "/admin/keys", {"name": "pat", "tags": ["a"]})).status == 201
    a = await call(app, "PATCH", "/admin/keys/pat", {"disabled": True, "max_tokens": 10})
    assert a.status == 200, a.body
    assert a.json()["disabled"] is True and a.json()["max_tokens"] == 10
    assert a.json()["tags"] == ["a"] and a.json()["updated_at"]
    rec = await store.get("pat")
    assert rec is not None and rec.disabled and rec.max_tokens == 10
    b = await call(app, "PATCH", "/admin/keys/pat", {"disabled": False, "max_tokens": None})
    assert b.status == 200 and b.json()["disabled"] is False and b.json()["max_tokens"] is None
    c = await call(app, "PATCH", "/admin/keys/pat", {"limits": {"tpm": 1000}, "expires": None})
    assert c.json()["limits"] == {"rpm": None, "tpm": 1000, "concurrency": None}
    # bad patches
    for body, param in [
        ({"disabled": "yes"}, "disabled"),
        ({"name": "renamed"}, "name"),
        ({"hash": "sha256:00"}, "hash"),
        ({"created_at": "now"}, "created_at"),
    ]:
        bad = await call(app, "PATCH", "/admin/keys/pat", body)
        assert bad.status == 400 and bad.error["param"] == param
    assert (await call(app, "PATCH", "/admin/keys/pat", b"{")).status == 400
    # unknown / config keys
    assert (await call(app, "PATCH", "/admin/keys/nobody", {"disabled": True})).status == 404
    cfg = await call(app, "PATCH", "/admin/keys/cfg-alice", {"disabled": True})
    assert cfg.status == 409 and "declared in the config file" in cfg.error["message"]


async def test_delete(app: AdminAPI, store: SQLiteRecordStore) -> None:
    assert (await call(app, "POST", "/admin/keys", {"name": "gone"})).status == 201
    a = await call(app, "DELETE", "/admin/keys/gone")
    assert a.status == 204 and a.body == b""
    assert await store.get("gone") is None
    assert (await call(app, "DELETE", "/admin/keys/gone")).status == 404
    assert (await call(app, "GET", "/admin/keys/gone")).status == 404
    cfg = await call(app, "DELETE", "/admin/keys/cfg-ci")
    assert cfg.status == 409 and cfg.error["code"] == "config_key"


async def test_usage(app: AdminAPI, store: SQLiteRecordStore) -> None:
    assert (await call(app, "POST", "/admin/keys", {"name": "u"})).status == 201
    a = await call(app, "GET", "/admin/keys/u/usage")
    assert a.status == 200 and a.json() == {"name": "u", "requests": 3, "tokens": 42}
    assert (await call(app, "GET", "/admin/keys/cfg-ci/usage")).status == 200
    missing = await call(app, "GET", "/admin/keys/nobody/usage")
    assert missing.status == 404 and missing.error["code"] == "key_not_found"
    no_usage = AdminAPI(TOKEN, store, CONFIG_KEYS, None)
    b = await call(no_usage, "GET", "/admin/keys/u/usage")
    assert b.status == 501 and b.error["code"] == "usage_unavailable"

    async def broken(name: str) -> dict[str, object]:
        raise RuntimeError("state down")

    c = await call(AdminAPI(TOKEN, store, CONFIG_KEYS, broken), "GET", "/admin/keys/u/usage")
    assert c.status == 503 and b"state down" not in c.body


# -- routing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/admin/keys", "GET, POST"),
        ("PUT", "/admin/keys/x", "GET, PATCH, DELETE"),
        ("POST", "/admin/keys/x/usage", "GET"),
        ("POST", "/admin/openapi.json", "GET"),
    ],
)
async def test_405_with_allow(app: AdminAPI, method: str, path: str, allow: str) -> None:
    a = await call(app, method, path, {})
    assert a.status == 405 and a.headers["allow"] == allow
    assert a.error["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    "path", ["/admin/", "/admin/nothing", "/admin/keys/a/b", "/admin/keys/a/usage/x", "/other"]
)
async def test_unknown_path_404(app: AdminAPI, path: str) -> None:
    a = await call(app, "GET", path)
    assert a.status == 404 and a.error["code"] == "unknown_url"


async def test_openapi_lists_every_path_and_method(app: AdminAPI) -> None:
    a = await call(app, "GET", "/admin/openapi.json")
    assert a.status == 200
    doc = a.json()
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    methods = {p: {m for m in ops if m != "parameters"} for p, ops in paths.items()}
    assert methods == {
        "/admin/keys": {"get", "post"},
        "/admin/keys/{name}": {"get", "patch", "delete"},
        "/admin/keys/{name}/usage": {"get"},
        "/admin/openapi.json": {"get"},
    }
    # every $ref resolves
    schemas = doc["components"]["schemas"]
    refs = re.findall(r'"\$ref": ?"#/components/schemas/([A-Za-z]+)"', a.body.decode())
    assert refs and all(r in schemas for r in refs)
    # the request schemas list exactly the fields the API accepts
    assert set(schemas["KeyCreate"]["properties"]) == {
        "name",
        "team",
        "tags",
        "expires",
        "models",
        "deny_models",
        "providers",
        "regions",
        "endpoints",
        "max_tokens",
        "limits",
    }
    assert set(schemas["KeyPatch"]["properties"]) == (
        set(schemas["KeyCreate"]["properties"]) - {"name"}
    ) | {"disabled"}
    # the documented view is what the API answers
    created = await call(app, "POST", "/admin/keys", {"name": "doc"})
    assert set(created.json()) == set(schemas["Key"]["properties"]) | {"key"}


async def test_store_failure_is_503_not_500(tmp_path: os.PathLike[str]) -> None:
    s = SQLiteRecordStore(os.path.join(tmp_path, "k.db"))
    await s.close()  # every call now raises RecordStoreError
    app = AdminAPI(TOKEN, s, CONFIG_KEYS, None)
    for method, path, body in [
        ("GET", "/admin/keys", None),
        ("POST", "/admin/keys", {"name": "n"}),
        ("DELETE", "/admin/keys/n", None),
    ]:
        a = await call(app, method, path, body)
        assert a.status == 503 and a.error["code"] == "store_unavailable"
        assert RecordStoreError.__name__.encode() not in a.body


async def test_lifespan_and_other_scopes_are_ignored(app: AdminAPI) -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(msg: Message) -> None:
        sent.append(msg)

    await app({"type": "websocket", "path": "/admin/keys", "headers": []}, receive, send)
    assert sent == []
