"""Resolve the model a client asked for to the target that serves it.

Exact names are a dict lookup. Patterns with one ``*`` (``openai/*``, ``*``) are tried after,
longest literal part first; a target without ``model`` sends the part the ``*`` matched (or
the requested name) upstream.
"""

from __future__ import annotations

import random

import msgspec

from ..config import ConfigError
from ..config.schema import GatewayConfig, ModelConfig, TimeoutConfig
from ..providers import Provider, build_provider
from ..upstream import Timeouts
from ..upstream.wire import Wire


class Target:
    """One place a model is served: a provider, the upstream model name, timeouts."""

    __slots__ = (
        "label",
        "model",
        "overrides",
        "provider",
        "provider_header",
        "routing_headers",
        "timeouts",
        "wire",
    )

    def __init__(
        self,
        provider: Provider,
        wire: Wire,
        model: str | None,
        timeouts: TimeoutConfig,
        label: str,
        override_params: dict[str, object] | None = None,
    ) -> None:
        self.provider = provider
        #: Request fields set on every request to this target (None: removed), as raw JSON.
        self.overrides: dict[str, msgspec.Raw | None] = {
            k: None if v is None else msgspec.Raw(msgspec.json.encode(v))
            for k, v in (override_params or {}).items()
        }
        self.model = model
        self.label = label
        #: The response header naming this target (``x-fastgw-target``), built once.
        self.routing_headers = [(b"x-fastgw-target", label.encode())]
        self.provider_header = provider.name.encode()
        self.timeouts = Timeouts(timeouts.connect, timeouts.first_byte, timeouts.total)
        self.wire = wire


class Route:
    """A model's targets and how to use them: the strategy, retries, fallback statuses."""

    __slots__ = ("fallback_on", "name", "pattern", "retry", "strategy", "targets", "weights")

    def __init__(self, name: str, targets: list[Target], cfg: ModelConfig | None = None) -> None:
        self.name = name
        self.pattern = "*" in name
        self.targets = targets
        cfg = cfg or ModelConfig(targets=[])
        self.strategy = cfg.strategy
        self.fallback_on = frozenset(cfg.fallback_on)
        self.retry = cfg.retry
        self.weights = [t.weight for t in cfg.targets] or [1.0] * len(targets)

    def order(self) -> list[Target]:
        """The targets to try, first choice first."""
        if self.strategy != "loadbalance" or len(self.targets) == 1:
            return self.targets
        # weighted draw without replacement: the first is the pick, the rest its fallbacks
        keyed = [
            (random.random() ** (1.0 / w) if w > 0 else -1.0, i) for i, w in enumerate(self.weights)
        ]
        keyed.sort(reverse=True)
        return [self.targets[i] for k, i in keyed if k >= 0]

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt + 1``: exponential, full jitter."""
        r = self.retry
        return random.uniform(0, min(r.max_backoff, r.backoff * (2**attempt)))


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
            route = Route(name, self._targets(name, m, cfg), m)
            if "*" in name:
                prefix, _, suffix = name.partition("*")
                patterns.append((prefix, suffix, route))
            else:
                self.exact[name] = route
        patterns.sort(key=lambda p: len(p[0]) + len(p[1]), reverse=True)
        self.patterns = patterns

    def _targets(self, name: str, m: ModelConfig, cfg: GatewayConfig) -> list[Target]:
        out = []
        for i, t in enumerate(m.targets):
            pcfg = cfg.providers[t.provider]
            timeouts = _timeouts(m.timeout, pcfg.timeout)
            out.append(
                Target(
                    self.providers[t.provider],
                    self.wires[t.provider],
                    t.model,
                    timeouts,
                    f"{name}.targets[{i}]",
                    {**m.override_params, **t.override_params},
                )
            )
        return out

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
        return [(name, r.targets[0].provider.name) for name, r in self.exact.items()]
