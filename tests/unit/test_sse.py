"""Unit and differential tests for both twins of ``fastgw._core.sse``.

Every test takes ``sse_impl`` (pure-python / c-extension). Differential tests compare the
twin under test with the pure reference ``_sse_py`` on the same input.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgw._core import _sse_py as ref
from fastgw._core import sse

Fields = tuple[bytes | None, bytes | None, bytes | None]
Usage = tuple[int, int, int, int]
Row = tuple[bytes, bytes | None, bytes | None, bytes | None]

SETTINGS = settings(
    max_examples=int(os.environ.get("FASTGW_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --- helpers ---------------------------------------------------------------------------------


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def run(impl: ModuleType, chunks: Sequence[bytes], max_event_bytes: int = 0) -> tuple[Any, Any]:
    """Feed chunks to a parser; return (events from feed, flush() result)."""
    parser = impl.SSEParser(max_event_bytes)
    events: list[Any] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    tail = parser.flush()
    assert parser.pending == 0
    return events, tail


def as_tuples(events: Iterable[Any]) -> list[Row]:
    return [(e.raw, e.data, e.event, e.id) for e in events]


def fields(events: Iterable[Any]) -> list[Fields]:
    return [(e.data, e.event, e.id) for e in events]


def all_events(impl: ModuleType, chunks: Sequence[bytes]) -> list[Any]:
    events, tail = run(impl, chunks)
    return [*events, tail] if tail is not None else events


def split_fields(impl: ModuleType, stream: bytes, chunks: Sequence[bytes]) -> list[Fields]:
    """Field sequence of a split parse, minus the one split artefact the rules allow.

    A chunk boundary between the CR and LF of the stream's final CRLF leaves that LF alone in
    the buffer: flush() returns it as a field-less event with raw == b"\\n". A whole-stream
    parse never flushes a lone LF (a lone LF at line start completes a block at once).
    """
    events, tail = run(impl, chunks)
    if tail is not None and tail.raw == b"\n":
        assert stream.endswith(b"\r\n")
        assert (tail.data, tail.event, tail.id) == (None, None, None)
        tail = None
    return fields([*events, tail] if tail is not None else events)


def one(impl: ModuleType, data: bytes) -> Any:
    events = all_events(impl, [data])
    assert len(events) == 1, events
    return events[0]


# --- framing examples ------------------------------------------------------------------------


def test_switch_module_binds_one_twin() -> None:
    twin = "_sse_c" if sse.COMPILED else "_sse_py"
    assert sse.SSEParser.__module__ == f"fastgw._core.{twin}"
    assert sse.extract_usage.__module__ == f"fastgw._core.{twin}"


def test_lf_events(sse_impl: ModuleType) -> None:
    parser = sse_impl.SSEParser()
    events = parser.feed(b"data: one\n\ndata: two\n\ndata: thr")
    assert as_tuples(events) == [
        (b"data: one\n\n", b"one", None, None),
        (b"data: two\n\n", b"two", None, None),
    ]
    assert parser.pending == len(b"data: thr")
    assert parser.feed(b"ee\n") == []
    assert as_tuples(parser.feed(b"\n")) == [(b"data: three\n\n", b"three", None, None)]
    assert parser.pending == 0
    assert parser.flush() is None


def test_crlf_and_cr_only(sse_impl: ModuleType) -> None:
    crlf = b"event: add\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n"
    assert as_tuples(all_events(sse_impl, [crlf])) == [
        (b"event: add\r\ndata: 1\r\n\r\n", b"1", b"add", None),
        (b"data: 2\r\n\r\n", b"2", None, None),
    ]
    cr = b"data: a\rdata: b\r\rid: 9\r\r"
    assert as_tuples(all_events(sse_impl, [cr])) == [
        (b"data: a\rdata: b\r\r", b"a\nb", None, None),
        (b"id: 9\r\r", None, None, b"9"),
    ]
    mixed = b"data: a\r\ndata: b\ndata: c\r\n\r"
    assert fields(all_events(sse_impl, [mixed])) == [(b"a\nb\nc", None, None)]


def test_comments_and_blank_blocks_are_kept(sse_impl: ModuleType) -> None:
    stream = b": keep-alive\n\n\n\n:x\ndata: v\n\n"
    events = all_events(sse_impl, [stream])
    assert as_tuples(events) == [
        (b": keep-alive\n\n", None, None, None),
        (b"\n", None, None, None),
        (b"\n", None, None, None),
        (b":x\ndata: v\n\n", b"v", None, None),
    ]
    assert b"".join(e.raw for e in events) == stream


def test_field_syntax(sse_impl: ModuleType) -> None:
    assert one(sse_impl, b"data\n\n").data == b""
    assert one(sse_impl, b"data:\n\n").data == b""
    assert one(sse_impl, b"data:x\n\n").data == b"x"
    assert one(sse_impl, b"data:  two spaces\n\n").data == b" two spaces"
    assert one(sse_impl, b"data: a:b: c\n\n").data == b"a:b: c"
    assert one(sse_impl, b"data: \n\n").data == b""
    multi = one(sse_impl, b"data: line1\ndata\ndata:line3\n\n")
    assert multi.data == b"line1\n\nline3"
    ev = one(sse_impl, b"event: a\nevent: b\nid: 1\nid: 2\ndata: d\n\n")
    assert (ev.data, ev.event, ev.id) == (b"d", b"b", b"2")
    # an id with NUL is ignored; the previous id of the block stays
    ev = one(sse_impl, b"id: ok\nid: bad\x00id\n\n")
    assert ev.id == b"ok"
    assert one(sse_impl, b"id: a\x00\n\n").id is None
    # retry, unknown fields, "Data" (case matters) and fields named with a space: ignored
    ev = one(sse_impl, b"retry: 10\nfoo: bar\nData: x\ndata : y\n :z\n\n")
    assert (ev.data, ev.event, ev.id) == (None, None, None)
    assert one(sse_impl, b"event\nid\n\n").event == b""
    assert one(sse_impl, b"event\nid\n\n").id == b""
    assert one(sse_impl, "data: héllo ✓\n\n".encode()).data == "héllo ✓".encode()


def test_event_value_object(sse_impl: ModuleType) -> None:
    a = sse_impl.SSEEvent(b"data: x\n\n", b"x")
    b = sse_impl.SSEEvent(b"data: x\n\n", b"x", None, None)
    assert a == b
    assert hash(a) == hash(b)
    assert a != sse_impl.SSEEvent(b"data: x\n\n", b"y")
    assert repr(a) == "SSEEvent(raw=b'data: x\\n\\n', data=b'x', event=None, id=None)"
    assert repr(a) == repr(ref.SSEEvent(b"data: x\n\n", b"x"))
    with pytest.raises(AttributeError):
        a.data = b"z"


STREAM = (
    b": hello\r\n\r\n"
    b'event: message\r\nid: 1\r\ndata: {"a": 1}\r\ndata: second\r\n\r\n'
    b"data: third\n\n"
    b"data: cr\r\r"
    b"retry: 5\ndata: last"
)


def test_every_split_offset(sse_impl: ModuleType) -> None:
    whole = all_events(sse_impl, [STREAM])
    assert fields(whole) == [
        (None, None, None),
        (b'{"a": 1}\nsecond', b"message", b"1"),
        (b"third", None, None),
        (b"cr", None, None),
        (b"last", None, None),
    ]
    for i in range(len(STREAM) + 1):
        for j in range(i, len(STREAM) + 1):
            chunks = split(STREAM, [i, j])
            events = all_events(sse_impl, chunks)
            assert b"".join(e.raw for e in events) == STREAM
            assert split_fields(sse_impl, STREAM, chunks) == fields(whole)
            if not any(STREAM[c - 1 : c + 1] == b"\r\n" for c in (i, j) if 0 < c < len(STREAM)):
                assert as_tuples(events) == as_tuples(whole)
    byte_by_byte = all_events(sse_impl, [STREAM[k : k + 1] for k in range(len(STREAM))])
    assert fields(byte_by_byte) == fields(whole)


def test_cr_at_chunk_end_then_lf(sse_impl: ModuleType) -> None:
    parser = sse_impl.SSEParser()
    # CR ends the line immediately, no waiting for the next chunk
    assert parser.feed(b"data: a\r") == []
    assert as_tuples(parser.feed(b"\r")) == [(b"data: a\r\r", b"a", None, None)]
    # split CRLF inside a block: the LF stays in the same block's raw and is not a blank line
    assert parser.feed(b"data: b\r") == []
    assert parser.feed(b"\ndata: c\r\n") == []
    assert as_tuples(parser.feed(b"\r")) == [(b"data: b\r\ndata: c\r\n\r", b"b\nc", None, None)]
    # the LF half of the block-ending CRLF opens the next block's raw (and is no blank line)
    assert as_tuples(parser.feed(b"\ndata: d\r\n\r\n")) == [
        (b"\ndata: d\r\n\r\n", b"d", None, None)
    ]
    # an LF after an empty chunk still pairs with the CR
    assert parser.feed(b"data: e\r") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\n") == []
    assert as_tuples(parser.feed(b"\n")) == [(b"data: e\r\n\n", b"e", None, None)]
    # the stream ends between CR and LF: the lone LF comes back from flush
    assert len(parser.feed(b"data: f\r\n\r")) == 1
    assert parser.feed(b"\n") == []
    tail = parser.flush()
    assert tail is not None
    assert as_tuples([tail]) == [(b"\n", None, None, None)]


def test_cr_lf_split_is_not_double_line_end(sse_impl: ModuleType) -> None:
    # Without the CR rule "\r" + "\n" would read as two line ends, i.e. a blank line.
    events = all_events(sse_impl, [b"data: x\r", b"\ndata: y\r\n\r\n"])
    assert fields(events) == [(b"x\ny", None, None)]


def test_flush(sse_impl: ModuleType) -> None:
    parser = sse_impl.SSEParser()
    assert parser.flush() is None
    assert parser.feed(b"event: e\r\ndata: partial") == []
    tail = parser.flush()
    assert tail is not None
    assert as_tuples([tail]) == [(b"event: e\r\ndata: partial", b"partial", b"e", None)]
    assert parser.pending == 0
    assert parser.flush() is None
    # flush resets: nothing of the old block leaks into the next one
    parser.feed(b"event: old\ndata: old\n")
    parser.flush()
    assert fields(parser.feed(b"data: new\n\n")) == [(b"new", None, None)]


def test_flush_resets_pending_cr(sse_impl: ModuleType) -> None:
    parser = sse_impl.SSEParser()
    parser.feed(b"id: 1\r")
    parser.flush()
    # after a reset a leading LF is an ordinary blank line again
    assert as_tuples(parser.feed(b"\ndata: z\n\n")) == [
        (b"\n", None, None, None),
        (b"data: z\n\n", b"z", None, None),
    ]


@pytest.mark.parametrize("size", [1 << 20, 8 << 20])
def test_huge_single_event(sse_impl: ModuleType, size: int) -> None:
    payload = bytes(b"abcdefghij"[i % 10] for i in range(256)) * (size // 256)
    stream = b"data: " + payload + b"\n\n"
    piece = 1000 if size == 1 << 20 else 65536
    parser = sse_impl.SSEParser()
    events: list[Any] = []
    for k in range(0, len(stream), piece):
        events.extend(parser.feed(stream[k : k + piece]))
        assert parser.pending == (0 if events else min(k + piece, len(stream)))
    assert len(events) == 1
    assert events[0].data == payload
    assert events[0].raw == stream
    assert parser.flush() is None


def test_many_small_events_in_one_chunk(sse_impl: ModuleType) -> None:
    stream = b"".join(b"data: %d\n\n" % i for i in range(5000))
    events = sse_impl.SSEParser().feed(stream)
    assert [e.data for e in events] == [b"%d" % i for i in range(5000)]


def test_event_too_large(sse_impl: ModuleType) -> None:
    assert issubclass(sse_impl.EventTooLarge, ValueError)
    parser = sse_impl.SSEParser(max_event_bytes=16)
    # completed blocks are not limited, however large
    big = b"data: " + b"x" * 100 + b"\n\n"
    assert len(parser.feed(big)) == 1
    assert parser.feed(b"data: 0123456789") == []  # 16 bytes pending: at the limit, fine
    assert parser.pending == 16
    with pytest.raises(sse_impl.EventTooLarge):
        parser.feed(b"a")
    # unlimited by default
    assert sse_impl.SSEParser().feed(b"data: " + b"y" * 100_000) == []
    filt = sse_impl.StreamFilter(max_event_bytes=8)
    with pytest.raises(sse_impl.EventTooLarge):
        filt.feed(b"data: 123456789")


# --- framing properties ----------------------------------------------------------------------

TOKENS = st.sampled_from(
    [
        b"data",
        b"event",
        b"id",
        b"retry",
        b":",
        b": ",
        b" ",
        b"\r",
        b"\n",
        b"\r\n",
        b"\n\n",
        b"\r\n\r\n",
        b"x",
        b"[DONE]",
        "é✓".encode(),
        b"\x00",
        b"\xff",
    ]
)
RANDOM_STREAM = st.lists(st.one_of(TOKENS, st.binary(max_size=4)), max_size=40).map(b"".join)


@SETTINGS
@given(stream=RANDOM_STREAM, data=st.data())
def test_random_streams(sse_impl: ModuleType, stream: bytes, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    chunks = split(stream, cuts)
    events = all_events(sse_impl, chunks)
    # lossless: the raw of all events is the input, however it was split
    assert b"".join(e.raw for e in events) == stream
    # the twin under test agrees with the reference on the same split
    assert as_tuples(events) == as_tuples(all_events(ref, chunks))
    # the parsed fields never depend on the split
    assert split_fields(sse_impl, stream, chunks) == fields(all_events(sse_impl, [stream]))


VALUE = st.text(alphabet=st.sampled_from(list('ab :é✓{}"\\')), max_size=8)
FIELD = st.tuples(st.sampled_from(["data", "event", "id", ":", "retry"]), VALUE)
BLOCKS = st.lists(st.lists(FIELD, max_size=4), max_size=6)


def render(blocks: list[list[tuple[str, str]]], eol: bytes) -> bytes:
    out = []
    for block in blocks:
        for name, value in block:
            out.append(name.encode() + b": " + value.encode() + eol)
        out.append(eol)
    return b"".join(out)


def expected_fields(blocks: list[list[tuple[str, str]]]) -> list[Fields]:
    result: list[Fields] = []
    for block in blocks:
        datas = [v.encode() for n, v in block if n == "data"]
        events = [v.encode() for n, v in block if n == "event"]
        ids = [v.encode() for n, v in block if n == "id"]
        result.append(
            (
                b"\n".join(datas) if datas else None,
                events[-1] if events else None,
                ids[-1] if ids else None,
            )
        )
    return result


@SETTINGS
@given(blocks=BLOCKS, crlf=st.booleans(), data=st.data())
def test_split_independence(
    sse_impl: ModuleType,
    blocks: list[list[tuple[str, str]]],
    crlf: bool,
    data: st.DataObject,
) -> None:
    stream = render(blocks, b"\r\n" if crlf else b"\n")
    whole = all_events(sse_impl, [stream])
    assert fields(whole) == expected_fields(blocks)
    assert b"".join(e.raw for e in whole) == stream
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    chunks = split(stream, cuts)
    assert split_fields(sse_impl, stream, chunks) == expected_fields(blocks)
    events = all_events(sse_impl, chunks)
    assert b"".join(e.raw for e in events) == stream
    if not crlf:
        assert as_tuples(events) == as_tuples(whole)


# --- usage scanning --------------------------------------------------------------------------

USAGE_CHUNK = (
    b'{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":9,'
    b'"completion_tokens":12,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":3}}}'
)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (USAGE_CHUNK, (9, 12, 21, 3)),
        (b'{"choices":[{"delta":{"content":"hi"}}],"usage":null}', None),
        (b'{"choices":[]}', None),
        (b"", None),
        (b'{"usage":{}}', (0, 0, 0, 0)),
        (b'{"usage":{"foo":1}}', (0, 0, 0, 0)),
        (b'{"usage":5}', None),
        (b'{"usage":[1]}', None),
        (b'{"usage":"x"}', None),
        (b'{"usage":{"prompt_tokens":1', None),  # unterminated
        (b'{"usage":{"prompt_tokens":1,"s":"}', None),  # unterminated string
        (b'{"usage":', None),
        (
            b'{ "usage" :\n {\t"total_tokens" : 7 , "prompt_tokens":\r\n2} }',
            (2, 0, 7, 0),
        ),
        # braces and quotes inside strings do not end the object
        (b'{"usage":{"n":"}\\"}","prompt_tokens":4,"completion_tokens":5}}', (4, 5, 0, 0)),
        (b'{"usage":{"n":"\\\\","total_tokens":6}}', (0, 0, 6, 0)),
        # "usage" inside a string value is not a key
        (b'{"a":"{\\"usage\\":{\\"prompt_tokens\\":1}}"}', None),
        (b'{"a":"x","usage":{"prompt_tokens":3}}', (3, 0, 0, 0)),
        # the last usage key wins
        (
            b'{"usage":{"prompt_tokens":1},"x":{"usage":{"prompt_tokens":2}}}',
            (2, 0, 0, 0),
        ),
        (b'{"usage":{"prompt_tokens":1},"x":{"usage":null}}', None),
        # non-integers read 0
        (
            b'{"usage":{"prompt_tokens":1.5,"completion_tokens":"3","total_tokens":null,'
            b'"prompt_tokens_details":{"cached_tokens":2e3}}}',
            (0, 0, 0, 0),
        ),
        (b'{"usage":{"prompt_tokens":true,"total_tokens":-4}}', (0, 0, -4, 0)),
        (b'{"usage":{"prompt_tokens":123456789012345678}}', (123456789012345678, 0, 0, 0)),
        (b'{"usage":{"prompt_tokens":1234567890123456789}}', (0, 0, 0, 0)),
        # the first match of a count key inside the usage span; prefixes do not match
        (
            b'{"usage":{"prompt_tokens_details":{"cached_tokens":1},"prompt_tokens":2,'
            b'"prompt_tokens":3,"cached_tokens":4}}',
            (2, 0, 0, 1),
        ),
        # count keys outside the usage object are not read
        (b'{"total_tokens":9,"usage":{"prompt_tokens":1}}', (1, 0, 0, 0)),
        (b'{"usage":{"prompt_tokens":1}}{"total_tokens":9}', (1, 0, 0, 0)),
    ],
)
def test_extract_usage_examples(sse_impl: ModuleType, data: bytes, expected: Usage | None) -> None:
    assert sse_impl.extract_usage(data) == expected
    assert sse_impl.extract_usage(bytearray(data)) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (USAGE_CHUNK, True),
        (b'{"choices":[]}', True),
        (b'{ "choices" : [ \n ] }', True),
        (b'{"choices":[{"delta":{}}]}', False),
        (b'{"choices":null}', False),
        (b'{"x":"\\"choices\\":[]"}', False),
        (b'{"a":{"choices":[1]},"choices":[]}', True),
        (b'"choices":[]', False),
        (b"", False),
    ],
)
def test_has_empty_choices_examples(sse_impl: ModuleType, data: bytes, expected: bool) -> None:
    assert sse_impl.has_empty_choices(data) is expected


JSON_KEYS = st.sampled_from(
    [
        "usage",
        "choices",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cached_tokens",
        "prompt_tokens_details",
        "id",
        'q"{u}\\',
    ]
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.integers(0, 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.sampled_from(list('ab{}[]":,\\ é')), max_size=10),
    st.sampled_from(['"usage":{"prompt_tokens":1}', "choices", '"choices":[]']),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(JSON_KEYS, inner, max_size=4)
    ),
    max_leaves=12,
)
COUNT_NAMES = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens")
USAGE_INTS = st.integers(0, 10**18 - 1)
USAGE_OBJECTS = st.builds(
    lambda p, c, t, k, extra: {
        **extra,
        "prompt_tokens": p,
        "completion_tokens": c,
        "total_tokens": t,
        "prompt_tokens_details": {"cached_tokens": k},
    },
    USAGE_INTS,
    USAGE_INTS,
    USAGE_INTS,
    USAGE_INTS,
    st.dictionaries(st.sampled_from(["id", "x"]), JSON_SCALARS, max_size=2),
)


def model_usage(obj: object) -> Usage | None:
    """extract_usage on msgspec's encoding of ``obj``, computed on the decoded value."""
    found: list[object] = []

    def walk(value: object, key: str, out: list[object]) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k == key:
                    out.append(v)
                walk(v, key, out)
        elif isinstance(value, list):
            for v in value:
                walk(v, key, out)

    walk(obj, "usage", found)
    if not found or not isinstance(found[-1], dict):
        return None
    usage = found[-1]
    counts = []
    for name in COUNT_NAMES:
        values: list[object] = []
        walk(usage, name, values)
        v = values[0] if values else None
        ok = isinstance(v, int) and not isinstance(v, bool) and len(str(abs(v))) <= 18
        counts.append(v if ok and isinstance(v, int) else 0)
    return (counts[0], counts[1], counts[2], counts[3])


def model_empty_choices(obj: object) -> bool:
    if isinstance(obj, dict):
        return any((k == "choices" and v == []) or model_empty_choices(v) for k, v in obj.items())
    if isinstance(obj, list):
        return any(model_empty_choices(v) for v in obj)
    return False


@SETTINGS
@given(
    obj=st.dictionaries(JSON_KEYS, JSON_VALUES, max_size=5),
    usage=st.one_of(
        USAGE_OBJECTS.map(lambda u: (True, u)),
        st.one_of(st.none(), JSON_VALUES).map(lambda u: (False, u)),
    ),
    with_usage=st.booleans(),
)
def test_usage_on_json(
    sse_impl: ModuleType, obj: dict[str, Any], usage: tuple[bool, Any], with_usage: bool
) -> None:
    well_formed, value = usage
    if with_usage:
        obj.pop("usage", None)
        obj["usage"] = value  # last key, as OpenAI sends it
    data = msgspec.json.encode(obj)
    result = sse_impl.extract_usage(data)
    assert result == ref.extract_usage(data)
    assert result == model_usage(obj)
    if with_usage and well_formed:
        assert result == (
            value["prompt_tokens"],
            value["completion_tokens"],
            value["total_tokens"],
            value["prompt_tokens_details"]["cached_tokens"],
        )
    empty = sse_impl.has_empty_choices(data)
    assert empty == ref.has_empty_choices(data) == model_empty_choices(obj)


GARBAGE_TOKENS = st.sampled_from(
    [
        b'"usage"',
        b'"choices"',
        b'"prompt_tokens"',
        b'"cached_tokens"',
        b'"total_tokens"',
        b'"completion_tokens"',
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b" ",
        b"\n",
        b'"',
        b"\\",
        b"12",
        b"-",
        b".5",
        b"e",
        b"null",
        b"1234567890123456789",
    ]
)


@SETTINGS
@given(
    data=st.one_of(
        st.lists(st.one_of(GARBAGE_TOKENS, st.binary(max_size=3)), max_size=30).map(b"".join),
        st.builds(
            lambda obj, cut, junk: msgspec.json.encode(obj)[:cut] + junk,
            st.dictionaries(JSON_KEYS, JSON_VALUES, max_size=4),
            st.integers(0, 200),
            st.binary(max_size=4),
        ),
    )
)
def test_usage_on_garbage(sse_impl: ModuleType, data: bytes) -> None:
    assert sse_impl.extract_usage(data) == ref.extract_usage(data)
    assert sse_impl.has_empty_choices(data) == ref.has_empty_choices(data)


# --- stream filter ---------------------------------------------------------------------------


def content_chunk(text: str) -> bytes:
    return msgspec.json.encode(
        {"id": "c", "object": "chat.completion.chunk", "choices": [{"delta": {"content": text}}]}
    )


def usage_chunk(p: int, c: int, choices: bool) -> bytes:
    return msgspec.json.encode(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [{"delta": {}, "finish_reason": "stop"}] if choices else [],
            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
        }
    )


def test_filter_identity(sse_impl: ModuleType) -> None:
    stream = (
        b": ping\n\n"
        b"data: " + content_chunk("hel") + b"\n\n"
        b"data: " + content_chunk("lo") + b"\n\n"
        b"data: " + usage_chunk(5, 2, choices=False) + b"\n\n"
        b"data: [DONE]\n\n"
    )
    filt = sse_impl.StreamFilter()
    assert filt.feed(stream[:40]) == b": ping\n\n"
    assert filt.feed(stream[40:]) == stream[8:]
    assert filt.flush() == b""
    assert (filt.usage, filt.done, filt.events, filt.dropped) == ((5, 2, 7, 0), True, 4, 0)


def test_filter_drops_usage_only_chunk(sse_impl: ModuleType) -> None:
    usage_block = b"data: " + usage_chunk(5, 2, choices=False) + b"\r\n\r\n"
    head = b"data: " + content_chunk("hi") + b"\r\n\r\n"
    stream = head + usage_block + b"data: [DONE]\r\n\r\n"
    filt = sse_impl.StreamFilter(drop_usage_only=True)
    assert filt.feed(stream) == head + b"data: [DONE]\r\n\r\n"
    assert (filt.usage, filt.done, filt.events, filt.dropped) == ((5, 2, 7, 0), True, 3, 1)
    # usage on a chunk that still has choices is kept
    kept = b"data: " + usage_chunk(1, 1, choices=True) + b"\n\n"
    filt = sse_impl.StreamFilter(drop_usage_only=True)
    assert filt.feed(kept) == kept
    assert filt.usage == (1, 1, 2, 0)
    assert filt.dropped == 0
    # usage: null is no usage: the chunk is not dropped, only its usage member is
    null = b'data: {"choices":[],"usage":null}\n\n'
    filt = sse_impl.StreamFilter(drop_usage_only=True)
    assert filt.feed(null) == b'data: {"choices":[]}\n\n'
    assert (filt.usage, filt.dropped) == (None, 0)
    filt = sse_impl.StreamFilter()
    assert filt.feed(null) == null
    assert filt.usage is None


def test_filter_flush_and_multiline(sse_impl: ModuleType) -> None:
    filt = sse_impl.StreamFilter(drop_usage_only=True)
    body = usage_chunk(3, 4, choices=False)
    assert filt.feed(b"data: " + body[:10] + b"\ndata: " + body[10:]) == b""
    # joined data is "<part1>\n<part2>": still JSON, still a usage-only chunk
    assert filt.flush() == b""
    assert (filt.usage, filt.dropped, filt.events) == ((3, 4, 7, 0), 1, 1)
    filt = sse_impl.StreamFilter()
    assert filt.feed(b"data: [DONE]") == b""
    assert filt.flush() == b"data: [DONE]"
    assert filt.done
    assert filt.flush() == b""


def test_filter_attributes_read_only(sse_impl: ModuleType) -> None:
    filt = sse_impl.StreamFilter()
    for name in ("usage", "done", "events", "dropped"):
        with pytest.raises(AttributeError):
            setattr(filt, name, 1)


NULLS = [  # (member inserted before the closing brace, what the filter leaves of it)
    (b',"usage":null', b""),
    (b', "usage" : null ', b" "),
    (b' ,\t"usage":\tnull', b" "),
]
TEXT = st.lists(
    st.sampled_from(['"usage":null', '"usage"', "null", ",", "{", "}", "\\", " ", "é"]),
    max_size=4,
).map("".join)


def with_null(body: bytes, member: int) -> tuple[bytes, bytes]:
    """``body`` with a usage-null member added last, and what drop_usage_only makes of it."""
    inserted, left = NULLS[member]
    return body[:-1] + inserted + b"}", body[:-1] + left + b"}"


def first_null(body: bytes, spaced: bool) -> tuple[bytes, bytes]:
    """``body`` with a usage-null member added first, and what drop_usage_only makes of it."""
    if spaced:
        return b'{ "usage" : null ,\t' + body[1:], b"{ " + body[1:]
    return b'{"usage":null,' + body[1:], body


# (block, the block as forwarded with drop_usage_only; None: dropped)
FILTER_BLOCK = st.one_of(
    st.builds(lambda t: (b"data: " + content_chunk(t),) * 2, TEXT),
    st.builds(
        lambda p, c, ch: (
            b"data: " + usage_chunk(p, c, ch),
            None if not ch else b"data: " + usage_chunk(p, c, ch),
        ),
        st.integers(0, 10**6),
        st.integers(0, 10**6),
        st.booleans(),
    ),
    st.builds(
        lambda t, m: tuple(b"data: " + x for x in with_null(content_chunk(t), m)),
        TEXT,
        st.integers(0, len(NULLS) - 1),
    ),
    st.builds(
        lambda t, sp: tuple(b"data:" + x for x in first_null(content_chunk(t), sp)),
        TEXT,
        st.booleans(),
    ),
    st.just((b'data: {"usage":null}', b"data: {}")),
    st.just((b"data: [DONE]",) * 2),
    st.just((b": keep-alive",) * 2),
    st.just((b"",) * 2),
    st.just((b"event: x\nid: 3",) * 2),
    st.just((b'event: x\ndata: {"usage":null}',) * 2),
    st.just((b': c\ndata: {"a":1,"usage":null}',) * 2),
    st.just((b'data: {"a":1,"usage":null}\n: c',) * 2),
    st.just((b'data: {"choices":[{"index":0}],\ndata: "usage":null}',) * 2),
    st.just((b'data: {"choices":[],\ndata: "usage":{"prompt_tokens":8}}', None)),
)


@SETTINGS
@given(
    blocks=st.lists(FILTER_BLOCK, max_size=8),
    eol=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    drop=st.booleans(),
    unterminated=st.booleans(),
    data=st.data(),
)
def test_filter_differential(
    sse_impl: ModuleType,
    blocks: list[tuple[bytes, bytes | None]],
    eol: bytes,
    drop: bool,
    unterminated: bool,
    data: st.DataObject,
) -> None:
    rendered = [
        (b.replace(b"\n", eol), f if f is None else f.replace(b"\n", eol)) for b, f in blocks
    ]
    stream = b"".join(b + eol + eol for b, _ in rendered)
    if unterminated and stream:
        stream = stream[: -len(eol)]
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6))
    chunks = split(stream, cuts)
    results = []
    for impl in (sse_impl, ref):
        filt = impl.StreamFilter(drop_usage_only=drop)
        out = b"".join([filt.feed(c) for c in chunks]) + filt.flush()
        results.append((out, filt.usage, filt.done, filt.events, filt.dropped))
    assert results[0] == results[1]
    out, usage, done, n_events, dropped = results[0]
    events = all_events(ref, chunks)
    assert n_events == sum(e.data is not None for e in events)
    assert done == (b"data: [DONE]" in [b for b, _ in blocks])
    if not drop:
        assert out == stream and dropped == 0
    else:
        # forwarded bytes: each event's raw, less the dropped blocks and the usage-null cuts
        # (data events come one per block that has a data line, in order)
        with_data = iter([(b, f) for b, f in rendered if b"data" in b])
        expected = []
        for e in events:
            if e.data is None:
                expected.append(e.raw)
                continue
            block, forwarded = next(with_data)
            if forwarded is not None:
                expected.append(e.raw.replace(block, forwarded, 1))
        assert out == b"".join(expected)
        assert dropped == sum(f is None for b, f in blocks)
        if eol == b"\n" and not unterminated:  # block raws are exactly the rendered blocks
            assert out == b"".join(f + eol + eol for _, f in blocks if f is not None)
    usages = [ref.extract_usage(e.data) for e in events if e.data and b'"usage"' in e.data]
    usages = [u for u in usages if u is not None]
    assert usage == (usages[-1] if usages else None)


# --- stream filter: usage-null stripping ----------------------------------------------------


def filtered(impl: ModuleType, stream: bytes, drop: bool = True) -> bytes:
    filt = impl.StreamFilter(drop_usage_only=drop)
    out: bytes = filt.feed(stream) + filt.flush()
    return out


OPENAI_CHUNK = (
    b'{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
    b'"delta":{"content":"Hi"},"finish_reason":null}]'
)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (OPENAI_CHUNK + b',"usage":null}', OPENAI_CHUNK + b"}"),
        # whitespace around the key, the colon and the value; the cut is "," through "null"
        (b'{"a": 1, "usage" : null }', b'{"a": 1 }'),
        (b'{"a":1 ,\t"usage"\t:\tnull\t}', b'{"a":1 \t}'),
        (b'{"a":1,"usage":null,"b":2}', b'{"a":1,"b":2}'),
        # first member: the key through null, and the "," plus the whitespace after it
        (b'{"usage":null,"id":"x"}', b'{"id":"x"}'),
        (b'{ "usage" : null , \t"id":"x"}', b'{ "id":"x"}'),
        # only member
        (b'{"usage":null}', b"{}"),
        (b'{ "usage" : null }', b"{  }"),
        # the last usage key decides, at any depth
        (b'{"choices":[{"usage":null}],"usage":null}', b'{"choices":[{"usage":null}]}'),
        (b'{"x":{"usage":null}}', b'{"x":{}}'),
        # escaped text is no key: only the real member goes
        (
            b'{"choices":[{"delta":{"content":"say \\"usage\\":null} ,\\"usage\\":null"}}],'
            b'"usage":null}',
            b'{"choices":[{"delta":{"content":"say \\"usage\\":null} ,\\"usage\\":null"}}]}',
        ),
    ],
)
def test_filter_strips_usage_null(sse_impl: ModuleType, data: bytes, expected: bytes) -> None:
    for prefix in (b"data: ", b"data:", b"data:  "):
        for eol in (b"\n", b"\r\n", b"\r"):
            block = prefix + data + eol + eol
            assert filtered(sse_impl, block) == prefix + expected + eol + eol
            assert filtered(sse_impl, block, drop=False) == block
            # unterminated at the end of the stream: cut as well
            assert filtered(sse_impl, prefix + data + eol) == prefix + expected + eol
            assert filtered(sse_impl, prefix + data) == prefix + expected


@pytest.mark.parametrize(
    "data",
    [
        # escaped text alone is untouched
        b'{"choices":[{"delta":{"content":"\\"usage\\":null"}}]}',
        b'{"choices":[{"delta":{"content":"{\\"usage\\":null}"}}]}',
        b'{"a":"x\\",\\"usage\\":null}"}',
        # a value other than null (the usage object is kept and recorded)
        OPENAI_CHUNK + b',"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}',
        b'{"usage":0}',
        b'{"usage":"null"}',
        b'{"usage":[null]}',
        # a later usage key with an object value decides
        b'{"usage":null,"x":{"usage":{"prompt_tokens":1}}}',
        # null not followed by "}" or ","
        b'{"usage":null',
        b'{"usage":null ',
        b'{"usage":nullx}',
        b'{"usage":null]',
        b'{"usage":nul}',
        # no key pattern
        b'{"usage" null}',
        b'["usage":null]',
        b'"usage":null}',
        b"[DONE]",
        b"",
    ],
)
def test_filter_leaves_other_data_alone(sse_impl: ModuleType, data: bytes) -> None:
    for eol in (b"\n", b"\r\n"):
        block = b"data: " + data + eol + eol
        assert filtered(sse_impl, block) == block


@pytest.mark.parametrize(
    "block",
    [
        # more than one data line: the data is not contiguous in raw
        b'data: {"choices":[{"index":0}],\ndata: "usage":null}\n\n',
        b'data: {"a":1,"usage":null}\ndata\n\n',
        # other fields or comments in the block
        b'event: message\ndata: {"a":1,"usage":null}\n\n',
        b'data: {"a":1,"usage":null}\nid: 7\n\n',
        b': c\ndata: {"a":1,"usage":null}\n\n',
        b'data: {"a":1,"usage":null}\n:\n\n',
        b'data: {"a":1,"usage":null}\nretry: 5\r\n\r\n',
        # "data" is not the field name
        b'Data: {"usage":null}\n\n',
        b'data : {"usage":null}\n\n',
    ],
)
def test_filter_leaves_other_blocks_alone(sse_impl: ModuleType, block: bytes) -> None:
    assert filtered(sse_impl, block) == block


def datas(stream: bytes) -> list[bytes]:
    return [e.data for e in all_events(ref, [stream]) if e.data is not None]


def test_filter_usage_null_stream(sse_impl: ModuleType) -> None:
    def chunk(delta: bytes, finish: bytes) -> bytes:
        return (
            b'{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":'
            b'[{"index":0,"delta":' + delta + b',"finish_reason":' + finish + b"}]"
        )

    bodies = [
        chunk(b'{"role":"assistant","content":""}', b"null"),
        chunk(b'{"content":"Hi"}', b"null"),
        chunk(b"{}", b'"stop"'),
    ]
    usage = (
        b'{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],'
        b'"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}'
    )
    for eol in (b"\n", b"\r\n"):
        upstream = b"".join(b"data: " + b + b',"usage":null}' + eol + eol for b in bodies)
        upstream += b"data: " + usage + eol + eol + b"data: [DONE]" + eol + eol
        client = b"".join(b"data: " + b + b"}" + eol + eol for b in bodies)
        client += b"data: [DONE]" + eol + eol
        assert filtered(sse_impl, upstream) == client
        # every split into two or three chunks
        for i in range(len(upstream) + 1):
            for j in range(i, len(upstream) + 1, 7):
                filt = sse_impl.StreamFilter(drop_usage_only=True)
                out = b"".join(filt.feed(c) for c in split(upstream, [i, j])) + filt.flush()
                if any(upstream[c - 1 : c + 1] == b"\r\n" for c in (i, j) if c > 0):
                    # a dropped block can take the LF of the previous block's CRLF along and
                    # leave its own to the next block (a field-less block for the client)
                    assert datas(out) == datas(client)
                else:
                    assert out == client
                assert (filt.usage, filt.done, filt.events, filt.dropped) == (
                    (5, 2, 7, 0),
                    True,
                    5,
                    1,
                )


def test_filter_usage_null_after_split_crlf(sse_impl: ModuleType) -> None:
    # the LF of the CRLF ending a block opens the next block's raw: still one data line
    filt = sse_impl.StreamFilter(drop_usage_only=True)
    assert filt.feed(b'data: {"a":1,"usage":null}\r\n\r') == b'data: {"a":1}\r\n\r'
    assert filt.feed(b'\ndata: {"usage":null,"b":2}\r\n\r') == b'\ndata: {"b":2}\r\n\r'
    assert filt.feed(b'\ndata:{"usage":null}') == b""
    assert filt.flush() == b"\ndata:{}"
    assert filt.dropped == 0


# OpenAI-shaped chunks with a usage member (null or an object) first, last or alone, rendered
# with random JSON whitespace (spaces and tabs: a data line holds no CR or LF)
DELTAS = st.fixed_dictionaries(
    {"index": st.integers(0, 3), "delta": st.fixed_dictionaries({"content": TEXT})},
    optional={"usage": st.one_of(st.none(), USAGE_OBJECTS), "logprobs": JSON_VALUES},
)
CHUNKS = st.builds(
    lambda extra, choices, usage, where: (
        {**extra, "choices": choices}
        if usage == "absent"
        else {"usage": usage}
        if where == "only"
        else {"usage": usage, **extra, "choices": choices}
        if where == "first"
        else {**extra, "choices": choices, "usage": usage}
    ),
    st.dictionaries(st.sampled_from(["id", "object", "x", 'q"{u}\\']), JSON_VALUES, max_size=3),
    st.lists(DELTAS, max_size=2),
    st.one_of(st.none(), st.none(), USAGE_OBJECTS, st.just("absent")),
    st.sampled_from(["last", "last", "first", "only"]),
)


def encode_ws(value: object, rnd: Any) -> bytes:
    def ws() -> str:
        return str(rnd.choice(["", "", " ", "\t", " \t "]))

    def enc(v: object) -> str:
        if isinstance(v, dict):
            items = [f"{ws()}{json.dumps(k)}{ws()}:{ws()}{enc(x)}{ws()}" for k, x in v.items()]
            return "{" + (",".join(items) or ws()) + "}"
        if isinstance(v, list):
            return "[" + (",".join(ws() + enc(x) + ws() for x in v) or ws()) + "]"
        return json.dumps(v, ensure_ascii=bool(rnd.random() < 0.5))

    return (ws() + enc(value) + ws()).encode()


def strip_last_null_usage(value: object) -> object:
    """``value`` less its last ``usage`` member (in text order) where that member is null."""
    found: list[dict[str, object]] = []

    def walk(v: object) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if k == "usage":
                    found.append(v)
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(value)
    if found and found[-1]["usage"] is None:
        del found[-1]["usage"]
    return value


# (kind, payload): "line" = one data line of JSON; "multi" = the JSON over two data lines;
# "field" = one data line of JSON after an event field; "done"; "comment"
USAGE_BLOCKS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["line", "line", "line", "multi", "field"]), CHUNKS),
        st.tuples(st.sampled_from(["done", "comment"]), st.none()),
    ),
    max_size=8,
)


def render_usage_blocks(blocks: list[tuple[str, Any]], rnd: Any, eol: bytes) -> bytes:
    out = []
    for kind, obj in blocks:
        if kind == "done":
            out.append(b"data: [DONE]")
        elif kind == "comment":
            out.append(b": keep-alive")
        else:
            text = encode_ws(obj, rnd)
            if kind == "multi":  # the line break is JSON whitespace after the opening brace
                i = text.index(b"{") + 1
                out.append(b"data: " + text[:i] + eol + b"data:" + text[i:])
            else:
                prefix = rnd.choice([b"data: ", b"data:"])
                out.append((b"event: m" + eol if kind == "field" else b"") + prefix + text)
    return b"".join(b + eol + eol for b in out)


@SETTINGS
@given(
    blocks=USAGE_BLOCKS,
    rnd=st.randoms(use_true_random=False),
    eol=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    data=st.data(),
)
def test_filter_strips_usage_null_json(
    sse_impl: ModuleType,
    blocks: list[tuple[str, Any]],
    rnd: Any,
    eol: bytes,
    data: st.DataObject,
) -> None:
    stream = render_usage_blocks(blocks, rnd, eol)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6))
    chunks = split(stream, cuts)
    outs = []
    for impl in (sse_impl, ref):
        filt = impl.StreamFilter(drop_usage_only=True)
        outs.append(b"".join([filt.feed(c) for c in chunks]) + filt.flush())
    assert outs[0] == outs[1]
    # what the client gets: the input events less the usage-only chunks, and less the usage
    # member where it was null (one data line only: other blocks are forwarded as they are)
    expected: list[object] = []
    for kind, obj in blocks:
        if kind == "done":
            expected.append(b"[DONE]")
        elif kind != "comment" and not (model_usage(obj) is not None and model_empty_choices(obj)):
            obj = json.loads(json.dumps(obj))
            expected.append(strip_last_null_usage(obj) if kind == "line" else obj)
    got = [
        e.data if e.data == b"[DONE]" else json.loads(e.data)
        for e in all_events(ref, [outs[0]])
        if e.data is not None
    ]
    assert got == expected
