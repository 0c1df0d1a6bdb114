"""The router: strategy trees built from a validated config, the order of targets per
request, inheritance, sticky assignment, region/tag pinning, health and metrics; and the
config validator's errors for strategy trees."""

from __future__ import annotations

import collections
import time

import msgspec
import pytest

from fastgw.api.errors import GatewayError
from fastgw.config import ConfigError, validate
from fastgw.config.schema import DEFAULT_FALLBACK_ON
from fastgw.routing.conditions import RequestFacts
from fastgw.routing.health import OPEN, PASS, STATS_TTL, Stats
from fastgw.routing.router import Route, Router, Target

PROVIDERS: dict[str, object] = {
    "p": {"kind": "openai", "base_url": "http://p.invalid/v1"},
    "q": {"kind": "openai", "base_url": "http://q.invalid/v1", "timeout": {"total": 77}},
}


def leaf(model: str, **extra: object) -> dict[str, object]:
    return {"provider": "p", "model": model, **extra}


def config(models: dict[str, object]) -> dict[str, object]:
    return {"providers": PROVIDERS, "models": models}


def build(models: dict[str, object]) -> Router:
    return Router(validate(config(models), env={}))


def route(node: dict[str, object], name: str = "m") -> Route:
    return build({name: node}).exact[name]


def facts(
    headers: dict[str, str] | None = None,
    metadata: dict[str, object] | None = None,
    body: object = None,
    region: set[str] | None = None,
    tags: set[str] | None = None,
) -> RequestFacts:
    f = RequestFacts(
        [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
        msgspec.json.encode(body) if body is not None else b"{}",
        "m",
    )
    if metadata is not None:
        f.set_metadata(msgspec.json.encode(metadata), 4096)
    if region is not None:
        f.require_region = frozenset(region)
    if tags is not None:
        f.require_tags = frozenset(tags)
    return f


def models(targets: list[Target]) -> list[str | None]:
    return [t.model for t in targets]


# -- the tree and its labels ---------------------------------------------------------------


def test_labels_name_the_config_path() -> None:
    r = route(
        {
            "targets": [
                leaf("a"),
                {
                    "strategy": "loadbalance",
                    "targets": [leaf("b"), {"targets": [leaf("c"), leaf("d")]}],
                },
            ]
        }
    )
    assert [t.label for t in r.leaves] == [
        "m.targets[0]",
        "m.targets[1].targets[0]",
        "m.targets[1].targets[1].targets[0]",
        "m.targets[1].targets[1].targets[1]",
    ]
    assert models(r.leaves) == ["a", "b", "c", "d"]
    assert r.targets is r.leaves
    assert r.leaves[2].routing_headers == [
        (b"x-fastgw-target", b"m.targets[1].targets[1].targets[0]")
    ]


def test_fallback_all_the_way_down_is_static() -> None:
    r = route({"targets": [{"targets": [leaf("a"), leaf("b")]}, leaf("c")]})
    assert r.fixed is not None
    assert models(r.order()) == ["a", "b", "c"]
    assert models(r.order(facts())) == ["a", "b", "c"]
    dynamic = route({"targets": [{"strategy": "loadbalance", "targets": [leaf("a")]}, leaf("c")]})
    assert dynamic.fixed is None
    assert models(dynamic.order()) == ["a", "c"]


def test_nested_fallback_inside_loadbalance_stays_together() -> None:
    r = route(
        {
            "strategy": "loadbalance",
            "targets": [leaf("a"), {"targets": [leaf("b"), leaf("c")]}],
        }
    )
    seen = collections.Counter(tuple(models(r.order())) for _ in range(300))
    assert set(seen) == {("a", "b", "c"), ("b", "c", "a")}
    assert min(seen.values()) > 60  # 1:1 → about 150 each


def test_loadbalance_inside_fallback_keeps_the_fallback_order() -> None:
    r = route(
        {
            "targets": [
                {"strategy": "loadbalance", "targets": [leaf("a"), leaf("b")]},
                leaf("c"),
            ]
        }
    )
    seen = collections.Counter(tuple(models(r.order())) for _ in range(300))
    assert set(seen) == {("a", "b", "c"), ("b", "a", "c")}


def test_loadbalance_weight_zero_is_never_drawn() -> None:
    r = route(
        {
            "strategy": "loadbalance",
            "targets": [leaf("a", weight=0), leaf("b", weight=1), leaf("c", weight=0.001)],
        }
    )
    orders = [models(r.order()) for _ in range(1000)]
    assert all("a" not in o for o in orders)  # not even as a fallback
    assert all(len(o) == 2 for o in orders)
    firsts = collections.Counter(o[0] for o in orders)
    assert firsts["b"] > 950


def test_loadbalance_weights_are_honoured() -> None:
    r = route(
        {
            "strategy": "loadbalance",
            "targets": [leaf("a", weight=1), leaf("b", weight=3)],
        }
    )
    firsts = collections.Counter(r.order()[0].model for _ in range(4000))
    assert 2700 <= firsts["b"] <= 3300


def test_nested_node_weight_zero_excludes_its_subtree() -> None:
    r = route(
        {
            "strategy": "loadbalance",
            "targets": [leaf("a"), {"weight": 0, "targets": [leaf("b"), leaf("c")]}],
        }
    )
    assert all(models(r.order()) == ["a"] for _ in range(50))


# -- conditional ---------------------------------------------------------------------------

CONDITIONAL: dict[str, object] = {
    "strategy": "conditional",
    "conditions": [
        {"when": {"metadata.tier": "pro"}, "then": "big"},
        {"when": {"header.x-beta": {"exists": True}}, "then": "beta"},
        {"when": {"body.user": {"prefix": "team-"}}, "then": "group"},
    ],
    "default": "small",
    "targets": [
        leaf("small", name="small"),
        leaf("big", name="big"),
        leaf("beta", name="beta"),
        {"name": "group", "strategy": "fallback", "targets": [leaf("g1"), leaf("g2")]},
    ],
}


@pytest.mark.parametrize(
    ("request_facts", "expected"),
    [
        (facts(metadata={"tier": "pro"}, headers={"x-beta": "1"}), ["big"]),  # first wins
        (facts(metadata={"tier": "free"}, headers={"x-beta": "1"}), ["beta"]),
        (facts(headers={"x-beta": ""}), ["beta"]),
        (facts(body={"user": "team-a"}), ["g1", "g2"]),  # a nested node, expanded
        (facts(metadata={"tier": "free"}), ["small"]),
        (facts(), ["small"]),
        (None, ["small"]),
    ],
)
def test_conditional_picks_the_first_match_else_default(
    request_facts: RequestFacts | None, expected: list[str]
) -> None:
    r = route(CONDITIONAL)
    assert r.fixed is None
    assert models(r.order(request_facts)) == expected


def test_conditional_inside_fallback() -> None:
    r = route(
        {
            "targets": [
                {
                    "strategy": "conditional",
                    "conditions": [{"when": {"metadata.eu": True}, "then": "eu"}],
                    "default": "us",
                    "targets": [leaf("us-1", name="us"), leaf("eu-1", name="eu")],
                },
                leaf("last"),
            ]
        }
    )
    assert models(r.order(facts(metadata={"eu": True}))) == ["eu-1", "last"]
    assert models(r.order(facts())) == ["us-1", "last"]


# -- sticky loadbalance --------------------------------------------------------------------


def sticky_route(weights: tuple[float, ...] = (9, 1), sticky: str = "metadata.user") -> Route:
    return route(
        {
            "strategy": "loadbalance",
            "sticky": sticky,
            "targets": [leaf(f"t{i}", weight=w) for i, w in enumerate(weights)],
        }
    )


def test_sticky_same_key_same_order() -> None:
    r = sticky_route((1, 1, 1))
    for user in ("alice", "bob", "carol", 42):
        first = models(r.order(facts(metadata={"user": user})))
        assert len(first) == 3
        for _ in range(20):
            assert models(r.order(facts(metadata={"user": user}))) == first


def test_sticky_assignment_survives_a_rebuild() -> None:
    r1, r2 = sticky_route((1, 1, 1)), sticky_route((1, 1, 1))
    for i in range(100):
        f = facts(metadata={"user": f"u{i}"})
        assert models(r1.order(f)) == models(r2.order(f))


def test_sticky_spreads_keys_by_weight() -> None:
    r = sticky_route((9, 1))
    firsts = collections.Counter(
        r.order(facts(metadata={"user": f"user-{i}"}))[0].model for i in range(2000)
    )
    assert 1650 <= firsts["t0"] <= 1950  # 1800 expected
    assert firsts["t0"] + firsts["t1"] == 2000


def test_sticky_keys_only_move_to_a_new_target() -> None:
    """Rendezvous hashing: adding a target moves keys to it, never between the others."""
    before = sticky_route((1, 1))
    after = sticky_route((1, 1, 1))
    moved = 0
    for i in range(600):
        f = facts(metadata={"user": f"k{i}"})
        new = after.order(f)[0].model
        if new == "t2":
            moved += 1
        else:
            assert new == before.order(f)[0].model
    assert 120 <= moved <= 280  # about a third


def test_sticky_by_header() -> None:
    r = sticky_route((1, 1), sticky="header.x-user-id")
    picks = {r.order(facts(headers={"x-user-id": "abc"}))[0].model for _ in range(50)}
    assert len(picks) == 1


def test_sticky_without_the_field_draws_at_random() -> None:
    r = sticky_route((1, 1))
    for f in (facts(), facts(metadata={"user": ""}), facts(metadata={"user": None})):
        firsts = collections.Counter(r.order(f)[0].model for _ in range(400))
        assert min(firsts["t0"], firsts["t1"]) > 100
    firsts = collections.Counter(r.order(None)[0].model for _ in range(400))
    assert min(firsts["t0"], firsts["t1"]) > 100


def test_sticky_never_picks_weight_zero() -> None:
    r = sticky_route((1, 0))
    assert all(models(r.order(facts(metadata={"user": f"u{i}"}))) == ["t0"] for i in range(200))


# -- least-latency / least-busy ------------------------------------------------------------


def stats_of(t: Target) -> Stats:
    assert t.stats is not None
    return t.stats


def test_least_latency_orders_lowest_estimate_first() -> None:
    r = route({"strategy": "least-latency", "targets": [leaf("slow"), leaf("fast"), leaf("mid")]})
    slow, fast, mid = r.leaves
    now = time.monotonic()
    stats_of(slow).sample(2.0, now)
    stats_of(fast).sample(0.1, now)
    stats_of(mid).sample(0.5, now)
    for _ in range(20):
        assert models(r.order()) == ["fast", "mid", "slow"]


def test_least_latency_tries_unknown_and_stale_targets_first() -> None:
    r = route(
        {
            "strategy": "least-latency",
            "targets": [leaf("known"), leaf("unknown"), leaf("stale")],
        }
    )
    known, _, stale = r.leaves
    now = time.monotonic()
    stats_of(known).sample(0.1, now)
    stats_of(stale).sample(0.01, now - STATS_TTL - 5)  # faster, but too old to trust
    seen = {tuple(models(r.order())) for _ in range(100)}
    assert seen == {("unknown", "stale", "known"), ("stale", "unknown", "known")}  # ties at random


def test_least_latency_breaks_ties_by_inflight() -> None:
    r = route({"strategy": "least-latency", "targets": [leaf("busy"), leaf("idle")]})
    busy, idle = r.leaves
    now = time.monotonic()
    stats_of(busy).sample(0.2, now)
    stats_of(idle).sample(0.2, now)
    stats_of(busy).inflight = 3
    assert all(models(r.order()) == ["idle", "busy"] for _ in range(20))


def test_least_busy_orders_fewest_inflight_first() -> None:
    r = route({"strategy": "least-busy", "targets": [leaf("a"), leaf("b"), leaf("c"), leaf("d")]})
    a, b, c, d = r.leaves
    now = time.monotonic()
    stats_of(a).inflight = 3
    stats_of(b).inflight = 0
    stats_of(c).inflight = 1
    stats_of(d).inflight = 0
    stats_of(b).sample(0.9, now)  # b and d tie on inflight: latency decides
    stats_of(d).sample(0.1, now)
    for _ in range(20):
        assert models(r.order()) == ["d", "b", "c", "a"]


def test_least_busy_over_nested_nodes_sums_their_leaves() -> None:
    r = route(
        {
            "strategy": "least-busy",
            "targets": [
                {"targets": [leaf("a1"), leaf("a2")]},
                {"strategy": "loadbalance", "targets": [leaf("b1")]},
            ],
        }
    )
    a1, a2, b1 = r.leaves
    assert all(t.stats is not None for t in r.leaves)  # every leaf below keeps stats
    stats_of(a1).inflight = 1
    stats_of(a2).inflight = 1
    stats_of(b1).inflight = 1
    assert all(models(r.order()) == ["b1", "a1", "a2"] for _ in range(20))
    stats_of(b1).inflight = 3
    assert all(models(r.order()) == ["a1", "a2", "b1"] for _ in range(20))


def test_only_targets_under_least_strategies_keep_stats() -> None:
    r = route(
        {
            "targets": [
                leaf("plain"),
                {"strategy": "least-latency", "targets": [leaf("x"), {"targets": [leaf("y")]}]},
            ]
        }
    )
    plain, x, y = r.leaves
    assert plain.stats is None
    assert x.stats is not None and y.stats is not None


# -- inheritance ---------------------------------------------------------------------------


def test_settings_come_from_the_nearest_node() -> None:
    r = route(
        {
            "retry": {"attempts": 3},
            "fallback_on": [500],
            "timeout": {"total": 30},
            "breaker": {"failures": 2, "window": 4},
            "override_params": {"temperature": 0.1, "top_p": 1},
            "targets": [
                leaf("top"),
                {
                    "retry": {"attempts": 5},
                    "override_params": {"temperature": 0.9, "top_p": None},
                    "breaker": {"failures": 7, "window": 8},
                    "targets": [
                        leaf("deep", fallback_on=[503], override_params={"seed": 1}),
                        leaf("deep-own", timeout={"total": 5}, retry={"attempts": 1}),
                    ],
                },
            ],
        }
    )
    top, deep, deep_own = r.leaves
    assert top.retry.attempts == 3
    assert top.fallback_on == frozenset({500})
    assert top.timeouts.total == 30
    assert top.breaker is not None and top.breaker.failures == 2
    assert top.overrides == {"temperature": msgspec.Raw(b"0.1"), "top_p": msgspec.Raw(b"1")}

    assert deep.retry.attempts == 5
    assert deep.fallback_on == frozenset({503})
    assert deep.timeouts.total == 30
    assert deep.breaker is not None and deep.breaker.failures == 7
    assert deep.breaker.mask == (1 << 8) - 1
    assert deep.overrides == {
        "temperature": msgspec.Raw(b"0.9"),
        "top_p": None,  # removed below the node that set it
        "seed": msgspec.Raw(b"1"),
    }

    assert deep_own.retry.attempts == 1
    assert deep_own.fallback_on == frozenset({500})
    assert deep_own.timeouts.total == 5
    assert deep_own.overrides == {"temperature": msgspec.Raw(b"0.9"), "top_p": None}


def test_each_target_has_its_own_breaker() -> None:
    r = route({"breaker": {"failures": 1, "window": 1}, "targets": [leaf("a"), leaf("b")]})
    a, b = r.leaves
    assert a.breaker is not None and b.breaker is not None
    assert a.breaker is not b.breaker
    a.breaker.record(True, PASS, 1000.0)
    assert a.breaker.state == OPEN
    assert b.breaker.state != OPEN


def test_defaults_and_provider_timeouts() -> None:
    r = route(
        {
            "targets": [
                leaf("a"),
                {"provider": "q", "model": "b"},
                {"provider": "q", "model": "c", "timeout": {"total": 9}},
            ]
        }
    )
    a, b, c = r.leaves
    assert a.retry.attempts == 1
    assert a.fallback_on == frozenset(DEFAULT_FALLBACK_ON)
    assert a.breaker is None and a.stats is None
    assert a.timeouts.total == 600.0
    assert b.timeouts.total == 77.0  # the provider's
    assert c.timeouts.total == 9.0  # the target's own beats the provider's
    assert a.overrides == {}


def test_fallback_on_empty_list_is_not_inherited() -> None:
    r = route({"fallback_on": [500], "targets": [leaf("a", fallback_on=[])]})
    assert r.leaves[0].fallback_on == frozenset()


# -- region and tag pinning ----------------------------------------------------------------

PINNED: dict[str, object] = {
    "targets": [
        leaf("eu-1", region="EU"),
        leaf("us-1", region="us"),
        leaf("anywhere"),
        leaf("eu-2", region=" eu ", tags=["ZDR", "hipaa"]),
        leaf("us-2", region="us", tags=["zdr"]),
    ]
}


@pytest.mark.parametrize(
    ("region", "tags", "expected"),
    [
        (None, None, ["eu-1", "us-1", "anywhere", "eu-2", "us-2"]),
        ({"eu"}, None, ["eu-1", "eu-2"]),  # case-insensitive; no region: not eligible
        ({"us", "eu"}, None, ["eu-1", "us-1", "eu-2", "us-2"]),
        (None, {"zdr"}, ["eu-2", "us-2"]),
        (None, {"zdr", "hipaa"}, ["eu-2"]),  # every tag must be present
        ({"us"}, {"zdr"}, ["us-2"]),
    ],
)
def test_region_and_tag_filtering(
    region: set[str] | None, tags: set[str] | None, expected: list[str]
) -> None:
    r = route(PINNED)
    assert models(r.order(facts(region=region, tags=tags))) == expected


def test_targets_normalise_region_and_tags() -> None:
    r = route(PINNED)
    assert r.leaves[0].region == "eu"
    assert r.leaves[2].region is None
    assert r.leaves[3].region == "eu"
    assert r.leaves[3].tags == frozenset({"zdr", "hipaa"})


def test_no_eligible_target_is_a_403_listing_the_targets_considered() -> None:
    r = route(PINNED)
    with pytest.raises(GatewayError) as e:
        r.order(facts(region={"apac"}))
    err = e.value
    assert (err.status, err.type, err.code) == (403, "permission_error", "no_eligible_target")
    assert "model 'm'" in err.message
    assert "(region apac)" in err.message
    for label in (
        "m.targets[0] (p, region eu)",
        "m.targets[2] (p)",
        "m.targets[3] (p, region eu, tags hipaa,zdr)",
    ):
        assert label in err.message
    with pytest.raises(GatewayError) as e:
        r.order(facts(region={"eu", "us"}, tags={"pci", "zdr"}))
    assert e.value.code == "no_eligible_target"
    assert "region eu or us and tags pci, zdr" in e.value.message


def test_no_eligible_target_under_a_dynamic_strategy() -> None:
    r = route(
        {"strategy": "loadbalance", "targets": [leaf("a", region="us"), leaf("b", region="eu")]}
    )
    for _ in range(20):
        assert models(r.order(facts(region={"eu"}))) == ["b"]
    with pytest.raises(GatewayError) as e:
        r.order(facts(region={"apac"}))
    assert e.value.status == 403


def test_region_on_a_nested_node_is_not_silently_ignored() -> None:
    data = config(
        {"m": {"targets": [{"region": "eu", "tags": ["zdr"], "targets": [leaf("a"), leaf("b")]}]}}
    )
    try:
        cfg = validate(data, env={})
    except ConfigError as e:  # rejecting it is fine
        assert any("region" in err for err in e.errors)
        return
    r = Router(cfg).exact["m"]
    assert models(r.order(facts(region={"eu"}, tags={"zdr"}))) == ["a", "b"]


# -- health and metrics --------------------------------------------------------------------


def test_health_reports_targets_with_a_breaker_or_stats() -> None:
    router = build(
        {
            "plain": {"targets": [leaf("a")]},
            "guarded": {"breaker": {"failures": 1, "window": 1}, "targets": [leaf("b")]},
            "fast": {"strategy": "least-busy", "targets": [leaf("c")]},
        }
    )
    guarded = router.exact["guarded"].leaves[0]
    assert guarded.breaker is not None
    guarded.breaker.record(True, PASS, time.monotonic())
    fast = router.exact["fast"].leaves[0]
    stats_of(fast).inflight = 2
    stats_of(fast).sample(0.25, time.monotonic())
    health = router.health()
    assert set(health) == {"guarded.targets[0]", "fast.targets[0]"}
    g = health["guarded.targets[0]"]
    assert isinstance(g, dict)
    assert g["provider"] == "p"
    assert g["breaker"]["state"] == "open"
    assert g["breaker"]["opened"] == 1
    assert g["breaker"]["retry_after"] > 0
    assert health["fast.targets[0]"] == {
        "provider": "p",
        "inflight": 2,
        "latency_ewma_ms": 250.0,
    }


def test_metrics_series_and_values() -> None:
    router = build(
        {
            "guarded": {"breaker": {"failures": 1, "window": 1}, "targets": [leaf("b")]},
            "fast": {"strategy": "least-latency", "targets": [leaf("c")]},
        }
    )
    guarded = router.exact["guarded"].leaves[0]
    guarded.calls_ok = 7
    guarded.calls_failed = 2
    assert guarded.breaker is not None
    guarded.breaker.record(True, PASS, time.monotonic())
    fast = router.exact["fast"].leaves[0]
    stats_of(fast).inflight = 4
    stats_of(fast).sample(0.5, time.monotonic())
    text = router.metrics()
    assert text.endswith("\n")
    lines = text.splitlines()
    for name, kind in (
        ("fastgw_target_calls_total", "counter"),
        ("fastgw_target_breaker_state", "gauge"),
        ("fastgw_target_breaker_opened_total", "counter"),
        ("fastgw_target_inflight", "gauge"),
        ("fastgw_target_latency_ewma_seconds", "gauge"),
    ):
        assert f"# TYPE {name} {kind}" in lines
        assert any(line.startswith(f"# HELP {name} ") for line in lines)
    g = 'model="guarded",target="guarded.targets[0]",provider="p"'
    f = 'model="fast",target="fast.targets[0]",provider="p"'
    assert f'fastgw_target_calls_total{{{g},outcome="ok"}} 7' in lines
    assert f'fastgw_target_calls_total{{{g},outcome="failed"}} 2' in lines
    assert f"fastgw_target_breaker_state{{{g}}} 1" in lines
    assert f"fastgw_target_breaker_opened_total{{{g}}} 1" in lines
    assert f"fastgw_target_inflight{{{f}}} 4" in lines
    assert f"fastgw_target_latency_ewma_seconds{{{f}}} 0.500000" in lines
    assert not any(line.startswith(f"fastgw_target_inflight{{{g}") for line in lines)
    assert not any(line.startswith(f"fastgw_target_breaker_state{{{f}") for line in lines)


def test_metrics_escape_label_values() -> None:
    router = build({'we"ird\\name\nx': {"targets": [leaf("a")]}})
    text = router.metrics()
    escaped = 'we\\"ird\\\\name\\nx'
    assert f'model="{escaped}",target="{escaped}.targets[0]",provider="p"' in text
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert len(body) == 2  # the raw newline did not split a sample line


# -- resolve -------------------------------------------------------------------------------


def test_resolve_exact_then_longest_pattern() -> None:
    router = build(
        {
            "gpt-4o": {"targets": [leaf("exact")]},
            "openai/*": {"targets": [{"provider": "p"}]},
            "*": {"targets": [{"provider": "q"}]},
        }
    )
    found = router.resolve("gpt-4o")
    assert found is not None and found[0].name == "gpt-4o" and found[1] == "gpt-4o"
    found = router.resolve("openai/gpt-4.1")
    assert found is not None and found[0].name == "openai/*" and found[1] == "gpt-4.1"
    found = router.resolve("other")
    assert found is not None and found[0].name == "*" and found[1] == "other"


# -- the validator's errors for strategy trees ---------------------------------------------


def errors(model: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        validate(config({"m": model}), env={})
    return e.value.errors


COND: dict[str, object] = {
    "strategy": "conditional",
    "default": "a",
    "conditions": [{"when": {"metadata.x": "1"}, "then": "a"}],
    "targets": [leaf("a", name="a"), leaf("b", name="b")],
}


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (
            {"strategy": "roundrobin", "targets": [leaf("a")]},
            "models.m.strategy: expected one of fallback, loadbalance, conditional, "
            "least-latency, least-busy, got 'roundrobin'",
        ),
        (
            {"targets": [{"strategy": "random", "targets": [leaf("a")]}]},
            "models.m.targets[0].strategy: expected one of",
        ),
        (
            {**COND, "default": None},
            "models.m.default: conditional needs a default target",
        ),
        (
            {**COND, "default": "zzz"},
            "models.m.default: no target is named 'zzz' (named: a, b)",
        ),
        (
            {**COND, "conditions": [{"when": {"metadata.x": "1"}, "then": "nope"}]},
            "models.m.conditions[0].then: no target is named 'nope' (named: a, b)",
        ),
        (
            {**COND, "conditions": []},
            "models.m.conditions: conditional needs at least one condition",
        ),
        (
            {
                **COND,
                "conditions": [
                    {"when": {"metadata.x": "1"}, "then": "a"},
                    {"when": {"metadata.x": {"like": "1"}}, "then": "b"},
                ],
            },
            "models.m.conditions[1].when: metadata.x: unknown operator 'like'",
        ),
        (
            {**COND, "conditions": [{"when": {"metadata.x": {"regex": "a[b"}}, "then": "a"}]},
            "models.m.conditions[0].when: metadata.x: invalid regex 'a[b'",
        ),
        (
            {**COND, "conditions": [{"when": {"meta.x": "1"}, "then": "a"}]},
            "models.m.conditions[0].when: meta.x: unknown field 'meta.x'",
        ),
        (
            {**COND, "conditions": [{"when": {}, "then": "a"}]},
            "models.m.conditions[0].when: a condition needs at least one field",
        ),
        (
            {"targets": [leaf("a", name="x"), leaf("b"), leaf("c", name="x")]},
            "models.m.targets[2].name: 'x' names targets[0] too",
        ),
        (
            {"sticky": "metadata.user", "targets": [leaf("a")]},
            "models.m.sticky: only a loadbalance strategy has a sticky assignment",
        ),
        (
            {"strategy": "least-busy", "sticky": "metadata.user", "targets": [leaf("a")]},
            "models.m.sticky: only a loadbalance strategy has a sticky assignment",
        ),
        (
            {"strategy": "loadbalance", "sticky": "metadata.", "targets": [leaf("a")]},
            "models.m.sticky: 'metadata' needs a name after the dot",
        ),
        (
            {"conditions": [{"when": {"model": "x"}, "then": "a"}], "targets": [leaf("a")]},
            "models.m.conditions: only a conditional strategy has this",
        ),
        (
            {"default": "a", "targets": [leaf("a", name="a")]},
            "models.m.default: only a conditional strategy has this",
        ),
        (
            {"targets": [leaf("a", strategy="loadbalance")]},
            "models.m.targets[0].strategy: a strategy needs targets of its own",
        ),
        (
            {"targets": [leaf("a", sticky="metadata.user")]},
            "models.m.targets[0].sticky: only a strategy with targets has this",
        ),
        (
            {"targets": [{"provider": "p", "targets": [leaf("a")]}]},
            "models.m.targets[0].provider: a target with its own targets is a strategy",
        ),
        (
            {"targets": [{"model": "x", "targets": [leaf("a")]}]},
            "models.m.targets[0].model: a target with its own targets is a strategy",
        ),
        (
            {"targets": [{"strategy": "loadbalance", "targets": []}]},
            "models.m.targets[0].targets: at least one target is required",
        ),
        (
            {"targets": [{"model": "x"}]},
            "models.m.targets[0]: a target needs a provider (or targets of its own)",
        ),
        (
            {"targets": [{"targets": [{"provider": "nope"}]}]},
            "models.m.targets[0].targets[0].provider: unknown provider 'nope' (known: p, q)",
        ),
        (
            {"strategy": "loadbalance", "targets": [leaf("a", weight=0), leaf("b", weight=0)]},
            "models.m.targets: loadbalance needs a target with a weight above 0",
        ),
        (
            {"targets": [leaf("a", weight=-1)]},
            "models.m.targets[0].weight: cannot be negative",
        ),
        (
            {"targets": [leaf("a", region="  ")]},
            "models.m.targets[0].region: cannot be empty",
        ),
        (
            {"breaker": {"failures": 4, "window": 3}, "targets": [leaf("a")]},
            "models.m.breaker.failures: must be between 1 and window (3)",
        ),
        (
            {"breaker": {"failures": 0}, "targets": [leaf("a")]},
            "models.m.breaker.failures: must be between 1 and window (10)",
        ),
        (
            {"breaker": {"failures": 5, "window": 65}, "targets": [leaf("a")]},
            "models.m.breaker.window: must be between 1 and 64",
        ),
        (
            {"targets": [{"breaker": {"window": 0}, "targets": [leaf("a")]}]},
            "models.m.targets[0].breaker.window: must be between 1 and 64",
        ),
        (
            {"targets": [leaf("a", breaker={"probes": 0})]},
            "models.m.targets[0].breaker.probes: must be at least 1",
        ),
        (
            {"timeout": {"total": "10s", "first_token": "11s"}, "targets": [leaf("a")]},
            "models.m.timeout.first_token: cannot exceed total",
        ),
        (
            {"targets": [leaf("a", timeout={"total": 1, "first_token": "1500ms"})]},
            "models.m.targets[0].timeout.first_token: cannot exceed total",
        ),
        (
            {"targets": [{"targets": [leaf("a", override_params={"model": "x"})]}]},
            "models.m.targets[0].targets[0].override_params.model: decides routing",
        ),
        (
            {"targets": [{"override_params": {"stream": True}, "targets": [leaf("a")]}]},
            "models.m.targets[0].override_params.stream: decides routing",
        ),
        (
            {"targets": [{"targets": [leaf("a", fallback_on=[200])]}]},
            "models.m.targets[0].targets[0].fallback_on: 200 is not an HTTP error status",
        ),
        (
            {"targets": [{"retry": {"attempts": 0}, "targets": [leaf("a")]}]},
            "models.m.targets[0].retry.attempts: must be at least 1",
        ),
    ],
)
def test_validator_errors(model: dict[str, object], expected: str) -> None:
    errs = errors(model)
    assert any(e.startswith(expected) for e in errs), errs


def test_validator_reports_every_tree_error_at_once() -> None:
    errs = errors(
        {
            "strategy": "conditional",
            "conditions": [{"when": {"metadata.x": {"bogus": 1}}, "then": "ghost"}],
            "targets": [
                leaf("a", name="a"),
                {"provider": "p", "targets": [leaf("b", breaker={"failures": 9, "window": 2})]},
                leaf("c", name="a"),
            ],
        }
    )
    for expected in (
        "models.m.default: conditional needs a default target",
        "models.m.conditions[0].then: no target is named 'ghost'",
        "models.m.conditions[0].when: metadata.x: unknown operator 'bogus'",
        "models.m.targets[2].name: 'a' names targets[0] too",
        "models.m.targets[1].provider: a target with its own targets is a strategy",
        "models.m.targets[1].targets[0].breaker.failures: must be between 1 and window (2)",
    ):
        assert any(e.startswith(expected) for e in errs), (expected, errs)


def test_a_valid_tree_validates_and_builds() -> None:
    cfg = validate(
        config(
            {
                "m": {
                    "strategy": "conditional",
                    "conditions": [
                        {"when": {"metadata.tier": {"in": ["pro", "team"]}}, "then": "pro"},
                        {
                            "when": {"header.x-n": {"gte": 5}, "model": {"regex": "^m$"}},
                            "then": "lb",
                        },
                    ],
                    "default": "pro",
                    "breaker": {"failures": 64, "window": 64},
                    "timeout": {"total": 10, "first_token": 10},
                    "targets": [
                        {
                            "name": "pro",
                            "strategy": "least-latency",
                            "targets": [leaf("a"), {"provider": "q", "model": "b"}],
                        },
                        {
                            "name": "lb",
                            "strategy": "loadbalance",
                            "sticky": "body.user",
                            "targets": [leaf("c", weight=0), leaf("d", region="eu", tags=["x"])],
                        },
                    ],
                }
            }
        ),
        env={},
    )
    r = Router(cfg).exact["m"]
    assert models(r.order(facts(headers={"x-n": "7"}))) == ["d"]
    assert set(models(r.order(facts(metadata={"tier": "team"})))) == {"a", "b"}


def test_default_fallback_and_retry_statuses_cover_overload() -> None:
    """By default every 5xx (Anthropic's 529 too) and 429 move on to the next target; 4xx
    other than 429 never do. Retries by default cover 529 as well."""
    t = route({"targets": [leaf("a"), leaf("b")]}).leaves[0]
    assert {429, 500, 501, 502, 503, 504, 529, 599} <= t.fallback_on
    assert not {400, 401, 403, 404, 413, 422} & t.fallback_on
    assert 529 in t.retry.on_status and 400 not in t.retry.on_status
