"""The model catalog (fastgw/catalog): the file format and its errors, layering, lookup,
cost, model cards, the atomic swap and the file watcher."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from fastgw.catalog import (
    Catalog,
    CatalogError,
    CatalogHolder,
    CatalogWatcher,
    ModelPatch,
    UnknownModelError,
    apply,
    check_overrides,
    cost,
    default_path,
    diff,
    effective,
    fetch,
    load,
    model_card,
    parse,
    shipped,
    write_atomic,
)
from fastgw.config import ConfigError, validate
from fastgw.policy.store import default_sqlite_path


def entry(**fields: Any) -> dict[str, Any]:
    """A complete entry; ``fields`` replace the defaults."""
    base: dict[str, Any] = {
        "providers": ["openai"],
        "input": 2.0,
        "output": 8.0,
        "cached_input": 0.5,
        "context_window": 100_000,
        "max_output_tokens": 10_000,
        "modalities": ["text"],
        "features": ["streaming"],
        "aliases": [],
    }
    base.update(fields)
    return base


def doc(models: dict[str, Any], **top: Any) -> bytes:
    return json.dumps({"version": 1, "models": models, **top}).encode()


def problems(data: bytes, base: Catalog | None = None) -> list[tuple[str, str]]:
    with pytest.raises(CatalogError) as info:
        load(data, base=base)
    return info.value.problems


def has(found: list[tuple[str, str]], path: str, fragment: str) -> bool:
    return any(p == path and fragment in m for p, m in found)


# -- the shipped catalog ------------------------------------------------------------------


def test_shipped_catalog_validates_and_every_entry_is_priced() -> None:
    cat = shipped()
    assert len(cat) >= 30
    assert cat.as_of is not None
    for e in cat.models():
        assert e.input >= 0 and e.output >= 0, e.name
        assert e.input > 0 or e.output > 0, e.name
        assert e.context_window > 0, e.name
        assert e.providers, e.name
        if e.mode == "chat":
            assert e.output > 0, e.name
        if e.mode == "chat" and "mistral" not in e.providers and "together" not in e.providers:
            assert e.max_output_tokens is not None, e.name


@pytest.mark.parametrize(
    "name",
    [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o3",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "claude-opus-4-1",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "claude-3-5-haiku",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-2.0-flash",
        "mistral-large-latest",
        "mistral-small-latest",
        "codestral-latest",
        "llama-3.3-70b-versatile",
        "llama-3.1-8b-instant",
        "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "meta.llama3-3-70b-instruct-v1:0",
        "mistralai/Mixtral-8x7B-Instruct-v0.1",
        "deepseek-chat",
    ],
)
def test_shipped_catalog_has_the_major_models(name: str) -> None:
    assert shipped().get(name) is not None


def test_the_offline_demo_is_priced() -> None:
    """The embedded demo's public name and its upstream model both have small prices, so
    cost accounting can be exercised with no provider at all."""
    demo = shipped().resolve("fastgw-demo")
    assert demo is shipped().resolve("mock-model")
    assert 0 < demo.input < 10 and 0 < demo.output < 10
    assert demo.cached_input is not None


def test_shipped_file_is_read_from_package_data() -> None:
    path = Path(__file__).parents[2] / "fastgw" / "catalog" / "data" / "catalog.json"
    assert load(path).entries == shipped().entries


# -- format validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "path", "fragment"),
    [
        ({"input": -1}, "models.m.input", ">= 0"),
        ({"output": -0.5}, "models.m.output", ">= 0"),
        ({"cached_input": 3.0}, "models.m.cached_input", "exceeds input"),
        ({"input": "2.5"}, "models.m.input", "expected float"),
        ({"context_window": 0}, "models.m.context_window", "at least 1"),
        ({"context_window": 1.5}, "models.m.context_window", "expected int"),
        ({"max_output_tokens": 200_000}, "models.m.max_output_tokens", "exceeds context_window"),
        ({"modalities": ["text", "smell"]}, "models.m.modalities", "unknown value 'smell'"),
        ({"modalities": []}, "models.m.modalities", "at least one"),
        ({"modalities": ["text", "text"]}, "models.m.modalities", "listed twice"),
        ({"features": ["tool"]}, "models.m.features", "did you mean 'tools'"),
        ({"mode": "image"}, "models.m.mode", "unknown mode"),
        ({"deprecation": "2025-02-30"}, "models.m.deprecation", "not a calendar date"),
        ({"deprecation": "next year"}, "models.m.deprecation", "YYYY-MM-DD"),
        ({"providers": ["Open AI"]}, "models.m.providers", "not a provider kind"),
        ({"aliases": ["m"]}, "models.m.aliases", "own name"),
        ({"aliases": ["x", "X"]}, "models.m.aliases", "listed twice"),
        ({"aliases": ["has space"]}, "models.m.aliases", "contains a space"),
        ({"regions": ["us east"]}, "models.m.regions", "contains a space"),
        ({"inptu": 1}, "models.m.inptu", "did you mean 'input'"),
        (
            {"long_context": {"threshold": 100_000, "input": 4, "output": 16}},
            "models.m.long_context.threshold",
            "context_window - 1",
        ),
        (
            {"long_context": {"threshold": 1000, "input": -4, "output": 16}},
            "models.m.long_context.input",
            ">= 0",
        ),
    ],
)
def test_a_bad_field_is_named_with_its_entry(
    fields: dict[str, Any], path: str, fragment: str
) -> None:
    found = problems(doc({"m": entry(**fields)}))
    assert has(found, path, fragment), found


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        doc(
            {
                "a": entry(input=-1),
                "b": entry(modalities=["smell"]),
                "c": entry(deprecation="2025-13-01"),
            }
        )
    )
    assert {p for p, _ in found} == {
        "models.a.input",
        "models.b.modalities",
        "models.c.deprecation",
    }


def test_a_new_model_must_be_complete() -> None:
    found = problems(doc({"m": {"input": 1.0}}))
    assert has(found, "models.m", "must set output, context_window")


def test_duplicate_aliases_are_rejected() -> None:
    found = problems(doc({"a": entry(aliases=["shared"]), "b": entry(aliases=["shared"])}))
    assert has(found, "models.b.aliases", "'shared' is already an alias of 'a'")
    found = problems(doc({"a": entry(aliases=["b"]), "b": entry()}))
    assert has(found, "models.a.aliases", "'b' is the name of another model")


def test_names_that_differ_only_in_case_are_rejected() -> None:
    found = problems(doc({"model": entry(), "MODEL": entry()}))
    assert has(found, "models.MODEL", "differs only in case")


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        (b"{", "", "not valid JSON"),
        (b"[]", "", "expected a JSON object"),
        (b'{"models": {}}', "version", "required"),
        (b'{"version": 2, "models": {}}', "version", "unsupported version 2"),
        (b'{"version": true, "models": {}}', "version", "unsupported"),
        (b'{"version": 1}', "models", "required"),
        (b'{"version": 1, "models": []}', "models", "expected an object"),
        (b'{"version": 1, "models": {"m": 3}}', "models.m", "expected an object"),
        (b'{"version": 1, "modles": {}}', "modles", "did you mean 'models'"),
        (b'{"version": 1, "as_of": "yesterday", "models": {}}', "as_of", "YYYY-MM-DD"),
        (b'{"version": 1, "models": {}, "source": 3}', "source", "expected a string"),
        (b'{"version": 1, "models": {"m": {"input": NaN}}}', "", "not valid JSON"),
    ],
)
def test_document_shape_errors(data: bytes, path: str, fragment: str) -> None:
    found = problems(data)
    assert has(found, path, fragment), found


def test_a_model_listed_twice_in_one_file_is_an_error() -> None:
    """JSON would silently keep the second copy; a price list must not."""
    data = b'{"version": 1, "models": {"m": {"input": 1}, "m": {"input": 2}}}'
    found = problems(data)
    assert any("duplicate key 'm'" in m for _, m in found)


def test_error_render_names_source_and_every_path() -> None:
    with pytest.raises(CatalogError) as info:
        load(doc({"m": entry(input=-1)}), source="new.json")
    text = info.value.render()
    assert text.startswith("new.json: 1 error(s)")
    assert "models.m.input: must be a finite number >= 0" in text


def test_unreadable_file_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load(tmp_path / "missing.json")


# -- layering -------------------------------------------------------------------------------


def test_partial_override_changes_only_the_fields_it_sets() -> None:
    base = shipped()
    before = base.resolve("gpt-4o")
    cat = apply(base, {"gpt-4o": ModelPatch(input=2.0)})
    after = cat.resolve("gpt-4o")
    assert after.input == 2.0
    assert after.output == before.output
    assert after.cached_input == before.cached_input
    assert after.aliases == before.aliases
    assert base.resolve("gpt-4o").input == before.input  # the base is not modified
    assert cat.resolve("gpt-4o-2024-08-06") is after  # aliases follow the overridden entry


def test_an_override_adds_a_model() -> None:
    patch = ModelPatch(input=0.1, output=0.2, context_window=32_000, providers=["vllm"])
    cat = apply(shipped(), {"my-llm": patch})
    new = cat.resolve("vllm/my-llm")
    assert (new.input, new.output, new.context_window) == (0.1, 0.2, 32_000)
    assert new.mode == "chat" and new.modalities == ("text",) and new.max_output_tokens is None
    assert len(cat) == len(shipped()) + 1


def test_an_override_that_breaks_an_entry_names_the_config_path() -> None:
    found = check_overrides({"gpt-4o": ModelPatch(input=0.1)})  # below its cached price
    assert has(found, "catalog.models.gpt-4o.cached_input", "exceeds input")
    assert check_overrides({"gpt-4o": ModelPatch(input=0.1, cached_input=0.05)}) == []


def test_a_partial_override_of_an_alias_points_at_the_model() -> None:
    found = check_overrides({"gpt-4o-2024-08-06": ModelPatch(input=1.0)})
    assert has(found, "catalog.models.gpt-4o-2024-08-06", "is an alias of 'gpt-4o'")


def test_a_new_model_named_like_an_alias_is_blamed_on_the_new_model() -> None:
    complete = ModelPatch(input=1.0, output=2.0, context_window=1000)
    found = check_overrides({"gpt-4o-2024-08-06": complete})
    assert has(found, "catalog.models.gpt-4o-2024-08-06", "is an alias of 'gpt-4o'")
    # removing the alias from gpt-4o in the same layer makes it a model of its own
    fixed = {"gpt-4o": ModelPatch(aliases=["gpt-4o-2024-11-20"]), "gpt-4o-2024-08-06": complete}
    cat = apply(shipped(), fixed)
    assert cat.resolve("gpt-4o-2024-08-06").input == 1.0
    assert cat.resolve("gpt-4o").input == shipped().resolve("gpt-4o").input


def test_layers_keep_the_newest_as_of_and_their_sources(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_bytes(doc({"gpt-4o": {"input": 2.0}}, as_of="2030-01-01"))
    cat = effective(str(path), {"gpt-4o": ModelPatch(output=9.0)})
    assert cat.as_of == "2030-01-01"
    assert cat.sources == ("shipped catalog", str(path), "config")
    gpt = cat.resolve("gpt-4o")
    assert (gpt.input, gpt.output) == (2.0, 9.0)  # file, then config


def test_config_section_is_validated_by_check() -> None:
    with pytest.raises(ConfigError) as info:
        validate({"catalog": {"models": {"gpt-4o": {"input": -1}}}}, env={})
    assert any(e.startswith("catalog.models.gpt-4o.input: ") for e in info.value.errors)
    with pytest.raises(ConfigError) as info:
        validate({"catalog": {"models": {"new": {"input": 1}}}}, env={})
    assert any(e.startswith("catalog.models.new: a new model must set") for e in info.value.errors)
    with pytest.raises(ConfigError) as info:
        validate({"catalog": {"models": {"gpt-4o": {"inptu": 1}}}}, env={})
    assert any("catalog.models.gpt-4o.inptu: unknown field" in e for e in info.value.errors)


def test_config_section_defaults_and_values() -> None:
    cfg = validate({}, env={})
    assert cfg.catalog.path is None and cfg.catalog.models == {} and cfg.catalog.watch == 1.0
    cfg = validate(
        {
            "catalog": {
                "path": "/srv/catalog.json",
                "watch": "500ms",
                "models": {
                    "gpt-4o": {"input": 2},
                    "gemini-2.5-pro": {
                        "long_context": {"threshold": 100000, "input": 3, "output": 20}
                    },
                },
            }
        },
        env={},
    )
    assert cfg.catalog.path == "/srv/catalog.json" and cfg.catalog.watch == 0.5
    assert cfg.catalog.models["gpt-4o"].input == 2.0
    lc = cfg.catalog.models["gemini-2.5-pro"].long_context
    assert lc is not None and lc.threshold == 100000


# -- lookup ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "found"),
    [
        ("gpt-4o", "gpt-4o"),
        ("GPT-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("openai/gpt-4o", "gpt-4o"),
        ("openrouter/openai/gpt-4o-mini", "gpt-4o-mini"),
        (
            "together/meta-llama/Llama-3.3-70B-Instruct-Turbo",
            "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        ),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20260101", "claude-sonnet-4-5"),  # date rule
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),  # Vertex AI spelling
        ("anthropic/claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("gpt-4.1-mini-2030-01-01", "gpt-4.1-mini"),  # date rule
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("global.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # an entry of its own beats the date rule
        ("fastgw-demo", "mock-model"),
    ],
)
def test_lookup_rules(name: str, found: str) -> None:
    e = shipped().get(name)
    assert e is not None and e.name == found
    assert name in shipped()


@pytest.mark.parametrize("name", ["gpt-4", "gpt-4o-turbo", "", "openai/", "gpt-4o-2024"])
def test_unknown_models(name: str) -> None:
    assert shipped().get(name) is None
    with pytest.raises(UnknownModelError, match="unknown model"):
        shipped().resolve(name)


def test_snapshot_priced_differently_is_not_folded_into_its_family() -> None:
    old, new = shipped().resolve("gpt-4o-2024-05-13"), shipped().resolve("gpt-4o")
    assert old.input != new.input


def test_suggestions_for_unknown_names() -> None:
    assert "gpt-4o" in shipped().suggest("gpt4o")


# -- cost -----------------------------------------------------------------------------------


def _model(**fields: Any) -> Catalog:
    return load(doc({"m": entry(**fields)}))


def test_cost_without_cache() -> None:
    cat = _model(input=2.5, output=10.0)
    assert cat.cost("m", 1000, 500) == pytest.approx(2.5 / 1e6 * 1000 + 10.0 / 1e6 * 500, abs=1e-9)
    assert abs(cat.cost("m", 1_234_567, 89_012) - (3.0864175 + 0.89012)) < 1e-9


def test_cached_tokens_are_part_of_the_prompt_at_the_cached_price() -> None:
    cat = _model(input=2.5, output=10.0, cached_input=1.25)
    got = cat.cost("m", prompt_tokens=1000, completion_tokens=200, cached_tokens=400)
    assert abs(got - (600 * 2.5 / 1e6 + 400 * 1.25 / 1e6 + 200 * 10.0 / 1e6)) < 1e-9
    assert abs(got - 0.004) < 1e-9


def test_cached_tokens_without_a_cached_price_bill_at_input() -> None:
    cat = _model(input=0.59, output=0.79, cached_input=None)
    assert abs(cat.cost("m", 1000, 0, cached_tokens=999) - cat.cost("m", 1000, 0)) < 1e-12
    assert abs(cat.cost("m", 1000, 0) - 0.00059) < 1e-9


def test_long_context_tier_prices_the_whole_request() -> None:
    g = shipped().resolve("gemini-2.5-pro")
    assert abs(cost(g, 200_000, 1000) - (200_000 * 1.25 + 1000 * 10.0) / 1e6) < 1e-9
    got = cost(g, 300_000, 1000, cached_tokens=100_000)
    assert abs(got - (200_000 * 2.5 + 100_000 * 0.25 + 1000 * 15.0) / 1e6) < 1e-9


def test_long_context_tier_without_cached_price_bills_cached_at_its_input() -> None:
    cat = _model(long_context={"threshold": 1000, "input": 4.0, "output": 16.0})
    got = cat.cost("m", 2000, 10, cached_tokens=500)
    assert abs(got - (2000 * 4.0 + 10 * 16.0) / 1e6) < 1e-9


def test_cost_by_alias_and_prefix_and_of_an_entry() -> None:
    cat = shipped()
    expect = (100 * 2.5 + 50 * 10.0) / 1e6
    for model in ("gpt-4o", "openai/gpt-4o-2024-11-20", cat.resolve("gpt-4o")):
        assert abs(cat.cost(model, 100, 50) - expect) < 1e-9
    assert cat.cost("gpt-4o", 0, 0) == 0.0
    with pytest.raises(UnknownModelError):
        cat.cost("no-such-model", 1, 1)


@pytest.mark.parametrize(
    ("prompt", "completion", "cached"), [(-1, 0, 0), (0, -1, 0), (10, 0, -1), (10, 0, 11)]
)
def test_impossible_token_counts_are_refused(prompt: int, completion: int, cached: int) -> None:
    with pytest.raises(ValueError):
        _model().cost("m", prompt, completion, cached)


# -- model cards and diffs -------------------------------------------------------------------


def test_model_card() -> None:
    card = model_card(shipped().resolve("gemini-2.5-pro"))
    fg = card["fastgw"]
    assert isinstance(fg, dict)
    assert fg["input_cost_per_mtok"] == 1.25
    assert fg["output_cost_per_mtok"] == 10.0
    assert fg["cached_input_cost_per_mtok"] == 0.125
    assert fg["context_window"] == 1_048_576 and fg["max_output_tokens"] == 65_536
    assert "vision" in fg["modalities"] and "tools" in fg["features"]
    assert fg["deprecation"] is None
    assert fg["long_context"] == {
        "threshold": 200_000,
        "input_cost_per_mtok": 2.5,
        "output_cost_per_mtok": 15.0,
        "cached_input_cost_per_mtok": 0.25,
    }
    json.dumps(card)  # goes into a JSON response as it is
    assert "long_context" not in model_card(shipped().resolve("gpt-4o"))["fastgw"]  # type: ignore[operator]


def test_diff_counts_added_removed_repriced_and_changed() -> None:
    old = load(doc({"a": entry(), "b": entry(), "c": entry(), "d": entry()}))
    new = load(doc({"a": entry(), "b": entry(input=1.0), "c": entry(features=[]), "e": entry()}))
    d = diff(old, new)
    assert (d.added, d.removed, d.repriced, d.changed) == (["e"], ["d"], ["b"], ["c"])
    assert d.summary() == "1 added, 1 removed, 1 price change(s), 1 other change(s)"


# -- the holder -----------------------------------------------------------------------------


def test_swap_replaces_the_catalog_in_one_step() -> None:
    first, second = shipped(), apply(shipped(), {"gpt-4o": ModelPatch(input=3.0)})
    holder = CatalogHolder(first)
    taken = holder.current  # a request in flight keeps the catalog it started with
    assert holder.swap(second) is first
    assert holder.current is second and holder.swaps == 1
    assert taken.resolve("gpt-4o").input == 2.5
    assert holder.current.resolve("gpt-4o").input == 3.0


def test_a_catalog_is_immutable() -> None:
    cat = shipped()
    with pytest.raises(TypeError):
        cat.entries["x"] = cat.resolve("gpt-4o")  # type: ignore[index]
    with pytest.raises(AttributeError):
        cat.resolve("gpt-4o").input = 0.0  # type: ignore[misc]


# -- files ----------------------------------------------------------------------------------


def test_default_path_sits_beside_the_key_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTGW_CONFIG", "/etc/fastgw/a.yaml")
    path = default_path()
    assert os.path.dirname(path) == os.path.dirname(default_sqlite_path())
    assert os.path.basename(path).startswith("catalog-") and path.endswith(".json")
    assert default_path("/etc/fastgw/a.yaml") == path
    assert default_path("/etc/fastgw/b.yaml") != path
    monkeypatch.chdir("/etc")
    assert default_path("fastgw/a.yaml") == path  # relative to where the command runs


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "catalog.json"
    write_atomic(str(target), b"one")
    inode = target.stat().st_ino
    write_atomic(str(target), b"two")
    assert target.read_bytes() == b"two"
    assert target.stat().st_ino != inode  # replaced, not rewritten in place
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["catalog.json"]


def test_fetch_a_missing_or_oversized_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot fetch"):
        fetch(str(tmp_path / "nope.json"))
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 101)
    with pytest.raises(CatalogError, match="larger than 100 bytes"):
        fetch(str(big), max_bytes=100)
    assert fetch(str(big), max_bytes=101) == b" " * 101


# -- the watcher ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _watch(path: Path, clock: Clock, **kw: Any) -> tuple[CatalogWatcher, CatalogHolder]:
    watcher = CatalogWatcher(str(path), interval=1.0, clock=clock, **kw)
    return watcher, CatalogHolder(watcher.initial())


def test_watcher_swaps_in_a_changed_file(tmp_path: Path) -> None:
    path, clock = tmp_path / "catalog.json", Clock()
    watcher, holder = _watch(path, clock)
    assert holder.current.entries == shipped().entries  # no file yet: the shipped catalog
    clock.now += 1
    assert watcher.check(holder) is False  # nothing changed
    write_atomic(str(path), doc({"gpt-4o": {"input": 2.0}}))
    clock.now += 1
    assert watcher.check(holder) is True
    assert holder.current.resolve("gpt-4o").input == 2.0
    assert watcher.loads == 1
    clock.now += 1
    assert watcher.check(holder) is False  # the same file is not loaded twice


def test_watcher_stats_at_most_once_per_interval(tmp_path: Path) -> None:
    path, clock = tmp_path / "catalog.json", Clock()
    watcher, holder = _watch(path, clock)
    write_atomic(str(path), doc({"gpt-4o": {"input": 2.0}}))
    clock.now += 0.5
    assert watcher.check(holder) is False  # within the interval: not even looked at
    assert holder.current.resolve("gpt-4o").input == 2.5
    clock.now += 0.5
    assert watcher.check(holder) is True


def test_watcher_keeps_the_catalog_on_an_invalid_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, clock = tmp_path / "catalog.json", Clock()
    write_atomic(str(path), doc({"gpt-4o": {"input": 2.0}}))
    watcher, holder = _watch(path, clock)
    good = holder.current
    assert good.resolve("gpt-4o").input == 2.0
    write_atomic(str(path), doc({"gpt-4o": {"input": -2.0}}))
    clock.now += 1
    with caplog.at_level(logging.WARNING, logger="fastgw.catalog.files"):
        assert watcher.check(holder) is False
    assert holder.current is good
    assert watcher.errors == 1 and watcher.last_error is not None
    assert "models.gpt-4o.input" in watcher.last_error and str(path) in watcher.last_error
    assert "models.gpt-4o.input" in caplog.text
    clock.now += 1
    assert watcher.check(holder) is False and watcher.errors == 1  # not re-read, not re-logged
    write_atomic(str(path), doc({"gpt-4o": {"input": 1.5}}))
    clock.now += 1
    assert watcher.check(holder) is True
    assert holder.current.resolve("gpt-4o").input == 1.5 and watcher.last_error is None


def test_watcher_applies_config_overrides_over_the_file(tmp_path: Path) -> None:
    path, clock = tmp_path / "catalog.json", Clock()
    watcher, holder = _watch(path, clock, overrides={"gpt-4o": ModelPatch(output=99.0)})
    assert holder.current.resolve("gpt-4o").output == 99.0
    write_atomic(str(path), doc({"gpt-4o": {"input": 2.0, "output": 1.0}}))
    clock.now += 1
    assert watcher.check(holder)
    gpt = holder.current.resolve("gpt-4o")
    assert (gpt.input, gpt.output) == (2.0, 99.0)
    # a file the overrides would make invalid is refused like any invalid file
    write_atomic(str(path), doc({"gpt-4o": {"output": -1.0, "input": -1.0}}))
    clock.now += 1
    assert not watcher.check(holder) and watcher.errors == 1


def test_watcher_starts_without_an_invalid_file_and_follows_its_removal(tmp_path: Path) -> None:
    path, clock = tmp_path / "catalog.json", Clock()
    path.write_bytes(b"{not json")
    watcher, holder = _watch(path, clock)
    assert holder.current.entries == shipped().entries and watcher.errors == 1
    write_atomic(str(path), doc({"gpt-4o": {"input": 2.0}}))
    clock.now += 1
    assert watcher.check(holder)
    path.unlink()  # removing the file goes back to shipped + overrides
    clock.now += 1
    assert watcher.check(holder)
    assert holder.current.resolve("gpt-4o").input == 2.5


async def test_watcher_run_picks_up_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    watcher = CatalogWatcher(str(path), interval=0.01)
    holder = CatalogHolder(watcher.initial())
    task = asyncio.create_task(watcher.run(holder))
    try:
        write_atomic(str(path), doc({"gpt-4o": {"input": 2.0}}))
        for _ in range(500):
            if holder.current.resolve("gpt-4o").input == 2.0:
                break
            await asyncio.sleep(0.01)
        assert holder.current.resolve("gpt-4o").input == 2.0
        assert watcher.health()["loads"] == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_parse_keeps_the_document_fields() -> None:
    layer = parse(doc({"m": entry()}, as_of="2025-10-20", source="me"))
    assert layer.as_of == "2025-10-20" and layer.source == "me"
    assert layer.models["m"].input == 2.0
