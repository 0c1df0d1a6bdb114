"""Budgets in the config file: defaults, and every mistake reported with its path."""

from __future__ import annotations

from typing import Any

import pytest

from fastgw.config import ConfigError, validate
from fastgw.config.budgetspec import model_known


def base(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}},
        "models": {
            "smart": {"targets": [{"provider": "p"}]},
            "cheap": {"targets": [{"provider": "p"}]},
            "local/*": {"targets": [{"provider": "p"}]},
        },
        "teams": {"research": {}},
        "keys": [{"name": "alice", "key": "alice-secret-0123456789", "team": "research"}],
    }
    data.update(extra)
    return data


def errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        validate(data, env={})
    return e.value.errors


def test_budgets_on_keys_teams_and_tags_with_defaults() -> None:
    data = base(budgets={"tags": {"batch": {"usd": 50, "period": "7d"}}, "flush_interval": "250ms"})
    data["keys"][0]["budget"] = {"usd": 100}
    data["teams"]["research"]["budget"] = {
        "usd": "${TEAM_USD}",
        "period": "weekly",
        "soft": 0.9,
        "on_exceed": "fallback",
        "fallback_model": "local/llama",
    }
    cfg = validate(data, env={"TEAM_USD": "1000"})
    kb = cfg.keys[0].budget
    assert kb is not None
    assert (kb.usd, kb.period, kb.soft, kb.on_exceed, kb.fallback_model) == (
        100.0,
        "monthly",
        0.8,
        "reject",
        None,
    )
    tb = cfg.teams["research"].budget
    assert tb is not None and tb.usd == 1000.0 and tb.fallback_model == "local/llama"
    assert cfg.budgets.tags["batch"].period == "7d"
    assert cfg.budgets.flush_interval == 0.25 and cfg.budgets.ledger is None
    assert validate(base(), env={}).budgets.flush_interval == 1.0


@pytest.mark.parametrize(
    ("budget", "path", "message"),
    [
        ({"usd": 0}, "keys[0].budget.usd", "above 0"),
        ({"usd": -5}, "keys[0].budget.usd", "above 0"),
        ({"usd": ".inf"}, "keys[0].budget.usd", "above 0"),
        ({"usd": "ten"}, "keys[0].budget.usd", "expected a number"),
        ({}, "keys[0].budget.usd", "required"),
        ({"usd": 1, "period": "fortnightly"}, "keys[0].budget.period", "<N>d"),
        ({"usd": 1, "period": "0d"}, "keys[0].budget.period", "1 to 366"),
        ({"usd": 1, "period": "367d"}, "keys[0].budget.period", "1 to 366"),
        ({"usd": 1, "soft": 1}, "keys[0].budget.soft", "between 0 and 1"),
        ({"usd": 1, "soft": 0}, "keys[0].budget.soft", "between 0 and 1"),
        ({"usd": 1, "on_exceed": "warn"}, "keys[0].budget.on_exceed", "'reject' or 'fallback'"),
        ({"usd": 1, "on_exceed": "fallback"}, "keys[0].budget.fallback_model", "required"),
        (
            {"usd": 1, "on_exceed": "fallback", "fallback_model": "gpt-9"},
            "keys[0].budget.fallback_model",
            "unknown model 'gpt-9'",
        ),
        ({"usd": 1, "fallback_model": "cheap"}, "keys[0].budget.fallback_model", "only with"),
        ({"usd": 1, "hard": 2}, "keys[0].budget.hard", "unknown field"),
    ],
)
def test_bad_budgets_name_their_field(budget: dict[str, Any], path: str, message: str) -> None:
    data = base()
    data["keys"][0]["budget"] = budget
    got = errors(data)
    assert any(e.startswith(path + ":") and message in e for e in got), got


def test_team_and_tag_budgets_and_the_ledger_settings_are_checked() -> None:
    data = base(
        budgets={
            "tags": {"batch": {"usd": -1}, " ": {"usd": 1}},
            "ledger": "",
            "flush_interval": "10m",
        }
    )
    data["teams"]["research"]["budget"] = {"usd": 1, "period": "yearly"}
    got = errors(data)
    for path in (
        "teams.research.budget.period",
        "budgets.tags.batch.usd",
        "budgets.tags",
        "budgets.ledger",
        "budgets.flush_interval",
    ):
        assert any(e.startswith(path + ":") for e in got), (path, got)


def test_the_budgets_of_a_key_must_agree_on_one_fallback_model() -> None:
    data = base(
        budgets={"tags": {"batch": {"usd": 1, "on_exceed": "fallback", "fallback_model": "smart"}}}
    )
    data["keys"][0]["tags"] = ["batch"]
    data["keys"][0]["budget"] = {"usd": 1, "on_exceed": "fallback", "fallback_model": "cheap"}
    got = errors(data)
    assert any(e.startswith("keys[0]:") and "rerouted at most once" in e for e in got), got
    data["keys"][0]["budget"]["fallback_model"] = "smart"  # agreeing: fine
    validate(data, env={})


def test_a_key_must_be_allowed_its_fallback_model() -> None:
    data = base()
    data["teams"]["research"] = {
        "deny_models": ["cheap"],
        "budget": {"usd": 1, "on_exceed": "fallback", "fallback_model": "cheap"},
    }
    got = errors(data)
    assert any(e.startswith("keys[0]:") and "may not use 'cheap'" in e for e in got), got


def test_model_known_matches_names_and_one_star_patterns() -> None:
    models = ["smart", "local/*", "*-mini"]
    assert model_known("smart", models)
    assert model_known("local/llama", models)
    assert model_known("gpt-4o-mini", models)
    assert not model_known("local", models)
    assert not model_known("cheap", models)
