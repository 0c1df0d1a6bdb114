"""Run-time budgets and spend reports: the budget records of both stores, their delivery to
every worker by the key sync, and the admin API's /admin/spend and /admin/budgets."""

from __future__ import annotations

import datetime
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fastgw.admin import AdminAPI
from fastgw.asgi import Receive, Scope, Send
from fastgw.config import validate
from fastgw.config.keyspec import key_hash
from fastgw.config.schema import GatewayConfig
from fastgw.policy.budgets import Budgets, counter_key
from fastgw.policy.keys import Principal
from fastgw.policy.ledger import Ledger, SpendEvent
from fastgw.policy.store import (
    BudgetRecord,
    BudgetStore,
    KeyRecord,
    RedisRecordStore,
    SQLiteRecordStore,
    now_iso,
)
from fastgw.policy.sync import KeySync
from fastgw.state import charge
from fastgw.state.memory import MemoryState
from tests.servers import redis_forget, redis_up
from tests.unit.test_admin_api import TOKEN, call

REDIS_URL = "redis://127.0.0.1:6379/0"


def ts(text: str) -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()


def budget(kind: str, name: str, usd: float = 1.0, **kw: Any) -> BudgetRecord:
    return BudgetRecord(kind=kind, name=name, usd=usd, created_at=now_iso(), **kw)


# -- the stores -----------------------------------------------------------------------------


_no_redis = pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=_no_redis)])
async def any_store(
    request: pytest.FixtureRequest, tmp_path: os.PathLike[str]
) -> AsyncIterator[SQLiteRecordStore | RedisRecordStore]:
    if request.param == "sqlite":
        s = SQLiteRecordStore(os.path.join(tmp_path, "keys.db"))
        yield s
        await s.close()
        return
    prefix = f"fastgw-test-{uuid.uuid4().hex[:8]}:"
    r = RedisRecordStore(REDIS_URL, prefix)
    try:
        yield r
    finally:
        await r.close()
        await redis_forget(prefix, REDIS_URL)


async def test_budget_records_in_both_stores(
    any_store: SQLiteRecordStore | RedisRecordStore,
) -> None:
    s = any_store
    assert isinstance(s, BudgetStore)
    assert await s.list_budgets() == []
    v0 = await s.version()
    assert await s.put_budget(budget("team", "research", 5.0, period="weekly")) is True
    assert await s.put_budget(budget("key", "alice", 1.0)) is True
    assert await s.version() > v0
    v1 = await s.version()
    changed = budget("key", "alice", 2.0, period="7d", soft=None)
    assert await s.put_budget(changed) is False  # replaced
    assert await s.version() > v1
    assert await s.get_budget("key", "alice") == changed
    assert await s.get_budget("tag", "alice") is None
    assert [(r.kind, r.name) for r in await s.list_budgets()] == [
        ("key", "alice"),
        ("team", "research"),
    ]
    assert await s.list() == []  # keys and budgets do not mix
    assert await s.delete_budget("key", "alice") is True
    assert await s.delete_budget("key", "alice") is False
    assert [r.name for r in await s.list_budgets()] == ["research"]


async def test_the_key_sync_delivers_budgets_to_every_worker(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "keys.db")
    writer, reader = SQLiteRecordStore(path), SQLiteRecordStore(path)
    seen: list[list[str]] = []
    keys: list[list[KeyRecord]] = []
    sync = KeySync(reader, keys.append, on_budgets=lambda rs: seen.append([r.name for r in rs]))
    try:
        assert await sync.poll() is True
        assert seen == [[]] and keys == [[]]
        await writer.put_budget(budget("tag", "batch"))
        assert await sync.poll() is True
        assert seen[-1] == ["batch"] and len(keys) == 1  # the keys did not change
        assert await sync.poll() is False
        assert sync.health()["budgets"] == 1
    finally:
        await writer.close()
        await reader.close()

    class KeysOnly:  # a store without budgets cannot feed on_budgets
        pass

    with pytest.raises(TypeError):
        KeySync(KeysOnly(), keys.append, on_budgets=print)  # type: ignore[arg-type]


# -- the admin API --------------------------------------------------------------------------


def gateway_config() -> GatewayConfig:
    return validate(
        {
            "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}},
            "models": {
                "smart": {"targets": [{"provider": "p"}]},
                "cheap-*": {"targets": [{"provider": "p"}]},
            },
            "teams": {"research": {"budget": {"usd": 10, "period": "monthly"}}, "ops": {}},
            "keys": [
                {
                    "name": "alice",
                    "key": "alice-secret-0123456789",
                    "team": "research",
                    "tags": ["batch"],
                    "budget": {"usd": 1, "period": "daily"},
                }
            ],
        },
        env={},
    )


class QueryAdmin(AdminAPI):
    """The admin API behind a server that splits the query string off the path (the
    shared ``call`` helper sends the path as given)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, _, query = scope["path"].partition("?")
        await super().__call__(
            {**scope, "path": path, "query_string": query.encode()}, receive, send
        )


class Setup:
    def __init__(self, app: AdminAPI, budgets: Budgets, store: SQLiteRecordStore) -> None:
        self.app = app
        self.budgets = budgets
        self.store = store


@pytest.fixture
async def setup(tmp_path: os.PathLike[str]) -> AsyncIterator[Setup]:
    cfg = gateway_config()
    store = SQLiteRecordStore(os.path.join(tmp_path, "keys.db"))
    ledger = Ledger(os.path.join(tmp_path, "spend.db"))
    budgets = Budgets(cfg, ledger, clock=lambda: ts("2026-11-23T12:00:00"))
    budgets.state = MemoryState()
    app = QueryAdmin(TOKEN, store, cfg.keys, teams=cfg.teams.keys(), budgets=budgets)
    yield Setup(app, budgets, store)
    await ledger.close()
    await store.close()


def event(at: str, cost: float, key: str | None = "alice", **kw: Any) -> SpendEvent:
    fields: dict[str, Any] = {"team": "research", "tags": ("batch",), "model": "smart"}
    fields.update(kw)
    return SpendEvent(
        ts=ts(at), request_id="r", key=key, target="p/x", cost=cost, prompt_tokens=3, **fields
    )


async def test_spend_by_key_team_model_and_tag(setup: Setup) -> None:
    b = setup.budgets
    b.ledger.record(event("2026-11-22T10:00:00", 0.5))
    b.ledger.record(event("2026-11-23T10:30:00", 0.25, model="cheap-1"))
    b.ledger.record(event("2026-11-23T11:30:00", 1.0, key=None, team=None, tags=()))
    # not flushed yet: the API writes this worker's queue before reading
    q = "since=2026-11-22&until=2026-11-24"
    a = await call(setup.app, "GET", f"/admin/spend?by=key&{q}")
    assert a.status == 200, a.body
    body = a.json()
    assert body["by"] == "key" and body["interval"] == "day" and body["total_usd"] == 1.75
    assert body["since"] == "2026-11-22T00:00:00+00:00"
    assert [(r["start"], r["key"], r["cost_usd"]) for r in body["data"]] == [
        ("2026-11-22T00:00:00+00:00", "alice", 0.5),
        ("2026-11-23T00:00:00+00:00", None, 1.0),
        ("2026-11-23T00:00:00+00:00", "alice", 0.25),
    ]
    a = await call(setup.app, "GET", f"/admin/spend?by=model&interval=hour&{q}")
    assert [(r["start"][11:16], r["model"]) for r in a.json()["data"]] == [
        ("10:00", "smart"),
        ("10:00", "cheap-1"),
        ("11:00", "smart"),
    ]
    a = await call(setup.app, "GET", f"/admin/spend?by=tag&name=batch&{q}")
    assert [r["cost_usd"] for r in a.json()["data"]] == [0.5, 0.25]
    a = await call(setup.app, "GET", f"/admin/spend?by=team&{q}&name=research")
    assert a.json()["total_usd"] == 0.75
    a = await call(setup.app, "GET", "/admin/spend")  # defaults: by key, the last 30 days
    assert a.status == 200 and a.json()["by"] == "key"


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("by=provider", "by"),
        ("interval=week", "interval"),
        ("since=yesterday", "since"),
        ("until=2026-13-01", "until"),
        ("since=2026-11-24&until=2026-11-23", "since"),
        ("interval=hour&since=2020-01-01&until=2026-01-01", "since"),
        ("by=key&by=team", "by"),
        ("limit=3", "limit"),
    ],
)
async def test_bad_spend_queries_name_their_parameter(setup: Setup, query: str, param: str) -> None:
    a = await call(setup.app, "GET", f"/admin/spend?{query}")
    assert a.status == 400
    assert a.error["param"] == param and a.error["code"] == "invalid_field"


async def test_list_budgets_with_their_spend(setup: Setup) -> None:
    b = setup.budgets
    from fastgw.policy.keys import KeyStore

    cfg = gateway_config()
    principal = KeyStore(cfg).by_hash[key_hash("alice-secret-0123456789")]
    assert isinstance(principal, Principal)
    r = await b.reserve(principal, "smart", 0.5)
    assert r is not None
    await r.settle(0.25)
    await b.flush()
    a = await call(setup.app, "GET", "/admin/budgets")
    assert a.status == 200
    data = {(d["kind"], d["name"]): d for d in a.json()["data"]}
    assert set(data) == {("key", "alice"), ("team", "research")}
    alice = data["key", "alice"]
    assert alice["source"] == "config" and alice["overrides_config"] is False
    assert alice["period_id"] == "2026-11-23" and alice["reset_at"] == "2026-11-24T00:00:00+00:00"
    assert alice["reset_seconds"] == 12 * 3600
    assert alice["spent_usd"] == 0.25 and alice["remaining_usd"] == 0.75
    assert alice["used_pct"] == 25.0 and alice["exceeded"] is False
    assert data["team", "research"]["period_id"] == "2026-11"
    a = await call(setup.app, "GET", "/admin/budgets/team/research")
    assert a.status == 200 and a.json()["spent_usd"] == 0.25
    a = await call(setup.app, "GET", "/admin/budgets/tag/batch")
    assert a.status == 404 and a.error["code"] == "budget_not_found"


async def test_put_sets_and_raises_budgets_at_run_time(setup: Setup) -> None:
    a = await call(setup.app, "PUT", "/admin/budgets/tag/batch", {"usd": 3, "period": "7d"})
    assert a.status == 201, a.body
    assert a.headers["location"] == "/admin/budgets/tag/batch"
    got = a.json()
    assert (got["usd"], got["period"], got["soft"], got["on_exceed"]) == (3.0, "7d", 0.8, "reject")
    assert got["source"] == "admin" and got["period_start"] == "2026-11-17T00:00:00+00:00"
    created = got["created_at"]
    # raising a config budget: a run-time one over it
    a = await call(setup.app, "PUT", "/admin/budgets/key/alice", {"usd": 5, "period": "daily"})
    assert a.status == 201 and a.json()["overrides_config"] is True
    a = await call(setup.app, "PUT", "/admin/budgets/tag/batch", {"usd": 4, "soft": None})
    assert a.status == 200
    got = a.json()
    assert got["usd"] == 4.0 and got["period"] == "monthly" and got["soft"] is None
    assert got["created_at"] == created and got["updated_at"] is not None
    fallback = {"usd": 1, "on_exceed": "fallback", "fallback_model": "cheap-mini"}
    a = await call(setup.app, "PUT", "/admin/budgets/team/ops", fallback)
    assert a.status == 201 and a.json()["fallback_model"] == "cheap-mini"
    records = {(r.kind, r.name): r for r in await setup.store.list_budgets()}
    assert set(records) == {("tag", "batch"), ("key", "alice"), ("team", "ops")}
    # the worker applies them when its key sync delivers them
    setup.budgets.update(list(records.values()))
    listed = await call(setup.app, "GET", "/admin/budgets")
    by = {(d["kind"], d["name"]): d for d in listed.json()["data"]}
    assert by["key", "alice"]["usd"] == 5.0 and by["key", "alice"]["source"] == "admin"
    assert by["team", "research"]["source"] == "config"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"usd": -1}, "usd"),
        ({"usd": 0}, "usd"),
        ({"usd": True}, "usd"),
        ({"usd": "10"}, "usd"),
        ({"period": "daily"}, "usd"),
        ({"usd": 1, "period": "fortnightly"}, "period"),
        ({"usd": 1, "period": "400d"}, "period"),
        ({"usd": 1, "period": None}, "period"),
        ({"usd": 1, "soft": 1.5}, "soft"),
        ({"usd": 1, "on_exceed": "ignore"}, "on_exceed"),
        ({"usd": 1, "on_exceed": "fallback"}, "fallback_model"),
        ({"usd": 1, "on_exceed": "fallback", "fallback_model": "gpt-9"}, "fallback_model"),
        ({"usd": 1, "fallback_model": "smart"}, "fallback_model"),
        ({"usd": 1, "hard": 2}, "hard"),
    ],
)
async def test_put_refuses_bad_budgets_naming_the_field(
    setup: Setup, body: dict[str, Any], param: str
) -> None:
    a = await call(setup.app, "PUT", "/admin/budgets/team/research", body)
    assert a.status == 400, a.body
    assert a.error["param"] == param and a.error["code"] == "invalid_field"
    assert await setup.store.list_budgets() == []


async def test_put_and_delete_errors(setup: Setup) -> None:
    app = setup.app
    a = await call(app, "PUT", "/admin/budgets/key/alice", b"{not json")
    assert a.status == 400 and a.error["code"] == "invalid_json"
    a = await call(app, "PUT", "/admin/budgets/key/nobody", {"usd": 1})
    assert a.status == 404 and a.error["code"] == "key_not_found"
    a = await call(app, "PUT", "/admin/budgets/team/nobody", {"usd": 1})
    assert a.status == 404 and a.error["code"] == "team_not_found"
    a = await call(app, "PUT", "/admin/budgets/model/smart", {"usd": 1})
    assert a.status == 404 and a.error["code"] == "unknown_url"
    a = await call(app, "POST", "/admin/budgets", {"usd": 1})
    assert a.status == 405 and a.headers["allow"] == "GET"
    a = await call(app, "PATCH", "/admin/budgets/key/alice", {"usd": 1})
    assert a.status == 405 and a.headers["allow"] == "GET, PUT, DELETE"
    a = await call(app, "GET", "/admin/budgets/key")
    assert a.status == 404 and a.error["code"] == "unknown_url"
    # delete: config budgets are the config file's; run-time ones go
    a = await call(app, "DELETE", "/admin/budgets/key/alice")
    assert a.status == 409 and a.error["code"] == "config_budget"
    a = await call(app, "DELETE", "/admin/budgets/tag/batch")
    assert a.status == 404 and a.error["code"] == "budget_not_found"
    assert (await call(app, "PUT", "/admin/budgets/key/alice", {"usd": 2})).status == 201
    a = await call(app, "DELETE", "/admin/budgets/key/alice")
    assert a.status == 204 and a.body == b""
    assert await setup.store.list_budgets() == []
    # a run-time key can have a budget too
    await setup.store.put(KeyRecord(name="svc", hash=key_hash("svc-secret"), created_at=now_iso()))
    assert (await call(app, "PUT", "/admin/budgets/key/svc", {"usd": 2})).status == 201


async def test_budget_endpoints_need_the_admin_token(setup: Setup) -> None:
    for method, path in [
        ("GET", "/admin/spend"),
        ("GET", "/admin/budgets"),
        ("PUT", "/admin/budgets/key/alice"),
        ("DELETE", "/admin/budgets/key/alice"),
    ]:
        a = await call(setup.app, method, path, {"usd": 100}, token=None)
        assert a.status == 401 and a.error["code"] == "missing_admin_token"
        a = await call(setup.app, method, path, {"usd": 100}, token=TOKEN + "x")
        assert a.status == 401 and a.error["code"] == "invalid_admin_token"
    assert await setup.store.list_budgets() == []


async def test_without_budgets_the_endpoints_answer_501(tmp_path: os.PathLike[str]) -> None:
    store = SQLiteRecordStore(os.path.join(tmp_path, "k.db"))
    try:
        app = AdminAPI(TOKEN, store, [])
        for method, path in [("GET", "/admin/spend"), ("PUT", "/admin/budgets/tag/x")]:
            a = await call(app, method, path, {"usd": 1})
            assert a.status == 501 and a.error["code"] == "budgets_unavailable"
        doc = (await call(app, "GET", "/admin/openapi.json")).json()
        assert "/admin/spend" not in doc["paths"]
    finally:
        await store.close()


async def test_openapi_describes_the_budget_endpoints(setup: Setup) -> None:
    a = await call(setup.app, "GET", "/admin/openapi.json")
    doc = a.json()
    paths = doc["paths"]
    assert set(paths["/admin/spend"]) == {"get"}
    assert set(paths["/admin/budgets"]) == {"get"}
    assert set(paths["/admin/budgets/{kind}/{name}"]) == {"parameters", "get", "put", "delete"}
    schemas = doc["components"]["schemas"]
    assert set(schemas["Budget"]["properties"]) == {
        "usd",
        "period",
        "soft",
        "on_exceed",
        "fallback_model",
    }
    params = {p["name"] for p in paths["/admin/spend"]["get"]["parameters"]}
    assert params == {"by", "interval", "since", "until", "name"}


async def test_a_state_outage_is_a_503(setup: Setup) -> None:
    from fastgw.state import StateUnavailable

    class Down(MemoryState):
        async def charge_many(self, charges: Any, *, ttl: float | None = None) -> Any:
            raise StateUnavailable("down (test)")

    setup.budgets.state = Down()
    a = await call(setup.app, "GET", "/admin/budgets")
    assert a.status == 503 and a.error["code"] == "state_unavailable"
    assert a.headers["retry-after"] == "1"


async def test_counters_read_by_the_admin_api_are_the_budgets_counters(setup: Setup) -> None:
    state = setup.budgets.state
    assert state is not None
    await state.adjust(counter_key("team", "research", "2026-11"), 12.5)
    a = await call(setup.app, "GET", "/admin/budgets/team/research")
    got = a.json()
    assert got["spent_usd"] == 12.5 and got["remaining_usd"] == 0 and got["exceeded"] is True
    assert (await charge(state, counter_key("team", "research", "2026-11"), 0, 1e9)).total == 12.5
