"""Routing conditions: field references, request facts, operators and sticky keys."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest

from fastgw.api.errors import GatewayError
from fastgw.routing.conditions import (
    MISSING,
    OPERATORS,
    Condition,
    FieldRef,
    RequestFacts,
    sticky_key,
)


def make_facts(
    headers: dict[str, str] | None = None,
    body: object = MISSING,
    metadata: object = MISSING,
    model: str = "m",
) -> RequestFacts:
    """Facts as the gateway builds them: lower-case header names, a raw JSON body and the
    x-fastgw-metadata header (checked by set_metadata)."""
    raw = b"" if body is MISSING else msgspec.json.encode(body)
    hdrs = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    facts = RequestFacts(hdrs, raw, model)
    if metadata is not MISSING:
        facts.set_metadata(msgspec.json.encode(metadata), 4096)
    return facts


def meta_holds(spec: object, value: object) -> bool:
    """Does ``{"metadata.f": spec}`` hold when metadata.f is ``value`` (MISSING: absent)?"""
    metadata = {} if value is MISSING else {"f": value}
    return Condition({"metadata.f": spec}).holds(make_facts(metadata=metadata))


# -- field references ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "source", "path"),
    [
        ("model", "model", ()),
        ("header.X-User-Id", "header", ("x-user-id",)),
        ("metadata.tier", "metadata", ("tier",)),
        ("metadata.a.b.c", "metadata", ("a", "b", "c")),
        ("body.messages.0.content", "body", ("messages", 0, "content")),
        ("body.user", "body", ("user",)),
    ],
)
def test_field_ref_parses(text: str, source: str, path: tuple[str | int, ...]) -> None:
    ref = FieldRef(text)
    assert (ref.text, ref.source, ref.path) == (text, source, path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user", "unknown field 'user'"),
        ("query.x", "unknown field 'query.x'"),
        ("", "unknown field ''"),
        ("Model", "unknown field 'Model'"),
        ("model.x", "'model' takes no path"),
        ("header.", "'header' needs a name after the dot"),
        ("header", "'header' needs a name after the dot"),
        ("metadata.", "'metadata' needs a name after the dot"),
        ("body", "'body' needs a name after the dot"),
        ("body.a..b", "empty path segment in 'body.a..b'"),
        ("metadata.a.", "empty path segment in 'metadata.a.'"),
        ("metadata..a", "empty path segment"),
    ],
)
def test_field_ref_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        FieldRef(text)


# -- facts: headers, metadata, body --------------------------------------------------------


def test_header_lookup_is_case_insensitive_and_joins_repeats() -> None:
    facts = RequestFacts(
        [(b"x-tier", b"pro"), (b"x-multi", b"a"), (b"x-other", b"z"), (b"x-multi", b"b")], b""
    )
    assert facts.get(FieldRef("header.X-Tier")) == "pro"
    assert facts.get(FieldRef("header.x-multi")) == "a, b"
    assert facts.get(FieldRef("header.x-absent")) is MISSING
    assert facts.header("x-absent") is None


def test_empty_header_value_is_present() -> None:
    facts = make_facts(headers={"x-flag": ""})
    assert facts.get(FieldRef("header.x-flag")) == ""
    assert Condition({"header.x-flag": {"exists": True}}).holds(facts)


def test_model_fact() -> None:
    facts = make_facts(model="gpt-4o-mini")
    assert facts.get(FieldRef("model")) == "gpt-4o-mini"
    assert Condition({"model": {"prefix": "gpt-4o"}}).holds(facts)
    assert not Condition({"model": "gpt-4o"}).holds(facts)


def test_metadata_paths() -> None:
    facts = make_facts(
        metadata={"tier": "pro", "user": {"id": 7, "tags": ["a", "b"]}, "nil": None, "0": "z"}
    )
    assert facts.get(FieldRef("metadata.tier")) == "pro"
    assert facts.get(FieldRef("metadata.user.id")) == 7
    assert facts.get(FieldRef("metadata.user.tags.1")) == "b"
    assert facts.get(FieldRef("metadata.user.tags.2")) is MISSING
    assert facts.get(FieldRef("metadata.user.id.x")) is MISSING  # through a number
    assert facts.get(FieldRef("metadata.nil")) is None  # JSON null is not MISSING
    assert facts.get(FieldRef("metadata.nil.x")) is MISSING
    assert facts.get(FieldRef("metadata.0")) == "z"  # a numeric key of an object
    assert facts.get(FieldRef("metadata.absent")) is MISSING


def test_no_metadata_header_means_every_metadata_field_is_missing() -> None:
    facts = make_facts()
    assert facts.metadata() == {}
    assert facts.get(FieldRef("metadata.tier")) is MISSING


def test_set_metadata_accepts_an_object_up_to_the_limit() -> None:
    raw = b'{"tier":"pro","n":1}'
    facts = RequestFacts([], b"")
    facts.set_metadata(raw, len(raw))  # exactly at the limit
    assert facts.metadata() == {"tier": "pro", "n": 1}
    facts.set_metadata(b"{}", 2)
    assert facts.metadata() == {}


@pytest.mark.parametrize(
    "raw", [b"[1,2]", b'"pro"', b"1", b"null", b"true", b"not json", b'{"a":', b"", b"\xff"]
)
def test_set_metadata_rejects_a_non_object(raw: bytes) -> None:
    facts = RequestFacts([], b"")
    with pytest.raises(GatewayError) as e:
        facts.set_metadata(raw, 4096)
    err = e.value
    assert (err.status, err.code, err.param) == (400, "invalid_metadata", "x-fastgw-metadata")
    assert "JSON object" in err.message


def test_set_metadata_rejects_an_oversized_header() -> None:
    raw = msgspec.json.encode({"k": "v" * 100})
    facts = RequestFacts([], b"")
    with pytest.raises(GatewayError) as e:
        facts.set_metadata(raw, len(raw) - 1)
    err = e.value
    assert (err.status, err.code, err.param) == (400, "invalid_metadata", "x-fastgw-metadata")
    assert f"larger than {len(raw) - 1} bytes" in err.message


def test_body_paths_with_list_indexes() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
        "stream": False,
        "user": "u-1",
        "n": 0,
        "nested": {"list": [[1, 2], [3]]},
    }
    facts = make_facts(body=body)
    assert facts.get(FieldRef("body.messages.0.role")) == "system"
    assert facts.get(FieldRef("body.messages.1.content")) == "hi"
    assert facts.get(FieldRef("body.messages.2.content")) is MISSING
    assert facts.get(FieldRef("body.messages.-1")) is MISSING  # no negative indexes
    assert facts.get(FieldRef("body.messages.role")) is MISSING  # a name on a list
    assert facts.get(FieldRef("body.nested.list.0.1")) == 2
    assert facts.get(FieldRef("body.user.0")) is MISSING  # an index on a string
    assert facts.get(FieldRef("body.stream")) is False
    assert facts.get(FieldRef("body.n")) == 0
    assert Condition({"body.stream": False}).holds(facts)
    assert Condition({"body.messages.0.role": "system", "body.user": {"prefix": "u-"}}).holds(facts)


def test_body_list_at_the_root() -> None:
    facts = make_facts(body=["a", {"b": 1}])
    assert facts.get(FieldRef("body.0")) == "a"
    assert facts.get(FieldRef("body.1.b")) == 1


def test_body_is_decoded_once_and_bad_json_is_missing() -> None:
    facts = RequestFacts([], b'{"a": 1')
    assert facts.get(FieldRef("body.a")) is MISSING
    assert facts.body() is None
    facts = RequestFacts([], b'{"a": {"b": 2}}')
    first = facts.body()
    assert facts.body() is first  # cached, not decoded again
    assert facts.get(FieldRef("body.a.b")) == 2


# -- operators -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        # eq (plain value) and its MISSING semantics
        ("pro", "pro", True),
        ("pro", "free", False),
        ("pro", MISSING, False),
        ({"eq": "pro"}, "pro", True),
        ({"eq": "pro"}, MISSING, False),
        ({"eq": None}, None, True),  # JSON null
        ({"eq": None}, MISSING, False),
        # numbers and text: a header's "5" meets a config 5
        (5, 5, True),
        (5, 5.0, True),
        (5, "5", True),
        (5, "5.0", False),
        (5, 6, False),
        (2.5, "2.5", True),
        (5.0, "5", True),
        # ... both ways: a metadata/body number meets a config text
        ("5", 5, True),
        ("true", True, True),
        ("5", 6, False),
        # booleans never equal numbers; "true"/"false" text meets a config boolean
        (True, True, True),
        (True, False, False),
        (True, "true", True),
        (False, "false", True),
        (True, "True", False),
        (True, 1, False),
        (1, True, False),
        (0, False, False),
        (False, 0, False),
        # ne: holds for a missing field
        ({"ne": "pro"}, "free", True),
        ({"ne": "pro"}, "pro", False),
        ({"ne": "pro"}, MISSING, True),
        ({"ne": 5}, "5", False),
        ({"ne": True}, "true", False),
        # in (a list is shorthand for in)
        (["a", "b"], "b", True),
        (["a", "b"], "c", False),
        (["a", "b"], MISSING, False),
        ({"in": ["a", "b"]}, "a", True),
        ({"in": [1, 2]}, "2", True),
        ({"in": [1, 2]}, 3, False),
        ({"in": [True]}, "true", True),
        ({"in": []}, "a", False),
        # not_in: holds for a missing field
        ({"not_in": ["a", "b"]}, "c", True),
        ({"not_in": ["a", "b"]}, "a", False),
        ({"not_in": ["a", "b"]}, MISSING, True),
        ({"not_in": [1]}, "1", False),
        # exists
        ({"exists": True}, "x", True),
        ({"exists": True}, None, True),  # present, though null
        ({"exists": True}, MISSING, False),
        ({"exists": False}, MISSING, True),
        ({"exists": False}, "x", False),
        ({"exists": False}, None, False),
        # prefix / suffix: strings only
        ({"prefix": "gpt-"}, "gpt-4o", True),
        ({"prefix": "gpt-"}, "o1-gpt-", False),
        ({"prefix": "1"}, 12, False),
        ({"prefix": "gpt-"}, MISSING, False),
        ({"suffix": "-mini"}, "gpt-4o-mini", True),
        ({"suffix": "-mini"}, "mini-gpt", False),
        ({"suffix": "x"}, ["x"], False),
        ({"suffix": "-mini"}, MISSING, False),
        # contains: substring of a string, member of a list
        ({"contains": "ell"}, "hello", True),
        ({"contains": "xyz"}, "hello", False),
        ({"contains": "b"}, ["a", "b"], True),
        ({"contains": "c"}, ["a", "b"], False),
        ({"contains": 5}, ["5", "6"], True),
        ({"contains": 5}, "15", False),
        ({"contains": "a"}, MISSING, False),
        ({"contains": "a"}, {"a": 1}, False),
        # regex: searched, strings only
        ({"regex": "^u-[0-9]+$"}, "u-42", True),
        ({"regex": "^u-[0-9]+$"}, "u-4x", False),
        ({"regex": "pro"}, "enterprise-pro-plus", True),
        ({"regex": "4"}, 42, False),
        ({"regex": ".*"}, MISSING, False),
        # comparisons: numbers and numeric text; never booleans or missing fields
        ({"gt": 5}, 6, True),
        ({"gt": 5}, 5, False),
        ({"gt": 5}, "6", True),
        ({"gt": 5}, "5", False),
        ({"gt": 1.5}, "2", True),
        ({"gt": 0}, True, False),
        ({"gt": 5}, "many", False),
        ({"gt": 5}, None, False),
        ({"gt": 5}, MISSING, False),
        ({"gte": 5}, 5, True),
        ({"gte": 5}, 4.999, False),
        ({"gte": 5}, "5", True),
        ({"lt": 5}, 4.5, True),
        ({"lt": 5}, 5, False),
        ({"lt": 5}, MISSING, False),
        ({"lt": 1}, False, False),
        ({"lte": 5}, 5, True),
        ({"lte": 5}, 5.1, False),
        ({"lte": -1}, "-2", True),
        # several operators: all must hold
        ({"gte": 1, "lt": 10}, 5, True),
        ({"gte": 1, "lt": 10}, 10, False),
        ({"gte": 1, "lt": 10}, 0, False),
        ({"prefix": "a", "suffix": "z"}, "abcz", True),
        ({"prefix": "a", "suffix": "z"}, "abc", False),
        ({"exists": True, "ne": "x"}, MISSING, False),
    ],
)
def test_operator(spec: object, value: object, expected: bool) -> None:
    assert meta_holds(spec, value) is expected


def test_every_listed_operator_compiles() -> None:
    for op in OPERATORS:
        arg = ["x"] if op in ("in", "not_in") else _arg(op)
        assert len(Condition({"metadata.f": {op: arg}}).tests) == 1


def _arg(op: str) -> object:
    if op == "exists":
        return True
    if op in ("gt", "gte", "lt", "lte"):
        return 1
    return "x"


def test_header_text_meets_config_numbers_and_booleans() -> None:
    facts = make_facts(headers={"x-n": "5", "x-flag": "true", "x-off": "false"})
    assert Condition({"header.x-n": 5}).holds(facts)
    assert Condition({"header.x-n": {"in": [4, 5]}}).holds(facts)
    assert Condition({"header.x-n": {"gte": 5, "lt": 6}}).holds(facts)
    assert not Condition({"header.x-n": 6}).holds(facts)
    assert Condition({"header.x-flag": True}).holds(facts)
    assert not Condition({"header.x-flag": False}).holds(facts)
    assert Condition({"header.x-off": False}).holds(facts)
    assert Condition({"header.x-absent": {"ne": 5}}).holds(facts)
    assert not Condition({"header.x-absent": 5}).holds(facts)


def test_all_fields_of_a_condition_must_hold() -> None:
    cond = Condition({"metadata.tier": "pro", "header.x-beta": {"exists": True}})
    assert cond.holds(make_facts(headers={"x-beta": "1"}, metadata={"tier": "pro"}))
    assert not cond.holds(make_facts(metadata={"tier": "pro"}))
    assert not cond.holds(make_facts(headers={"x-beta": "1"}, metadata={"tier": "free"}))


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ({}, "a condition needs at least one field"),
        ({"metadata.f": {}}, "metadata.f: an empty operator mapping"),
        ({"metadata.f": {"like": "x"}}, "metadata.f: unknown operator 'like'; known: eq, ne,"),
        ({"metadata.f": {"in": "a"}}, "metadata.f: 'in' takes a list"),
        ({"metadata.f": {"not_in": 3}}, "metadata.f: 'not_in' takes a list"),
        ({"metadata.f": {"exists": "yes"}}, "metadata.f: 'exists' takes true or false"),
        ({"metadata.f": {"exists": 1}}, "metadata.f: 'exists' takes true or false"),
        ({"metadata.f": {"prefix": 1}}, "metadata.f: 'prefix' takes a string"),
        ({"metadata.f": {"suffix": None}}, "metadata.f: 'suffix' takes a string"),
        ({"metadata.f": {"regex": 1}}, "metadata.f: 'regex' takes a string"),
        ({"metadata.f": {"regex": "(unclosed"}}, "metadata.f: invalid regex '(unclosed'"),
        ({"metadata.f": {"gt": "5"}}, "metadata.f: 'gt' takes a number"),
        ({"metadata.f": {"gte": True}}, "metadata.f: 'gte' takes a number"),
        ({"metadata.f": {"lt": None}}, "metadata.f: 'lt' takes a number"),
        ({"metadata.f": {"lte": [1]}}, "metadata.f: 'lte' takes a number"),
        ({"tier": "pro"}, "tier: unknown field 'tier'"),
        ({"model.name": "x"}, "model.name: 'model' takes no path"),
        ({"header.": "x"}, "header.: 'header' needs a name"),
        ({"body.a..b": "x"}, "body.a..b: empty path segment"),
    ],
)
def test_condition_errors(when: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as e:
        Condition(when)
    assert str(e.value).startswith(message)


# -- sticky keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("u-1", "u-1"),
        (42, "42"),
        (0, "0"),
        (False, "false"),
        ({"b": 1, "a": [2]}, '{"b":1,"a":[2]}'),
        (MISSING, None),
        (None, None),
        ("", None),
    ],
)
def test_sticky_key(value: object, key: str | None) -> None:
    metadata = {} if value is MISSING else {"user": value}
    assert sticky_key(make_facts(metadata=metadata), FieldRef("metadata.user")) == key


def test_sticky_key_from_a_header_and_the_body() -> None:
    facts = make_facts(headers={"x-user-id": "abc"}, body={"user": "u-9"})
    assert sticky_key(facts, FieldRef("header.x-user-id")) == "abc"
    assert sticky_key(facts, FieldRef("body.user")) == "u-9"
    assert sticky_key(facts, FieldRef("header.x-session")) is None


@pytest.mark.parametrize("name", ["x-名", "x team", "x:y", "x\r\nset-cookie"])
def test_header_references_must_be_http_header_names(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid HTTP header name"):
        FieldRef(f"header.{name}")
