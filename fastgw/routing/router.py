"""Resolve the model a client asked for to the target that serves it.

Exact names are a dict lookup. Patterns with one ``*`` (``openai/*``, ``*``) are tried after,
longest literal part first; a target without ``model`` sends the part the ``*`` matched (or
the requested name) upstream.

Each route is a strategy tree (``Node``) whose leaves are ``Target``s. Per request,
``Route.order`` gives the targets to try, first choice first; the attempt loop
(``fastgw.app``) walks it with each target's retries, fallback statuses and breaker.
"""

from __future__ import annotations

import hashlib
import random
import time

import msgspec

from ..api.errors import GatewayError
from ..config import ConfigError
from ..config.schema import (
    DEFAULT_FALLBACK_ON,
    BreakerConfig,
    GatewayConfig,
    RetryConfig,
    TargetConfig,
    TimeoutConfig,
    _StrategyFields,
)
from ..providers import Provider, build_provider
from ..upstream import Timeouts
from ..upstream.wire import Wire
from .conditions import Condition, FieldRef, RequestFacts, sticky_key
from .health import Breaker, Stats

_STATS_STRATEGIES = ("least-latency", "least-busy")
#: How a bring-your-own-key request's provider key is sent, by provider kind (the rest are
#: OpenAI-compatible: ``Authorization: Bearer``).
_PASSTHROUGH_AUTH = {
    "azure": ("api-key", "{key}"),
    "anthropic": ("x-api-key", "{key}"),
    "gemini": ("x-goog-api-key", "{key}"),
}


class Target:
    """One place a model is served: a provider, the upstream model name, its settings (the
    nearest node's retry, fallback statuses, timeouts, breaker) and its health."""

    __slots__ = (
        "breaker",
        "calls_failed",
        "calls_ok",
        "fallback_on",
        "label",
        "model",
        "name",
        "overrides",
        "passthrough",
        "provider",
        "provider_header",
        "region",
        "retry",
        "routing_headers",
        "spend_label",
        "stats",
        "tags",
        "timeouts",
        "wire",
    )

    def label_for(self, default_model: str) -> str:
        """``provider/model`` of a request served here (``default_model``: the model the
        request asked for, when the target names none)."""
        return self.spend_label or f"{self.provider.name}/{default_model}"

    def __init__(
        self,
        provider: Provider,
        wire: Wire,
        model: str | None,
        timeouts: TimeoutConfig,
        label: str,
        override_params: dict[str, object] | None = None,
        *,
        retry: RetryConfig | None = None,
        fallback_on: list[int] | None = None,
        breaker: BreakerConfig | None = None,
        stats: bool = False,
        region: str | None = None,
        tags: list[str] | None = None,
        name: str | None = None,
    ) -> None:
        self.provider = provider
        #: Request fields set on every request to this target (None: removed), as raw JSON.
        self.overrides: dict[str, msgspec.Raw | None] = {
            k: None if v is None else msgspec.Raw(msgspec.json.encode(v))
            for k, v in (override_params or {}).items()
        }
        self.model = model
        self.label = label
        self.name = name
        #: ``provider/model`` (what the spend ledger records), when the target names a model.
        self.spend_label = f"{provider.name}/{model}" if model else None
        #: The response header naming this target (``x-fastgw-target``), built once.
        self.routing_headers = [(b"x-fastgw-target", label.encode())]
        self.provider_header = provider.name.encode()
        self.timeouts = Timeouts(
            timeouts.connect, timeouts.first_byte, timeouts.total, timeouts.first_token
        )
        self.wire = wire
        self.retry = retry or RetryConfig()
        self.fallback_on = frozenset(DEFAULT_FALLBACK_ON if fallback_on is None else fallback_on)
        self.breaker = Breaker(breaker) if breaker is not None else None
        self.stats = Stats() if stats else None
        #: Calls that got an answer / failed (connection, timeout, 5xx, counted 429s).
        self.calls_ok = 0
        self.calls_failed = 0
        #: Bring-your-own-key provider: the auth header each request must supply, as
        #: (header name, value template with ``{key}``); None: the provider has its key.
        self.passthrough: tuple[str, str] | None = None
        self.region = region.strip().lower() if region else None
        self.tags = frozenset(t.strip().lower() for t in tags or ())

    def eligible(self, facts: RequestFacts) -> bool:
        """Does the target meet the request's region and tag requirements?"""
        regions = facts.require_region
        if regions is not None and self.region not in regions:
            return False
        return facts.require_tags <= self.tags

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt + 1``: exponential, full jitter."""
        r = self.retry
        return random.uniform(0, min(r.max_backoff, r.backoff * (2**attempt)))

    def describe(self) -> str:
        where = f", region {self.region}" if self.region else ""
        tags = f", tags {','.join(sorted(self.tags))}" if self.tags else ""
        return f"{self.label} ({self.provider.name}{where}{tags})"


def _unit(key: str, label: str) -> float:
    """A uniform number in (0, 1) from ``key`` and ``label`` (rendezvous hashing)."""
    h = hashlib.blake2b(f"{key}\0{label}".encode(), digest_size=8).digest()
    return (int.from_bytes(h, "big") + 1) / (2**64 + 2)


class Node:
    """A strategy over children (targets or nested nodes)."""

    __slots__ = (
        "children",
        "conditions",
        "default",
        "keys",
        "label",
        "leaves",
        "static",
        "sticky",
        "strategy",
        "weights",
    )

    def __init__(
        self,
        label: str,
        cfg: _StrategyFields,
        children: list[Node | Target],
        weights: list[float],
        names: dict[str, int],
    ) -> None:
        self.label = label
        self.strategy = cfg.strategy
        self.children = children
        self.weights = weights
        #: What a sticky draw hashes per child: its name, else its position — named targets
        #: keep their callers when targets are added or removed around them.
        by_index = {i: n for n, i in names.items()}
        self.keys = [by_index.get(i, f"#{i}") for i in range(len(children))]
        self.conditions = [(Condition(c.when), names[c.then]) for c in cfg.conditions]
        self.default = names[cfg.default] if cfg.default is not None else None
        self.sticky = FieldRef(cfg.sticky) if cfg.sticky else None
        self.leaves: list[Target] = []
        for c in children:
            self.leaves.extend(c.leaves if isinstance(c, Node) else [c])
        #: The order never changes (fallback all the way down): computed once.
        self.static: bool = self.strategy == "fallback" and all(
            c.static if isinstance(c, Node) else True for c in children
        )

    def order(self, facts: RequestFacts | None, now: float) -> list[Target]:
        """The targets to try for one request, first choice first."""
        if self.static:
            return self.leaves
        s = self.strategy
        if s == "conditional":
            pick = self.default
            if facts is not None:
                for cond, child in self.conditions:
                    if cond.holds(facts):
                        pick = child
                        break
            if pick is None:
                return []
            return _expand(self.children[pick], facts, now)
        if s == "fallback":
            idx = list(range(len(self.children)))
        elif s == "loadbalance":
            idx = self._draw(facts)
        else:
            idx = self._by_health(now)
        out: list[Target] = []
        for i in idx:
            out.extend(_expand(self.children[i], facts, now))
        return out

    def _draw(self, facts: RequestFacts | None) -> list[int]:
        """Weighted draw without replacement (Efraimidis–Spirakis): the first is the pick,
        the rest its fallbacks. With ``sticky`` and the field present, the draw is seeded by
        its value (weighted rendezvous hashing): a caller keeps its target."""
        weights = self.weights
        key = sticky_key(facts, self.sticky) if self.sticky is not None and facts else None
        if key is None:
            keyed = [
                (random.random() ** (1.0 / w) if w > 0 else -1.0, i) for i, w in enumerate(weights)
            ]
        else:
            keyed = [
                (_unit(key, self.keys[i]) ** (1.0 / w) if w > 0 else -1.0, i)
                for i, w in enumerate(weights)
            ]
        keyed.sort(reverse=True)
        return [i for k, i in keyed if k >= 0]

    def _by_health(self, now: float) -> list[int]:
        """least-latency: lowest latency estimate first (unknown = 0, so new or recovered
        targets get tried); least-busy: fewest calls in flight, then latency. Ties at random."""
        scored = []
        busy = self.strategy == "least-busy"
        for i, c in enumerate(self.children):
            leaves = c.leaves if isinstance(c, Node) else [c]
            stats = [t.stats for t in leaves if t.stats is not None]
            latency = min((st.latency(now) for st in stats), default=0.0)
            inflight = sum(st.inflight for st in stats)
            key = (inflight, latency) if busy else (latency, inflight)
            scored.append((key, random.random(), i))
        scored.sort()
        return [i for _, _, i in scored]


def _expand(child: Node | Target, facts: RequestFacts | None, now: float) -> list[Target]:
    return child.order(facts, now) if isinstance(child, Node) else [child]


class Route:
    """A public model name and its strategy tree."""

    __slots__ = ("fixed", "leaves", "name", "pattern", "root", "uses_facts")

    def __init__(self, name: str, root: Node) -> None:
        self.name = name
        self.pattern = "*" in name
        self.root = root
        self.leaves = root.leaves
        #: The order when it never changes (fallback all the way down).
        self.fixed: list[Target] | None = root.leaves if root.static else None

    @property
    def targets(self) -> list[Target]:
        return self.leaves

    def order(self, facts: RequestFacts | None = None) -> list[Target]:
        """The targets to try for one request, first choice first, restricted to those in the
        region and with the tags the request requires (403 when none is)."""
        order = self.fixed
        if order is None:
            order = self.root.order(facts, time.monotonic())
        if facts is not None and (facts.require_region is not None or facts.require_tags):
            eligible = [t for t in order if t.eligible(facts)]
            if not eligible:
                raise self._not_eligible(facts, order)
            return eligible
        return order

    def _not_eligible(self, facts: RequestFacts, order: list[Target]) -> GatewayError:
        want = []
        if facts.require_region is not None:
            want.append("region " + " or ".join(sorted(facts.require_region)))
        if facts.require_tags:
            want.append("tags " + ", ".join(sorted(facts.require_tags)))
        considered = "; ".join(t.describe() for t in order) or "none"
        return GatewayError(
            403,
            f"No target of model '{self.name}' meets the request's requirement "
            f"({' and '.join(want)}); the request was not sent anywhere else. "
            f"Targets considered: {considered}.",
            "permission_error",
            "no_eligible_target",
        )


def _timeouts(*layers: TimeoutConfig | None) -> TimeoutConfig:
    for t in layers:
        if t is not None:
            return t
    return TimeoutConfig()


class Router:
    def __init__(self, cfg: GatewayConfig) -> None:
        self.providers: dict[str, Provider] = {}
        errors: list[str] = []
        for name, p in cfg.providers.items():
            try:
                self.providers[name] = build_provider(name, p)
            except ConfigError as e:
                errors.extend(e.errors)
        if errors:
            raise ConfigError(errors)
        self.wires = {
            name: Wire(p.base_url, p.headers, cfg.providers[name].max_connections)
            for name, p in self.providers.items()
        }
        self.exact: dict[str, Route] = {}
        patterns: list[tuple[str, str, Route]] = []
        for name, m in cfg.models.items():
            route = Route(name, self._node(name, m, m.targets, cfg, _Inherited.root(m)))
            if "*" in name:
                prefix, _, suffix = name.partition("*")
                patterns.append((prefix, suffix, route))
            else:
                self.exact[name] = route
        patterns.sort(key=lambda p: len(p[0]) + len(p[1]), reverse=True)
        self.patterns = patterns

    def _node(
        self,
        label: str,
        cfg: _StrategyFields,
        targets: list[TargetConfig],
        gcfg: GatewayConfig,
        inherited: _Inherited,
    ) -> Node:
        children: list[Node | Target] = []
        names: dict[str, int] = {}
        stats = inherited.stats or cfg.strategy in _STATS_STRATEGIES
        for i, t in enumerate(targets):
            tlabel = f"{label}.targets[{i}]"
            own = inherited.under(t, stats)
            if t.name is not None:
                names[t.name] = i
            if t.targets is not None:
                children.append(self._node(tlabel, t, t.targets, gcfg, own))
                continue
            assert t.provider is not None  # checked by the config validator
            children.append(
                Target(
                    self.providers[t.provider],
                    self.wires[t.provider],
                    t.model,
                    _timeouts(own.timeout, gcfg.providers[t.provider].timeout),
                    tlabel,
                    own.override_params,
                    retry=own.retry,
                    fallback_on=own.fallback_on,
                    breaker=own.breaker,
                    stats=stats,
                    region=own.region,
                    tags=own.tags,
                    name=t.name,
                )
            )
            leaf = children[-1]
            assert isinstance(leaf, Target)
            if gcfg.providers[t.provider].key_passthrough:
                leaf.passthrough = _PASSTHROUGH_AUTH.get(
                    leaf.provider.kind, ("authorization", "Bearer {key}")
                )
        return Node(label, cfg, children, [t.weight for t in targets], names)

    def resolve(self, model: str) -> tuple[Route, str] | None:
        """The route for ``model`` and the name a target without ``model`` sends upstream."""
        route = self.exact.get(model)
        if route is not None:
            return route, model
        for prefix, suffix, route in self.patterns:
            if (
                len(model) > len(prefix) + len(suffix)
                and model.startswith(prefix)
                and model.endswith(suffix)
            ):
                return route, model[len(prefix) : len(model) - len(suffix)]
        return None

    def routes(self) -> list[Route]:
        return [*self.exact.values(), *(r for _, _, r in self.patterns)]

    def public_models(self) -> list[tuple[str, str]]:
        """Exact model names and the provider of their first target (for /v1/models)."""
        return [(name, r.leaves[0].provider.name) for name, r in self.exact.items()]

    def health(self) -> dict[str, object]:
        """Breaker state and statistics of the targets that keep any (``/readyz`` detail)."""
        now = time.monotonic()
        out: dict[str, object] = {}
        for route in self.routes():
            for t in route.leaves:
                if t.breaker is None and t.stats is None:
                    continue
                entry: dict[str, object] = {"provider": t.provider.name}
                if t.breaker is not None:
                    entry["breaker"] = t.breaker.snapshot(now)
                if t.stats is not None:
                    entry["inflight"] = t.stats.inflight
                    entry["latency_ewma_ms"] = round(t.stats.latency(now) * 1000, 3)
                out[t.label] = entry
        return out

    def metrics(self) -> str:
        """The routing series in Prometheus' text format (this worker's)."""
        now = time.monotonic()
        series: dict[str, list[str]] = {name: [] for name, _, _ in _METRICS}
        for route in self.routes():
            for t in route.leaves:
                labels = (
                    f'model="{_label(route.name)}",target="{_label(t.label)}",'
                    f'provider="{_label(t.provider.name)}"'
                )

                samples: list[tuple[str, object, str]] = [
                    ("fastgw_target_calls_total", t.calls_ok, ',outcome="ok"'),
                    ("fastgw_target_calls_total", t.calls_failed, ',outcome="failed"'),
                ]
                if t.breaker is not None:
                    samples.append(("fastgw_target_breaker_state", t.breaker.allow_state(now), ""))
                    samples.append(("fastgw_target_breaker_opened_total", t.breaker.opened, ""))
                if t.stats is not None:
                    st = t.stats
                    samples.append(("fastgw_target_inflight", st.inflight, ""))
                    latency = f"{st.latency(now):.6f}"
                    samples.append(("fastgw_target_latency_ewma_seconds", latency, ""))
                for name, value, extra in samples:
                    series[name].append(f"{name}{{{labels}{extra}}} {value}")
        lines = []
        for name, kind, help_text in _METRICS:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(series[name])
        return "\n".join(lines) + "\n"


_METRICS = (
    ("fastgw_target_calls_total", "counter", "Upstream calls per target and outcome."),
    (
        "fastgw_target_breaker_state",
        "gauge",
        "Circuit breaker state per target: 0 closed, 1 open, 2 half-open.",
    ),
    ("fastgw_target_breaker_opened_total", "counter", "Times the target's breaker opened."),
    ("fastgw_target_inflight", "gauge", "Calls in flight (targets under a least-* strategy)."),
    (
        "fastgw_target_latency_ewma_seconds",
        "gauge",
        "Latency estimate (EWMA; targets under a least-* strategy; 0 = unknown).",
    ),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Inherited:
    """Settings a node passes down: each one the nearest node's that sets it."""

    __slots__ = (
        "breaker",
        "fallback_on",
        "override_params",
        "region",
        "retry",
        "stats",
        "tags",
        "timeout",
    )

    def __init__(
        self,
        retry: RetryConfig | None,
        fallback_on: list[int] | None,
        timeout: TimeoutConfig | None,
        breaker: BreakerConfig | None,
        override_params: dict[str, object],
        stats: bool,
        region: str | None = None,
        tags: list[str] | None = None,
    ) -> None:
        self.retry = retry
        self.fallback_on = fallback_on
        self.timeout = timeout
        self.breaker = breaker
        self.override_params = override_params
        self.stats = stats
        #: A nested node's region applies to the targets below it that set none; its tags
        #: are added to theirs.
        self.region = region
        self.tags = tags or []

    @classmethod
    def root(cls, m: _StrategyFields) -> _Inherited:
        return cls(m.retry, m.fallback_on, m.timeout, m.breaker, dict(m.override_params), False)

    def under(self, t: TargetConfig, stats: bool) -> _Inherited:
        return _Inherited(
            t.retry or self.retry,
            t.fallback_on if t.fallback_on is not None else self.fallback_on,
            t.timeout or self.timeout,
            t.breaker or self.breaker,
            {**self.override_params, **t.override_params},
            stats,
            t.region or self.region,
            [*self.tags, *t.tags],
        )
