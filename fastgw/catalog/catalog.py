"""Parsing, validating and layering catalogs; looking models up; pricing a request.

A catalog is built in layers, each a document of ``ModelPatch`` entries applied over the
one below: the shipped file (``data/catalog.json``, every entry complete), then the
``catalog.path`` file (``fastgw catalog update`` writes it), then the ``catalog.models``
section of the configuration. A patch for a model the layers below have changes only the
fields it sets; a patch for a new name must be a complete entry. Every layer is validated
as a whole and either applies entirely or not at all (``CatalogError`` lists every problem).

A ``Catalog`` is immutable once built; ``CatalogHolder`` publishes a new one with a single
reference assignment, so a request that took ``holder.current`` prices itself against one
consistent catalog even while an update lands.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date
from importlib import resources
from types import MappingProxyType
from typing import Any

import msgspec

from .schema import (
    FEATURES,
    FORMAT_VERSION,
    MODALITIES,
    MODES,
    REQUIRED_FIELDS,
    CatalogError,
    LongContext,
    ModelEntry,
    ModelPatch,
    UnknownModelError,
)

__all__ = [
    "Catalog",
    "CatalogDiff",
    "CatalogHolder",
    "CatalogLayer",
    "apply",
    "check_overrides",
    "cost",
    "diff",
    "load",
    "model_card",
    "parse",
    "shipped",
]

Problems = list[tuple[str, str]]

_TOP_FIELDS = ("version", "as_of", "source", "models")
_PATCH_FIELDS = tuple(f.name for f in msgspec.structs.fields(ModelPatch))
_PROVIDER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MSGSPEC_PATH_RE = re.compile(r"^(?P<message>.*) - at `\$(?P<path>.*)`$", re.DOTALL)
_PER_MILLION = 1_000_000


@dataclasses.dataclass(frozen=True)
class CatalogLayer:
    """One parsed catalog document, not yet applied over anything."""

    models: dict[str, ModelPatch]
    as_of: str | None = None
    source: str | None = None


# -- parsing ---------------------------------------------------------------------------------


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a price can have")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique: a model listed twice would otherwise be decided
    silently by whichever copy comes last."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _json(data: bytes | str) -> Any:
    return json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return names.get(type(value), type(value).__name__)


def _suggest(word: str, options: Iterable[str]) -> str:
    got = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {got[0]!r}?)" if got else ""


def _check_date(value: str, path: str, problems: Problems) -> None:
    if not _DATE_RE.match(value):
        problems.append((path, f"expected a date YYYY-MM-DD, got {value!r}"))
        return
    try:
        date.fromisoformat(value)
    except ValueError:
        problems.append((path, f"{value!r} is not a calendar date"))


def _patch(name: str, raw: object, path: str, problems: Problems) -> ModelPatch | None:
    """One entry of a document's ``models``, type-checked (values are checked once merged)."""
    if not isinstance(raw, dict):
        problems.append((path, f"expected an object, got {_kind(raw)}"))
        return None
    before = len(problems)
    known = ", ".join(_PATCH_FIELDS)
    for key in raw:
        if key not in _PATCH_FIELDS:
            hint = _suggest(key, _PATCH_FIELDS)
            problems.append((f"{path}.{key}", f"unknown field{hint}; known: {known}"))
    if len(problems) > before:
        return None
    try:
        return msgspec.convert(raw, ModelPatch)
    except msgspec.ValidationError as e:
        m = _MSGSPEC_PATH_RE.match(str(e))
        if m is None:  # pragma: no cover - msgspec always says where
            problems.append((path, str(e)))
        else:
            message = m["message"].replace("`", "")
            problems.append((f"{path}{m['path']}", message[:1].lower() + message[1:]))
        return None


def parse(data: bytes | str, source: str = "catalog") -> CatalogLayer:
    """A catalog document (JSON, ``{"version": 1, "as_of": ..., "models": {...}}``), checked
    for shape and types; raises ``CatalogError`` naming every bad entry and field."""
    try:
        raw = _json(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CatalogError([("", f"not valid JSON: {e}")], source) from None
    if not isinstance(raw, dict):
        raise CatalogError([("", f"expected a JSON object, got {_kind(raw)}")], source)
    problems: Problems = []
    for key in raw:
        if key not in _TOP_FIELDS:
            hint = _suggest(key, _TOP_FIELDS)
            problems.append((key, f"unknown field{hint}; known: {', '.join(_TOP_FIELDS)}"))
    version = raw.get("version")
    if "version" not in raw:
        problems.append(("version", f"required (this fastgw reads version {FORMAT_VERSION})"))
    elif version != FORMAT_VERSION or isinstance(version, bool):
        problems.append(
            ("version", f"unsupported version {version!r}; this fastgw reads {FORMAT_VERSION}")
        )
    as_of = raw.get("as_of")
    if as_of is not None:
        if isinstance(as_of, str):
            _check_date(as_of, "as_of", problems)
        else:
            problems.append(("as_of", f"expected a date YYYY-MM-DD, got {_kind(as_of)}"))
    note = raw.get("source")
    if note is not None and not isinstance(note, str):
        problems.append(("source", f"expected a string, got {_kind(note)}"))
    models = raw.get("models")
    patches: dict[str, ModelPatch] = {}
    if not isinstance(models, dict):
        what = "required" if "models" not in raw else f"expected an object, got {_kind(models)}"
        problems.append(("models", what))
    else:
        for name, entry in models.items():
            patch = _patch(name, entry, f"models.{name}", problems)
            if patch is not None:
                patches[name] = patch
    if problems:
        raise CatalogError(problems, source)
    return CatalogLayer(
        patches,
        as_of if isinstance(as_of, str) else None,
        note if isinstance(note, str) else None,
    )


# -- validating one entry --------------------------------------------------------------------


def _check_name(value: str, path: str, what: str, problems: Problems) -> None:
    if not value or len(value) > 256:
        problems.append((path, f"{what} must be 1 to 256 characters"))
    elif any(c.isspace() or not c.isprintable() or c == "*" for c in value):
        problems.append((path, f"{what} {value!r} contains a space, control character or '*'"))


def _check_price(value: float, path: str, problems: Problems) -> None:
    if not math.isfinite(value) or value < 0:
        problems.append((path, f"must be a finite number >= 0 (USD per million), got {value}"))


def _check_list(
    values: tuple[str, ...], known: tuple[str, ...] | None, path: str, problems: Problems
) -> None:
    seen: set[str] = set()
    for v in values:
        if known is not None and v not in known:
            problems.append(
                (path, f"unknown value {v!r}{_suggest(v, known)}; known: {', '.join(known)}")
            )
        elif known is None and (not v or any(c.isspace() for c in v)):
            problems.append((path, f"{v!r} is empty or contains a space"))
        if v in seen:
            problems.append((path, f"{v!r} is listed twice"))
        seen.add(v)


def _check_prices(
    input_: float, output: float, cached: float | None, path: str, problems: Problems
) -> None:
    _check_price(input_, f"{path}.input", problems)
    _check_price(output, f"{path}.output", problems)
    if cached is not None:
        _check_price(cached, f"{path}.cached_input", problems)
        if 0 <= input_ < cached < math.inf:
            problems.append(
                (f"{path}.cached_input", f"{cached} exceeds input ({input_}): it is a discount")
            )


def _check_entry(e: ModelEntry, path: str, problems: Problems) -> None:
    """Every value of a complete entry: prices, sizes, the closed vocabularies, the date."""
    _check_name(e.name, path, "a model name", problems)
    for p in e.providers:
        if not _PROVIDER_RE.match(p):
            problems.append((f"{path}.providers", f"{p!r} is not a provider kind (a-z, 0-9, -, _)"))
    if len(set(e.providers)) != len(e.providers):
        problems.append((f"{path}.providers", "a provider is listed twice"))
    _check_prices(e.input, e.output, e.cached_input, path, problems)
    if e.context_window < 1:
        problems.append((f"{path}.context_window", f"must be at least 1, got {e.context_window}"))
    m = e.max_output_tokens
    if m is not None:
        least = 1 if e.mode == "chat" else 0
        if m < least:
            problems.append((f"{path}.max_output_tokens", f"must be at least {least}, got {m}"))
        elif m > e.context_window:
            problems.append(
                (f"{path}.max_output_tokens", f"{m} exceeds context_window ({e.context_window})")
            )
    if e.mode not in MODES:
        problems.append(
            (
                f"{path}.mode",
                f"unknown mode {e.mode!r}{_suggest(e.mode, MODES)}; known: {', '.join(MODES)}",
            )
        )
    if not e.modalities:
        problems.append((f"{path}.modalities", "at least one (usually 'text')"))
    _check_list(e.modalities, MODALITIES, f"{path}.modalities", problems)
    _check_list(e.features, FEATURES, f"{path}.features", problems)
    _check_list(e.regions, None, f"{path}.regions", problems)
    if e.deprecation is not None:
        _check_date(e.deprecation, f"{path}.deprecation", problems)
    for alias in e.aliases:
        _check_name(alias, f"{path}.aliases", "an alias", problems)
        if alias.casefold() == e.name.casefold():
            problems.append((f"{path}.aliases", f"{alias!r} is the model's own name"))
    folded = [a.casefold() for a in e.aliases]
    if len(set(folded)) != len(folded):
        problems.append((f"{path}.aliases", "an alias is listed twice"))
    lc = e.long_context
    if lc is not None:
        lpath = f"{path}.long_context"
        if not 1 <= lc.threshold < e.context_window:
            problems.append(
                (
                    f"{lpath}.threshold",
                    f"must be between 1 and context_window - 1 ({e.context_window - 1}), "
                    f"got {lc.threshold}",
                )
            )
        _check_prices(lc.input, lc.output, lc.cached_input, lpath, problems)


# -- layering --------------------------------------------------------------------------------


def _blank(name: str) -> ModelEntry:
    """The defaults a new entry starts from (``REQUIRED_FIELDS`` are checked to be set)."""
    return ModelEntry(
        name=name,
        providers=(),
        input=0.0,
        output=0.0,
        cached_input=None,
        context_window=0,
        max_output_tokens=None,
        mode="chat",
        modalities=("text",),
        features=(),
        regions=(),
        deprecation=None,
        aliases=(),
        long_context=None,
    )


def _merge(
    name: str, old: ModelEntry | None, patch: ModelPatch, path: str, problems: Problems
) -> ModelEntry | None:
    if old is None:
        missing = [f for f in REQUIRED_FIELDS if getattr(patch, f) is None]
        if missing:
            problems.append(
                (path, f"a new model must set {', '.join(missing)} (no lower catalog layer has it)")
            )
            return None
    changes: dict[str, Any] = {}
    for field in _PATCH_FIELDS:
        value = getattr(patch, field)
        if value is not None:
            changes[field] = tuple(value) if isinstance(value, list) else value
    entry = msgspec.structs.replace(old if old is not None else _blank(name), **changes)
    before = len(problems)
    _check_entry(entry, path, problems)
    return entry if len(problems) == before else None


def _index(
    entries: Mapping[str, ModelEntry], paths: Mapping[str, str], problems: Problems
) -> dict[str, str]:
    """Every name and alias, casefolded → the entry's name. A clash is reported on the entry
    listed later (``paths`` puts the ones a layer touched last, so that layer is blamed)."""
    index: dict[str, str] = {}
    aliases: set[str] = set()
    for name in sorted(entries, key=lambda n: n in paths):
        key = name.casefold()
        other = index.get(key)
        if other is not None:
            path = paths.get(name, f"models.{name}")
            problems.append((path, f"{name!r} differs only in case from {other!r}"))
            continue
        index[key] = name
    for name in sorted(entries, key=lambda n: n in paths):
        path = paths.get(name, f"models.{name}")
        for alias in entries[name].aliases:
            key = alias.casefold()
            other = index.get(key)
            if other is None:
                index[key] = name
                aliases.add(key)
            elif key in aliases:
                problems.append((f"{path}.aliases", f"{alias!r} is already an alias of {other!r}"))
            elif other in paths and name not in paths:  # the layer added a model by that name
                problems.append((paths[other], _alias_clash(other, name)))
            else:
                problems.append((f"{path}.aliases", f"{alias!r} is the name of another model"))
    return index


def _alias_clash(name: str, owner: str) -> str:
    if owner.casefold() == name.casefold():
        return f"{name!r} differs only in case from {owner!r}"
    return (
        f"{name!r} is an alias of {owner!r}: change {owner!r}, or remove the alias from "
        f"{owner!r} to make {name!r} a model of its own"
    )


def apply(
    base: Catalog | None,
    patches: Mapping[str, ModelPatch],
    *,
    where: str = "models",
    source: str = "catalog",
    as_of: str | None = None,
) -> Catalog:
    """``patches`` applied over ``base`` (None: nothing below; every entry must be complete).
    Error paths start with ``where`` (``catalog.models`` for the config section)."""
    entries: dict[str, ModelEntry] = dict(base.entries) if base is not None else {}
    problems: Problems = []
    touched: dict[str, str] = {}
    for name, patch in patches.items():
        path = f"{where}.{name}"
        old = entries.get(name)
        owner = base.alias_owner(name) if old is None and base is not None else None
        if owner is not None and any(getattr(patch, f) is None for f in REQUIRED_FIELDS):
            # a partial patch meant for the model this name is an alias of
            problems.append((path, _alias_clash(name, owner)))
            continue
        entry = _merge(name, old, patch, path, problems)
        if entry is not None:
            entries[name] = entry
            touched[name] = path
    if problems:
        raise CatalogError(problems, source)
    sources = (*base.sources, source) if base is not None else (source,)
    return Catalog(
        entries,
        as_of=as_of or (base.as_of if base is not None else None),
        sources=sources,
        _paths=touched,
        _source=source,
    )


def load(
    src: str | os.PathLike[str] | bytes,
    *,
    base: Catalog | None = None,
    source: str | None = None,
) -> Catalog:
    """A catalog document — a file path or its bytes — validated and applied over ``base``
    (None: the document must be complete on its own, as the shipped file is)."""
    if isinstance(src, bytes):
        label = source or "catalog"
        data = src
    else:
        label = source or os.fspath(src)
        try:
            with open(src, "rb") as f:
                data = f.read()
        except OSError as e:
            raise CatalogError([("", f"cannot read: {e.strerror or e}")], label) from None
    layer = parse(data, label)
    return apply(base, layer.models, source=label, as_of=layer.as_of)


@functools.cache
def shipped() -> Catalog:
    """The catalog that comes with fastgw (``fastgw/catalog/data/catalog.json``)."""
    data = resources.files(__package__).joinpath("data", "catalog.json").read_bytes()
    return load(data, source="shipped catalog")


def check_overrides(patches: Mapping[str, ModelPatch], base: Catalog | None = None) -> Problems:
    """The problems of the config's ``catalog.models`` applied over ``base`` (default: the
    shipped catalog), with ``catalog.models.<name>.<field>`` paths; empty when it is fine."""
    if not patches:
        return []
    try:
        apply(base if base is not None else shipped(), patches, where="catalog.models")
    except CatalogError as e:
        return e.problems
    return []


# -- the catalog -----------------------------------------------------------------------------

#: Bedrock cross-region inference profiles put a geography before the model id.
_GEO_RE = re.compile(r"^(?:us|us-gov|eu|apac|global|jp|au|ca)\.(?=[^.]+\.)")
#: A dated snapshot: ``-2024-08-06``, ``-20250929`` or Vertex AI's ``@20250929``.
_DATE_SUFFIX_RE = re.compile(r"(?:-20\d\d-\d\d-\d\d|[-@]20\d{6})$")


def _forms(name: str) -> Iterator[str]:
    """The names ``Catalog.get`` tries, in order (docs/catalog.md, "Lookup")."""
    forms = [name]
    rest = name
    while "/" in rest:  # provider prefixes: openai/gpt-4o, openrouter/openai/gpt-4o
        rest = rest.split("/", 1)[1]
        if rest:
            forms.append(rest)
    for form in list(forms):
        m = _GEO_RE.match(form)
        if m:
            forms.append(form[m.end() :])
    yield from forms
    for form in forms:
        undated = _DATE_SUFFIX_RE.sub("", form)
        if undated != form and undated:
            yield undated


class Catalog:
    """Validated entries and the index of their names and aliases. Immutable: build a new one
    (``apply``/``load``) and swap it in through a ``CatalogHolder``."""

    __slots__ = ("_by_name", "_entries", "_index", "as_of", "sources")

    def __init__(
        self,
        entries: Mapping[str, ModelEntry],
        *,
        as_of: str | None = None,
        sources: tuple[str, ...] = (),
        _paths: Mapping[str, str] | None = None,
        _source: str = "catalog",
    ) -> None:
        problems: Problems = []
        for name, e in entries.items():
            if e.name != name:
                problems.append((f"models.{name}", f"the entry is named {e.name!r}"))
        self._index = _index(entries, _paths or {}, problems)
        if problems:
            raise CatalogError(problems, _source)
        self._by_name = dict(entries)
        self._entries: Mapping[str, ModelEntry] = MappingProxyType(self._by_name)
        #: The date of the newest layer that carries one.
        self.as_of = as_of
        #: The layers it was built from, lowest first.
        self.sources = sources

    @property
    def entries(self) -> Mapping[str, ModelEntry]:
        """Canonical name → entry, in the order the layers list them."""
        return self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def alias_owner(self, name: str) -> str | None:
        """The entry ``name`` is an alias of (exactly, ignoring case), if it is one."""
        owner = self._index.get(name.casefold())
        return owner if owner is not None and owner != name else None

    def get(self, name: str) -> ModelEntry | None:
        """The entry for ``name``: its canonical name or an alias (ignoring case), else the
        same after dropping provider prefixes (``openai/``), a Bedrock geography (``us.``)
        and finally a date suffix (``-2024-08-06``, ``-20250929``, ``@20250929``)."""
        entry = self._by_name.get(name)
        if entry is not None:
            return entry
        for form in _forms(name):
            owner = self._index.get(form.casefold())
            if owner is not None:
                return self._by_name[owner]
        return None

    def resolve(self, name: str) -> ModelEntry:
        """``get``, raising ``UnknownModelError`` for a name it has no entry for."""
        entry = self.get(name)
        if entry is None:
            raise UnknownModelError(name)
        return entry

    def models(self, provider: str | None = None) -> list[ModelEntry]:
        """The entries, optionally only those a provider kind serves."""
        return [e for e in self._entries.values() if provider is None or provider in e.providers]

    def suggest(self, name: str, n: int = 3) -> list[str]:
        """Names close to an unknown one, for error messages."""
        return difflib.get_close_matches(name, list(self._entries), n=n, cutoff=0.5)

    def cost(
        self,
        model: str | ModelEntry,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
    ) -> float:
        """USD for one request to ``model`` (a name is resolved as by ``resolve``); see
        ``cost`` for the formula."""
        entry = model if isinstance(model, ModelEntry) else self.resolve(model)
        return cost(entry, prompt_tokens, completion_tokens, cached_tokens)


def cost(
    model: ModelEntry, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
) -> float:
    """USD for one request, computed in float exactly as

        input / 1e6 * (prompt_tokens - cached_tokens)
        + cached_input / 1e6 * cached_tokens
        + output / 1e6 * completion_tokens

    ``cached_tokens`` are the part of ``prompt_tokens`` the provider served from its prompt
    cache (OpenAI's ``prompt_tokens_details.cached_tokens``; for Anthropic the caller adds
    ``cache_read_input_tokens`` to the prompt tokens first). Without a ``cached_input`` price
    they bill at ``input``. When the model has a ``long_context`` tier and ``prompt_tokens``
    exceeds its threshold, the tier's prices replace the entry's for the whole request.
    Reasoning tokens are completion tokens."""
    if prompt_tokens < 0 or completion_tokens < 0 or cached_tokens < 0:
        raise ValueError("token counts cannot be negative")
    if cached_tokens > prompt_tokens:
        raise ValueError(
            f"cached_tokens ({cached_tokens}) are part of prompt_tokens ({prompt_tokens})"
        )
    tier: ModelEntry | LongContext = model
    lc = model.long_context
    if lc is not None and prompt_tokens > lc.threshold:
        tier = lc
    cached_price = tier.cached_input if tier.cached_input is not None else tier.input
    return (
        tier.input / _PER_MILLION * (prompt_tokens - cached_tokens)
        + cached_price / _PER_MILLION * cached_tokens
        + tier.output / _PER_MILLION * completion_tokens
    )


def model_card(entry: ModelEntry) -> dict[str, object]:
    """What to add to a ``GET /v1/models`` item for a model the catalog knows: OpenAI's
    shape has no room for prices or limits, so they go under a ``fastgw`` key that OpenAI
    clients ignore."""
    card: dict[str, object] = {
        "catalog_name": entry.name,
        "mode": entry.mode,
        "input_cost_per_mtok": entry.input,
        "output_cost_per_mtok": entry.output,
        "cached_input_cost_per_mtok": entry.cached_input,
        "context_window": entry.context_window,
        "max_output_tokens": entry.max_output_tokens,
        "modalities": list(entry.modalities),
        "features": list(entry.features),
        "deprecation": entry.deprecation,
    }
    lc = entry.long_context
    if lc is not None:
        card["long_context"] = {
            "threshold": lc.threshold,
            "input_cost_per_mtok": lc.input,
            "output_cost_per_mtok": lc.output,
            "cached_input_cost_per_mtok": lc.cached_input,
        }
    return {"fastgw": card}


# -- comparing and publishing ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CatalogDiff:
    """What changed from one catalog to the next (names, sorted)."""

    added: list[str]
    removed: list[str]
    #: Entries whose input, output, cached input or long-context prices changed.
    repriced: list[str]
    #: Entries with other changes only (limits, features, aliases, …).
    changed: list[str]

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.removed)} removed, "
            f"{len(self.repriced)} price change(s), {len(self.changed)} other change(s)"
        )


def _prices(e: ModelEntry) -> tuple[object, ...]:
    return (e.input, e.output, e.cached_input, e.long_context)


def diff(old: Catalog, new: Catalog) -> CatalogDiff:
    """The difference between two catalogs, entry by entry."""
    before, after = old.entries, new.entries
    both = [n for n in after if n in before]
    repriced = sorted(n for n in both if _prices(before[n]) != _prices(after[n]))
    changed = sorted(n for n in both if before[n] != after[n] and n not in repriced)
    return CatalogDiff(
        added=sorted(n for n in after if n not in before),
        removed=sorted(n for n in before if n not in after),
        repriced=repriced,
        changed=changed,
    )


class CatalogHolder:
    """The catalog a worker prices requests with, replaced at run time by ``swap``.

    A reader takes ``holder.current`` once and uses that object for the whole request; a
    swap is one attribute assignment (atomic in CPython, for threads and coroutines alike)
    of a catalog that was fully built and validated before, so no reader can see a
    half-built one."""

    __slots__ = ("_current", "_listeners", "swaps")

    def __init__(self, catalog: Catalog) -> None:
        self._current = catalog
        #: How many times the catalog was replaced (for health output).
        self.swaps = 0
        self._listeners: list[Callable[[], None]] = []

    def on_swap(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` in every swap, right after the new catalog is published (in
        the same step: no request runs in between, so what a listener derived from the old
        catalog is never used with the new one)."""
        self._listeners.append(listener)

    @property
    def current(self) -> Catalog:
        return self._current

    def swap(self, new: Catalog) -> Catalog:
        """Publish ``new``; returns the catalog it replaced."""
        old = self._current
        self._current = new
        self.swaps += 1
        for listener in self._listeners:
            listener()
        return old
