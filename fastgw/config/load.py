"""Load, interpolate and validate a configuration, reporting every error with its path."""

from __future__ import annotations

import fnmatch
import os
import re
import types
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import yaml

from ..api.openai import NOT_OVERRIDABLE
from ..catalog import check_overrides
from ..routing.conditions import Condition, FieldRef
from .budgetspec import budget_errors
from .keyspec import check_admin_token, key_errors, key_hash
from .schema import (
    STATE_BACKENDS,
    STRATEGIES,
    AccessConfig,
    GatewayConfig,
    TargetConfig,
    _StrategyFields,
)

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class ConfigError(Exception):
    """A configuration that cannot be used; ``errors`` holds one ``path: message`` per problem."""

    def __init__(self, errors: list[str], source: str = "config") -> None:
        self.errors = errors
        self.source = source
        super().__init__(f"{source}: " + "; ".join(errors))

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.errors)} error(s)"]
        lines.extend(f"  {e}" for e in self.errors)
        return "\n".join(lines)


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like ``"250ms"``, ``"2s"``, ``"10m"``, ``"1h"``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 500ms, 10m, got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m is None:
            raise ValueError(f"expected a duration such as 30s, 500ms, 10m, got {value!r}")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError(f"expected a duration such as 30s, 500ms, 10m, got {_kind(value)}")
    if seconds <= 0:
        raise ValueError("a duration must be greater than zero")
    return seconds


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Validator:
    """Walks raw data against the Struct types, converting and collecting *every* error."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.errors: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(f"{path or '<root>'}: {message}")

    def interpolate(self, value: str, path: str) -> str | None:
        missing: list[str] = []

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            got = self.env.get(name)
            if got is None or got == "":
                if default is not None:
                    return default
                missing.append(name)
                return ""
            return got

        out = _ENV_RE.sub(sub, value)
        if missing:
            self.fail(path, f"environment variable {', '.join(missing)} is not set")
            return None
        return out

    def value(self, data: object, tp: Any, path: str) -> Any:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            base, *meta = typing.get_args(tp)
            if "duration" in meta:
                if isinstance(data, str):
                    data = self.interpolate(data, path)
                    if data is None:
                        return None
                try:
                    return parse_duration(data)
                except ValueError as e:
                    self.fail(path, str(e))
                    return None
            return self.value(data, base, path)
        if origin in (typing.Union, types.UnionType):
            args = typing.get_args(tp)
            if data is None and type(None) in args:
                return None
            non_none = [a for a in args if a is not type(None)]
            if len(non_none) == 1:
                return self.value(data, non_none[0], path)
            raise TypeError(f"unsupported union in schema: {tp}")  # pragma: no cover
        if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
            return self.struct(data, tp, path)
        if origin is dict:
            if not isinstance(data, dict):
                self.fail(path, f"expected a mapping, got {_kind(data)}")
                return None
            _, vt = typing.get_args(tp)
            out = {}
            for k, v in data.items():
                if not isinstance(k, str):
                    self.fail(path, f"keys must be strings, got {_kind(k)}")
                    continue
                out[k] = self.value(v, vt, _join(path, k))
            return out
        if origin is list:
            if not isinstance(data, list):
                self.fail(path, f"expected a list, got {_kind(data)}")
                return None
            (et,) = typing.get_args(tp)
            return [self.value(v, et, f"{path}[{i}]") for i, v in enumerate(data)]
        if origin is typing.Literal:
            allowed = typing.get_args(tp)
            if data not in allowed:
                choices = ", ".join(repr(a) for a in allowed)
                self.fail(path, f"expected one of {choices}, got {data!r}")
                return None
            return data
        if tp is object:  # free-form (e.g. request parameters): any YAML value
            return data
        if isinstance(data, str) and tp is not str:
            interpolated = self.interpolate(data, path)
            if interpolated is None:
                return None
            try:  # "${PORT}" and friends: a YAML scalar from a string
                data = yaml.safe_load(interpolated)
            except yaml.YAMLError:
                data = interpolated
        if tp is str:
            if not isinstance(data, str):
                self.fail(path, f"expected a string, got {_kind(data)}")
                return None
            return self.interpolate(data, path)
        if tp is bool:
            if not isinstance(data, bool):
                self.fail(path, f"expected true or false, got {_kind(data)}")
                return None
            return data
        if tp is int:
            if isinstance(data, bool) or not isinstance(data, int):
                self.fail(path, f"expected an integer, got {_kind(data)}")
                return None
            return data
        if tp is float:
            if isinstance(data, bool) or not isinstance(data, int | float):
                self.fail(path, f"expected a number, got {_kind(data)}")
                return None
            return float(data)
        raise TypeError(f"unsupported type in schema: {tp}")  # pragma: no cover

    def struct(self, data: object, cls: type[msgspec.Struct], path: str) -> Any:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail(path, f"expected a mapping, got {_kind(data)}")
            return None
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = {f.name: f for f in msgspec.structs.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key in data:
            if key not in fields:
                hint = _closest(str(key), list(fields))
                extra = f" (did you mean {hint!r}?)" if hint else ""
                known = ", ".join(fields)
                self.fail(_join(path, str(key)), f"unknown field{extra}; known fields: {known}")
        ok = True
        for name, f in fields.items():
            if name in data:
                before = len(self.errors)
                kwargs[name] = self.value(data[name], hints[name], _join(path, name))
                ok = ok and len(self.errors) == before
            elif f.required:
                self.fail(_join(path, name), "required field is missing")
                ok = False
        if not ok:
            return None
        return cls(**kwargs)


def _closest(word: str, options: list[str]) -> str | None:
    import difflib

    got = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return got[0] if got else None


#: Headers the upstream client writes itself (framing, routing): not settable per provider.
_GATEWAY_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "x-request-id"}
)


def _check_kinds(
    data: object, kinds: Collection[str], fail: typing.Callable[[str, str], None]
) -> None:
    """Provider kinds against those that exist, on the raw data (so the error is reported
    beside every other one, even when the rest of the file does not validate)."""
    providers = data.get("providers") if isinstance(data, dict) else None
    if not isinstance(providers, dict):
        return
    for name, p in providers.items():
        kind = p.get("kind") if isinstance(p, dict) else None
        if isinstance(kind, str) and kind not in kinds:
            hint = _closest(kind, list(kinds))
            extra = f" (did you mean {hint!r}?)" if hint else ""
            known = ", ".join(sorted(kinds))
            fail(f"providers.{name}.kind", f"unknown kind {kind!r}{extra}; known: {known}")


def _semantic_checks(cfg: GatewayConfig, fail: typing.Callable[[str, str], None]) -> None:
    s = cfg.server
    if not 0 < s.port < 65536:
        fail("server.port", f"must be between 1 and 65535, got {s.port}")
    if s.workers < 1:
        fail("server.workers", f"must be at least 1, got {s.workers}")
    if s.backlog < 1:
        fail("server.backlog", f"must be at least 1, got {s.backlog}")
    if s.max_concurrent_requests < 1:
        fail("server.max_concurrent_requests", "must be at least 1")
    if s.max_body_bytes < 1:
        fail("server.max_body_bytes", "must be greater than zero")
    if s.max_event_bytes < 1024:
        fail("server.max_event_bytes", "must be at least 1024")
    for name, p in cfg.providers.items():
        url = urlsplit(p.base_url or "https://default")
        if url.scheme not in ("http", "https") or not url.hostname:
            fail(f"providers.{name}.base_url", f"expected an http(s) URL, got {p.base_url!r}")
        if p.max_connections < 1:
            fail(f"providers.{name}.max_connections", "must be at least 1")
        if p.key_passthrough:
            if p.api_key:
                fail(
                    f"providers.{name}.api_key",
                    "a key_passthrough provider uses each caller's own key: omit api_key",
                )
            if p.kind == "bedrock":
                fail(f"providers.{name}.key_passthrough", "not supported for bedrock (SigV4)")
        for h, value in p.headers.items():
            if not h or any(c in h for c in " :\r\n"):
                fail(f"providers.{name}.headers", f"invalid header name {h!r}")
            elif h.lower() in _GATEWAY_HEADERS:
                fail(f"providers.{name}.headers.{h}", "is set by the gateway itself")
            elif any(c in value for c in "\r\n\0"):
                fail(f"providers.{name}.headers.{h}", "a header value cannot contain CR, LF or NUL")
    st = cfg.state
    if st.backend not in STATE_BACKENDS:
        fail("state.backend", f"expected one of {', '.join(STATE_BACKENDS)}, got {st.backend!r}")
    if st.on_error not in ("open", "closed"):
        fail("state.on_error", f"expected 'open' or 'closed', got {st.on_error!r}")
    if st.entries < 64:
        fail("state.entries", "must be at least 64")
    if not st.redis_url.startswith(("redis://", "rediss://", "unix://")):
        fail("state.redis_url", f"expected a redis:// or rediss:// URL, got {st.redis_url!r}")
    if cfg.admin is not None and (problem := check_admin_token(cfg.admin.token)):
        fail("admin.token", problem)
    names: set[str] = set()
    hashes: dict[str, str] = {}
    for i, k in enumerate(cfg.keys):
        path = f"keys[{i}]"
        if not k.name:
            fail(f"{path}.name", "cannot be empty")
        elif k.name in names:
            fail(f"{path}.name", f"another key is named {k.name!r}")
        names.add(k.name)
        for field, message in key_errors(k):
            fail(f"{path}.{field}", message)
        digest = key_hash(k.key) if k.key is not None else k.hash
        if digest is not None:
            if digest in hashes:
                fail(f"{path}", f"the same key as {hashes[digest]!r}")
            hashes[digest] = k.name
        if k.team is not None and k.team not in cfg.teams:
            known = ", ".join(cfg.teams) or "none defined"
            fail(f"{path}.team", f"unknown team {k.team!r} (teams: {known})")
    limits = [("limits", cfg.limits)]
    limits += [(f"models.{n}.limits", m.limits) for n, m in cfg.models.items() if m.limits]
    limits += [(f"teams.{n}.limits", t.limits) for n, t in cfg.teams.items() if t.limits]
    limits += [(f"keys[{i}].limits", k.limits) for i, k in enumerate(cfg.keys) if k.limits]
    for path, lim in limits:
        for field in ("rpm", "tpm", "concurrency"):
            value = getattr(lim, field)
            if value is not None and value < 1:
                fail(f"{path}.{field}", "must be at least 1 (omit it for no limit)")
    _check_budgets(cfg, fail)
    if cfg.catalog.path is not None and not cfg.catalog.path.strip():
        fail("catalog.path", "cannot be empty (omit it for the default)")
    for path, message in check_overrides(cfg.catalog.models):
        fail(path, message)
    r = cfg.routing
    if r.max_metadata_bytes < 2:
        fail("routing.max_metadata_bytes", "must be at least 2")
    for mname, m in cfg.models.items():
        if not mname:
            fail("models", "a model name cannot be empty")
        if mname.count("*") > 1:
            fail(f"models.{mname}", "a model pattern may contain at most one '*'")
        _check_node(cfg, f"models.{mname}", m, m.targets, fail)


#: Longest ``budgets.flush_interval``: what a crash may lose of the settled spend.
MAX_FLUSH_INTERVAL = 300.0


def _check_budgets(cfg: GatewayConfig, fail: typing.Callable[[str, str], None]) -> None:
    """Every budget (keys', teams', tags'), the ledger settings, and per config key that
    its budgets can reroute it: a request is rerouted at most once, so the budgets of a key,
    its team and its tags must agree on one fallback model, which the key may use."""
    models = list(cfg.models)
    budgets = [(f"keys[{i}].budget", k.budget) for i, k in enumerate(cfg.keys) if k.budget]
    budgets += [(f"teams.{n}.budget", t.budget) for n, t in cfg.teams.items() if t.budget]
    budgets += [(f"budgets.tags.{n}", b) for n, b in cfg.budgets.tags.items()]
    for path, b in budgets:
        for field, message in budget_errors(b, models):
            fail(f"{path}.{field}", message)
    if any(not t.strip() for t in cfg.budgets.tags):
        fail("budgets.tags", "a tag name cannot be empty")
    if cfg.budgets.ledger is not None and not cfg.budgets.ledger.strip():
        fail("budgets.ledger", "cannot be empty (omit it for the default)")
    if cfg.budgets.flush_interval > MAX_FLUSH_INTERVAL:
        fail("budgets.flush_interval", f"must be at most {MAX_FLUSH_INTERVAL:g}s")
    for i, k in enumerate(cfg.keys):
        team = cfg.teams.get(k.team) if k.team else None
        owners = [("its own budget", k.budget)]
        owners.append((f"team {k.team!r}", team.budget if team else None))
        owners += [(f"tag {t!r}", cfg.budgets.tags.get(t)) for t in sorted(set(k.tags))]
        fallbacks = {
            who: b.fallback_model
            for who, b in owners
            if b is not None and b.on_exceed == "fallback" and b.fallback_model
        }
        if len(set(fallbacks.values())) > 1:
            listed = ", ".join(f"{m!r} ({who})" for who, m in fallbacks.items())
            fail(
                f"keys[{i}]",
                f"its budgets fall back to different models: {listed}; a request is "
                "rerouted at most once, so they must name the same fallback_model",
            )
        for who, m in fallbacks.items():
            if not _may_use(k, m) or (team is not None and not _may_use(team, m)):
                fail(
                    f"keys[{i}]",
                    f"may not use {m!r}, the fallback model of {who} (models / deny_models)",
                )


def _may_use(rules: AccessConfig, model: str) -> bool:
    """The model rules of a key or team, as ``fastgw.policy.keys.Rules`` applies them."""
    if any(fnmatch.fnmatchcase(model, p) for p in rules.deny_models):
        return False
    return not rules.models or any(fnmatch.fnmatchcase(model, p) for p in rules.models)


_LEAF_ONLY = ("provider", "model")
_NODE_ONLY = ("conditions", "default", "sticky")


def _check_node(
    cfg: GatewayConfig,
    path: str,
    node: _StrategyFields,
    targets: list[TargetConfig],
    fail: typing.Callable[[str, str], None],
) -> None:
    """A strategy node and, recursively, its targets."""
    strategy = node.strategy
    if not targets:
        fail(f"{path}.targets", "at least one target is required")
    if strategy not in STRATEGIES:
        fail(
            f"{path}.strategy",
            f"expected one of {', '.join(STRATEGIES)}, got {strategy!r}",
        )
    _check_settings(path, node, fail)
    names: dict[str, int] = {}
    for i, t in enumerate(targets):
        if t.name is not None:
            if t.name in names:
                fail(f"{path}.targets[{i}].name", f"{t.name!r} names targets[{names[t.name]}] too")
            names[t.name] = i
    if strategy == "loadbalance" and targets and not any(t.weight > 0 for t in targets):
        fail(f"{path}.targets", "loadbalance needs a target with a weight above 0")
    if node.sticky is not None:
        if strategy != "loadbalance":
            fail(f"{path}.sticky", "only a loadbalance strategy has a sticky assignment")
        try:
            FieldRef(node.sticky)
        except ValueError as e:
            fail(f"{path}.sticky", str(e))
    if strategy == "conditional":
        known = ", ".join(names) or "no target has a name"
        if node.default is None:
            fail(f"{path}.default", "conditional needs a default target (a target's name)")
        elif node.default not in names:
            fail(f"{path}.default", f"no target is named {node.default!r} (named: {known})")
        if not node.conditions:
            fail(f"{path}.conditions", "conditional needs at least one condition")
        for ci, c in enumerate(node.conditions):
            if c.then not in names:
                fail(
                    f"{path}.conditions[{ci}].then",
                    f"no target is named {c.then!r} (named: {known})",
                )
            try:
                Condition(c.when)
            except ValueError as e:
                fail(f"{path}.conditions[{ci}].when", str(e))
    else:
        for field in ("conditions", "default"):
            if getattr(node, field):
                fail(f"{path}.{field}", "only a conditional strategy has this")
    for i, t in enumerate(targets):
        tpath = f"{path}.targets[{i}]"
        if t.weight < 0:
            fail(f"{tpath}.weight", "cannot be negative")
        if t.targets is not None:
            for field in _LEAF_ONLY:
                if getattr(t, field) is not None:
                    fail(f"{tpath}.{field}", "a target with its own targets is a strategy")
            _check_node(cfg, tpath, t, t.targets, fail)
            continue
        if t.provider is None:
            fail(f"{tpath}", "a target needs a provider (or targets of its own)")
        elif t.provider not in cfg.providers:
            known = ", ".join(cfg.providers) or "none defined"
            fail(f"{tpath}.provider", f"unknown provider {t.provider!r} (known: {known})")
        if t.strategy != "fallback":
            fail(f"{tpath}.strategy", "a strategy needs targets of its own")
        for field in _NODE_ONLY:
            if getattr(t, field):
                fail(f"{tpath}.{field}", "only a strategy with targets has this")
        if t.model is not None and not t.model:
            fail(f"{tpath}.model", "cannot be empty")
        if t.region is not None and not t.region.strip():
            fail(f"{tpath}.region", "cannot be empty")
        _check_settings(tpath, t, fail)


def _check_settings(
    path: str, node: _StrategyFields, fail: typing.Callable[[str, str], None]
) -> None:
    """What any node may set: retries, fallback statuses, breaker, overrides."""
    if node.retry is not None:
        if node.retry.attempts < 1:
            fail(f"{path}.retry.attempts", "must be at least 1")
        for st in node.retry.on_status:
            if not 400 <= st <= 599:
                fail(f"{path}.retry.on_status", f"{st} is not an HTTP error status")
    for st in node.fallback_on or ():
        if not 400 <= st <= 599:
            fail(f"{path}.fallback_on", f"{st} is not an HTTP error status")
    b = node.breaker
    if b is not None:
        if not 1 <= b.window <= 64:
            fail(f"{path}.breaker.window", "must be between 1 and 64")
        if not 1 <= b.failures <= b.window:
            fail(f"{path}.breaker.failures", f"must be between 1 and window ({b.window})")
        if b.probes < 1:
            fail(f"{path}.breaker.probes", "must be at least 1")
    t = node.timeout
    if t is not None and t.first_token is not None and t.first_token > t.total:
        fail(f"{path}.timeout.first_token", "cannot exceed total")
    for key in node.override_params:
        if key in NOT_OVERRIDABLE:
            fail(
                f"{path}.override_params.{key}",
                "decides routing or the wire shape and cannot be overridden",
            )


def validate(
    data: object,
    env: Mapping[str, str] | None = None,
    source: str = "config",
    kinds: Collection[str] | None = None,
) -> GatewayConfig:
    """Build a GatewayConfig from parsed YAML/JSON data, or raise ConfigError with every error.
    ``kinds``: the provider kinds that exist (checked when given)."""
    v = _Validator(os.environ if env is None else env)
    cfg = v.struct(data, GatewayConfig, "")
    if kinds is not None:
        _check_kinds(data, kinds, v.fail)
    if cfg is not None:
        _semantic_checks(cfg, v.fail)
    if v.errors or cfg is None:
        raise ConfigError(v.errors, source)
    assert isinstance(cfg, GatewayConfig)
    return cfg


def load_config(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    kinds: Collection[str] | None = None,
) -> GatewayConfig:
    """Read a YAML (or JSON) file and validate it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"cannot read file: {e.strerror or e}"], str(p)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError([f"{where}invalid YAML: {problem}"], str(p)) from None
    return validate(data if data is not None else {}, env, str(p), kinds)
