"""Unit and differential tests for both twins of ``fastgw._core.http1``.

Every test takes ``http1_impl`` (pure-python / c-extension). Differential tests compare the
twin under test with the pure reference ``_http1_py`` feed by feed: returned bytes, every
attribute after each feed, and the message of any error.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgw._core import _http1_py as ref
from fastgw._core import http1

SETTINGS = settings(
    max_examples=int(os.environ.get("FASTGW_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

Snapshot = tuple[int, bytes, int, list[tuple[bytes, bytes]], bool, bool, bool, int, bool]
Step = tuple[str, Any, Snapshot | None]


# --- helpers ---------------------------------------------------------------------------------


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def snapshot(p: Any) -> Snapshot:
    return (
        p.status,
        p.reason,
        p.version,
        list(p.headers),
        p.head_complete,
        p.complete,
        p.keep_alive,
        p.content_length,
        p.chunked,
    )


def feed_all(impl: ModuleType, chunks: Sequence[bytes], eof: bool = False, **kw: Any) -> Any:
    """Feed every chunk (and EOF if asked); return the parser with ``.body`` collected."""
    p = impl.ResponseParser(**kw)
    body = b"".join(p.feed(c) for c in chunks)
    if eof:
        p.feed_eof()
    return p, body


def body_of(impl: ModuleType, data: bytes, eof: bool = False, **kw: Any) -> bytes:
    p, body = feed_all(impl, [data], eof, **kw)
    assert p.complete
    return bytes(body)


def trace(impl: ModuleType, chunks: Sequence[bytes], eof: bool, **kw: Any) -> list[Step]:
    """What each call did: ("feed", bytes, snapshot) / ("eof", None, snapshot) / ("error", msg)."""
    p = impl.ResponseParser(**kw)
    steps: list[Step] = []
    try:
        for c in chunks:
            out = p.feed(c)
            assert type(out) is bytes
            steps.append(("feed", out, snapshot(p)))
        if eof:
            p.feed_eof()
            steps.append(("eof", None, snapshot(p)))
    except impl.HTTPParseError as exc:
        steps.append(("error", str(exc), None))
        with pytest.raises(impl.HTTPParseError):  # a failed parser stays failed
            p.feed(b"x")
    return steps


def assert_twins_agree(
    impl: ModuleType, chunks: Sequence[bytes], eof: bool = True, **kw: Any
) -> list[Step]:
    got = trace(impl, chunks, eof, **kw)
    assert got == trace(ref, chunks, eof, **kw)
    return got


def raises(impl: ModuleType, data: bytes, match: str, eof: bool = False, **kw: Any) -> None:
    """``data`` fails with ``match`` when fed whole and when fed byte by byte."""
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        with pytest.raises(impl.HTTPParseError, match=match):
            feed_all(impl, chunks, eof, **kw)


def chunked(*parts: bytes, trailers: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(x), x) for x in parts) + b"0\r\n" + trailers + b"\r\n"


JSON_BODY = b'{"id":"chatcmpl-1","choices":[{"message":{"content":"hi"}}]}'
CL_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: %d\r\n"
    b"X-Request-Id:  \t abc \t\r\n"
    b"\r\n" % len(JSON_BODY)
) + JSON_BODY
CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)
CHUNKED_BODY = (
    b"7;name=value;flag\r\ndata: a\r\n"
    b"1A \t; ext\r\n" + b"b" * 26 + b"\r\n"
    b"00000003\r\nccc\r\n"
    b"0;last\r\nX-Trailer: one\r\nServer-Timing: t=1\r\n\r\n"
)
CHUNKED_PAYLOAD = b"data: a" + b"b" * 26 + b"ccc"


# --- examples --------------------------------------------------------------------------------


def test_switch_module_binds_one_twin() -> None:
    twin = "_http1_c" if http1.COMPILED else "_http1_py"
    assert http1.ResponseParser.__module__ == f"fastgw._core.{twin}"
    assert issubclass(http1.HTTPParseError, ValueError)


def test_initial_state(http1_impl: ModuleType) -> None:
    p = http1_impl.ResponseParser()
    assert snapshot(p) == (0, b"", 0, [], False, False, False, -1, False)
    assert p.feed(b"") == b""


def test_content_length_one_feed(http1_impl: ModuleType) -> None:
    p = http1_impl.ResponseParser()
    assert p.feed(CL_RESPONSE) == JSON_BODY
    assert (p.status, p.reason, p.version) == (200, b"OK", 11)
    assert p.headers == [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(JSON_BODY)),
        (b"x-request-id", b"abc"),
    ]
    assert p.head_complete and p.complete and p.keep_alive and not p.chunked
    assert p.content_length == len(JSON_BODY)
    p.feed_eof()  # already complete: no-op
    assert p.complete


def test_content_length_split_at_every_offset(http1_impl: ModuleType) -> None:
    for cut in range(1, len(CL_RESPONSE)):
        p, body = feed_all(http1_impl, split(CL_RESPONSE, [cut]))
        assert body == JSON_BODY and p.complete and p.keep_alive, cut
    p, body = feed_all(http1_impl, [bytes([b]) for b in CL_RESPONSE])
    assert body == JSON_BODY and p.complete
    head_len = len(CL_RESPONSE) - len(JSON_BODY)
    assert_twins_agree(http1_impl, [bytes([b]) for b in CL_RESPONSE])
    # the head alone: no body yet, head fields already set
    p = http1_impl.ResponseParser()
    assert p.feed(CL_RESPONSE[:head_len]) == b""
    assert p.head_complete and not p.complete and p.status == 200


def test_body_only_feed_returns_input_itself(http1_impl: ModuleType) -> None:
    p = http1_impl.ResponseParser()
    head_len = len(CL_RESPONSE) - len(JSON_BODY)
    assert p.feed(CL_RESPONSE[:head_len]) == b""
    piece = JSON_BODY[:10]
    assert p.feed(piece) is piece  # no copy when the whole input is body


def test_chunked_with_extensions_and_trailers(http1_impl: ModuleType) -> None:
    data = CHUNKED_HEAD + CHUNKED_BODY
    p = http1_impl.ResponseParser()
    assert p.feed(data) == CHUNKED_PAYLOAD
    assert p.complete and p.chunked and p.keep_alive and p.content_length == -1
    assert p.headers[-1] == (b"transfer-encoding", b"chunked")
    for cut in range(1, len(data)):
        p, body = feed_all(http1_impl, split(data, [cut]))
        assert body == CHUNKED_PAYLOAD and p.complete, cut
    for a in range(len(CHUNKED_HEAD) - 2, len(data), 3):
        for b in range(a + 1, len(data), 5):
            p, body = feed_all(http1_impl, split(data, [a, b]))
            assert body == CHUNKED_PAYLOAD and p.complete, (a, b)
    steps = assert_twins_agree(http1_impl, [bytes([b]) for b in data], eof=False)
    assert b"".join(s[1] for s in steps) == CHUNKED_PAYLOAD


def test_chunked_lenient_bare_lf_in_size_and_trailer_lines(http1_impl: ModuleType) -> None:
    data = b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\nabc\r\n0\nA: b\n\n"
    assert body_of(http1_impl, data) == b"abc"


def test_many_chunks_in_one_feed_one_bytes_object(http1_impl: ModuleType) -> None:
    parts = [bytes([65 + i]) * (i + 1) for i in range(20)]
    p = http1_impl.ResponseParser()
    assert p.feed(CHUNKED_HEAD) == b""
    out = p.feed(chunked(*parts))
    assert type(out) is bytes and out == b"".join(parts) and p.complete


def test_interim_responses_are_discarded(http1_impl: ModuleType) -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    p = http1_impl.ResponseParser()
    assert p.feed(data[:25]) == b""  # only the 100 head
    assert p.status == 0 and not p.head_complete and p.headers == []
    assert p.feed(data[25:]) == b"ok"
    assert p.status == 200 and p.headers == [(b"content-length", b"2")] and p.complete
    for cut in range(1, len(data)):
        assert feed_all(http1_impl, split(data, [cut]))[1] == b"ok", cut


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(http1_impl: ModuleType, status: int) -> None:
    head = b"HTTP/1.1 %d Nothing\r\nContent-Length: 100\r\n\r\n" % status
    p = http1_impl.ResponseParser()
    assert p.feed(head) == b""
    assert p.complete and p.keep_alive and p.status == status and p.content_length == 100
    with pytest.raises(http1_impl.HTTPParseError, match="unexpected data after response"):
        http1_impl.ResponseParser().feed(head + b"x")
    p = http1_impl.ResponseParser()
    assert p.feed(b"HTTP/1.1 %d X\r\nTransfer-Encoding: chunked\r\n\r\n" % status) == b""
    assert p.complete and not p.chunked


def test_read_until_eof(http1_impl: ModuleType) -> None:
    p = http1_impl.ResponseParser()
    assert p.feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nab") == b"ab"
    assert p.head_complete and not p.complete and not p.keep_alive
    assert p.feed(b"cd") == b"cd"
    p.feed_eof()
    assert p.complete and not p.keep_alive and p.content_length == -1 and not p.chunked
    p.feed_eof()
    with pytest.raises(http1_impl.HTTPParseError, match="unexpected data after response"):
        p.feed(b"x")
    p = http1_impl.ResponseParser()
    p.feed(b"HTTP/1.1 200 OK\r\n\r\n")
    p.feed_eof()  # an empty body is fine
    assert p.complete


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        (b"1.1", None, True),
        (b"1.1", b"close", False),
        (b"1.1", b"Upgrade, CLOSE", False),
        (b"1.1", b"keep-alive", True),
        (b"1.1", b"closed", True),
        (b"1.0", None, False),
        (b"1.0", b"keep-alive", True),
        (b"1.0", b"Keep-Alive", True),
        (b"1.0", b"foo ,\tkeep-alive", True),
        (b"1.0", b"keep-alive, close", False),
    ],
)
def test_keep_alive_rules(
    http1_impl: ModuleType, version: bytes, connection: bytes | None, keep_alive: bool
) -> None:
    conn = b"Connection: %s\r\n" % connection if connection is not None else b""
    data = b"HTTP/%s 200 OK\r\n%sContent-Length: 1\r\n\r\nx" % (version, conn)
    p, body = feed_all(http1_impl, [data])
    assert body == b"x" and p.complete and p.keep_alive is keep_alive
    assert p.version == (10 if version == b"1.0" else 11)
    # the same head with an until-EOF body is never reusable
    p, body = feed_all(http1_impl, [data.replace(b"Content-Length: 1\r\n", b"")], eof=True)
    assert body == b"x" and p.complete and p.keep_alive is False


def test_connection_headers_combine(http1_impl: ModuleType) -> None:
    data = b"HTTP/1.1 200 OK\r\nConnection: te\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    p, _ = feed_all(http1_impl, [data])
    assert p.complete and not p.keep_alive


def test_transfer_encoding_framing(http1_impl: ModuleType) -> None:
    gz_chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n" + chunked(b"zz")
    p, body = feed_all(http1_impl, [gz_chunked])
    assert body == b"zz" and p.complete and p.chunked and p.keep_alive
    for te in (b"gzip", b"chunked, gzip", b"chunked;x=1", b""):
        data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: %s\r\n\r\n3\r\nabc\r\n" % te
        p, body = feed_all(http1_impl, [data])
        assert body == b"3\r\nabc\r\n" and not p.complete and not p.chunked, te
        p.feed_eof()
        assert p.complete and not p.keep_alive
    # several headers: the last coding of the combined list decides; empty elements are skipped
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked, \r\n\r\n"
    p, body = feed_all(http1_impl, [data + chunked(b"q")])
    assert body == b"q" and p.complete and p.chunked


def test_transfer_encoding_overrides_content_length(http1_impl: ModuleType) -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(b"hello")
    )
    p, body = feed_all(http1_impl, [data])
    assert body == b"hello" and p.complete and p.chunked
    assert p.content_length == -1 and not p.keep_alive  # possible smuggling: don't reuse


def test_content_length_lists(http1_impl: ModuleType) -> None:
    for cl in (b"Content-Length: 3, 3", b"Content-Length: 003\r\nContent-Length: 3"):
        p, body = feed_all(http1_impl, [b"HTTP/1.1 200 OK\r\n%s\r\n\r\nabc" % cl])
        assert body == b"abc" and p.complete and p.content_length == 3


def test_zero_content_length(http1_impl: ModuleType) -> None:
    p = http1_impl.ResponseParser()
    assert p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") == b""
    assert p.complete and p.keep_alive


def test_status_line_variants(http1_impl: ModuleType) -> None:
    cases = [
        (b"HTTP/1.1 200 OK", 200, b"OK", 11),
        (b"HTTP/1.1 200 ", 200, b"", 11),
        (b"HTTP/1.1 200", 200, b"", 11),
        (b"HTTP/1.0 404 Not  Found ", 404, b"Not  Found ", 10),
        (b"HTTP/1.1 599 \xe9t\xe9\t!", 599, b"\xe9t\xe9\t!", 11),
    ]
    for line, status, reason, version in cases:
        p, _ = feed_all(http1_impl, [line + b"\r\nContent-Length: 0\r\n\r\n"])
        assert (p.status, p.reason, p.version) == (status, reason, version), line


def test_lenient_bare_lf_head_and_header_syntax(http1_impl: ModuleType) -> None:
    data = b"HTTP/1.1 200 OK\nA:\nB-C:x y \nX-Mixed: 1\r\nContent-Length: 1\n\nz"
    p, body = feed_all(http1_impl, [data])
    assert body == b"z" and p.complete
    assert p.headers == [
        (b"a", b""),
        (b"b-c", b"x y"),
        (b"x-mixed", b"1"),
        (b"content-length", b"1"),
    ]


STATUS_ERRORS = [
    b"HTTP/2 200 OK",
    b"HTTP/1.2 200 OK",
    b"http/1.1 200 OK",
    b"HTTP/1.1 20 OK",
    b"HTTP/1.1 2000 OK",
    b"HTTP/1.1 099 X",
    b"HTTP/1.1 600 X",
    b"HTTP/1.1  200 OK",
    b"HTTP/1.1 200\tOK",
    b"HTTP/1.1 2x0 OK",
    b"HTTP/1.1 200 O\x00K",
    b"HTTP/1.1 200 O\rK",
    b" HTTP/1.1 200 OK",
    b"ICY 200 OK",
    b"",
]


@pytest.mark.parametrize("line", STATUS_ERRORS)
def test_invalid_status_line(http1_impl: ModuleType, line: bytes) -> None:
    raises(http1_impl, line + b"\r\nContent-Length: 0\r\n\r\n", "invalid status line")


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (b"Bad Name: x", "invalid header name"),
        (b": x", "invalid header name"),
        (b"Na\x7fme: x", "invalid header name"),
        (b"Name : x", "invalid header name"),
        (b"NoColon", r"invalid header line \(no colon\)"),
        (b" folded", "obsolete line folding"),
        (b"\tfolded: x", "obsolete line folding"),
        (b"X: a\x00b", "invalid header value"),
        (b"X: a\rb", "invalid header value"),
        (b"X: a\x7f", "invalid header value"),
        (b"Content-Length: abc", "invalid content-length"),
        (b"Content-Length: -1", "invalid content-length"),
        (b"Content-Length: +1", "invalid content-length"),
        (b"Content-Length:", "invalid content-length"),
        (b"Content-Length: 1,", "invalid content-length"),
        (b"Content-Length: 0x10", "invalid content-length"),
        (b"Content-Length: 1 2", "invalid content-length"),
        (b"Content-Length: 1234567890123456789", "invalid content-length"),
        (b"Content-Length: 3, 4", "conflicting content-length values"),
        (b"Content-Length: 3\r\nContent-Length: 4", "conflicting content-length values"),
    ],
)
def test_invalid_header(http1_impl: ModuleType, header: bytes, match: str) -> None:
    raises(http1_impl, b"HTTP/1.1 200 OK\r\nA: b\r\n" + header + b"\r\n\r\n", match)


def test_101_is_refused(http1_impl: ModuleType) -> None:
    raises(http1_impl, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", "101")


def test_transfer_encoding_in_http10(http1_impl: ModuleType) -> None:
    data = b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    raises(http1_impl, data, "HTTP/1.0")


def test_head_size_limit(http1_impl: ModuleType) -> None:
    head = b"HTTP/1.1 200 OK\r\nX: " + b"v" * 50 + b"\r\nContent-Length: 1\r\n\r\n"
    limit = len(head)
    for chunks in ([head + b"!"], [bytes([b]) for b in head + b"!"]):
        p, body = feed_all(http1_impl, chunks, max_head_bytes=limit)
        assert body == b"!" and p.complete
    raises(http1_impl, head + b"!", "response head too large", max_head_bytes=limit - 1)
    # no terminator in sight: fails as soon as the buffered bytes pass the limit
    p = http1_impl.ResponseParser(max_head_bytes=100)
    p.feed(b"HTTP/1.1 200 OK\r\n" + b"x" * 83)
    with pytest.raises(http1_impl.HTTPParseError, match="too large"):
        p.feed(b"x")
    # every head counts on its own (interim heads included)
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    p, body = feed_all(http1_impl, [interim * 50 + head + b"!"], max_head_bytes=limit)
    assert body == b"!"


def test_chunk_size_errors(http1_impl: ModuleType) -> None:
    for line, match in [
        (b"", "invalid chunk size"),
        (b"g", "invalid chunk size"),
        (b" 5", "invalid chunk size"),
        (b"5 x", "invalid chunk size"),
        (b"0x5", "invalid chunk size"),
        (b"-1", "invalid chunk size"),
        (b"5\r", "invalid chunk size"),  # CR CR LF
        (b"%x" % (2**62 + 1), "chunk size too large"),
        (b"1" + b"0" * 40, "chunk size too large"),
        (b"1" * 40 + b" zz", "invalid chunk size"),
        (b"1;" + b"e" * 4094, "chunk size line too long"),
    ]:
        raises(http1_impl, CHUNKED_HEAD + line + b"\r\n", match)
    # the limits themselves are fine
    for line in (
        b"%x" % 2**62,
        b"0" * 4095 + b"1",
        b"1;" + b"e" * 4093 + b"\r",
        b"1;" + b"e" * 4094,
    ):
        p, body = feed_all(http1_impl, [CHUNKED_HEAD + line + b"\n"])
        assert not p.complete and body == b"", line[:10]


def test_missing_crlf_after_chunk_data(http1_impl: ModuleType) -> None:
    for tail in (b"5\r\nhelloX", b"5\r\nhello\rX", b"5\r\nhello\n", b"5\r\nhello\r\r\n"):
        raises(http1_impl, CHUNKED_HEAD + tail, "missing CRLF after chunk data")


def test_trailer_size_limit(http1_impl: ModuleType) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    trailers = b"A: " + b"t" * 200 + b"\r\n"
    data = head + b"0\r\n" + trailers + b"\r\n"
    limit = len(trailers) + 2
    assert body_of(http1_impl, data, max_head_bytes=max(limit, len(head))) == b""
    raises(http1_impl, data, "trailer section too large", max_head_bytes=limit - 1)


def test_data_after_complete(http1_impl: ModuleType) -> None:
    msg = "unexpected data after response"
    with pytest.raises(http1_impl.HTTPParseError, match=msg):
        http1_impl.ResponseParser().feed(CL_RESPONSE + b"H")
    with pytest.raises(http1_impl.HTTPParseError, match=msg):
        http1_impl.ResponseParser().feed(CHUNKED_HEAD + CHUNKED_BODY + b"\r\n")
    p = http1_impl.ResponseParser()
    p.feed(CL_RESPONSE)
    assert p.feed(b"") == b""  # empty input is never an error
    with pytest.raises(http1_impl.HTTPParseError, match=msg):
        p.feed(CL_RESPONSE)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"HTTP/1.1 200 OK\r\nContent-Len",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        CL_RESPONSE[:-1],
        CHUNKED_HEAD,
        CHUNKED_HEAD + b"5\r\nhel",
        CHUNKED_HEAD + b"5\r\nhello\r",
        CHUNKED_HEAD + b"0\r\n",
        CHUNKED_HEAD + b"0\r\nX: y\r\n",
    ],
)
def test_eof_before_complete(http1_impl: ModuleType, data: bytes) -> None:
    p = http1_impl.ResponseParser()
    p.feed(data)
    with pytest.raises(http1_impl.HTTPParseError, match="connection closed before"):
        p.feed_eof()
    with pytest.raises(http1_impl.HTTPParseError):
        p.feed_eof()


def test_failed_parser_stays_failed_until_reset(http1_impl: ModuleType) -> None:
    p = http1_impl.ResponseParser()
    with pytest.raises(http1_impl.HTTPParseError):
        p.feed(b"HTTP/9 200 OK\r\n\r\n")
    with pytest.raises(http1_impl.HTTPParseError, match="reset"):
        p.feed(CL_RESPONSE)
    with pytest.raises(http1_impl.HTTPParseError, match="reset"):
        p.feed_eof()
    p.reset()
    assert p.feed(CL_RESPONSE) == JSON_BODY and p.complete


def test_reset_and_reuse(http1_impl: ModuleType) -> None:
    p = http1_impl.ResponseParser()
    assert p.feed(CHUNKED_HEAD + CHUNKED_BODY) == CHUNKED_PAYLOAD
    assert p.complete and p.keep_alive
    p.reset()
    assert snapshot(p) == (0, b"", 0, [], False, False, False, -1, False)
    # a reset in the middle of a head drops what was buffered
    p.feed(b"HTTP/1.1 500 Oops\r\nX-Partial")
    p.reset()
    assert p.feed(CL_RESPONSE[:30]) == b""
    assert p.feed(CL_RESPONSE[30:]) == JSON_BODY
    assert p.status == 200 and len(p.headers) == 3 and p.complete


def test_large_chunked_body_is_linear(http1_impl: ModuleType) -> None:
    size = 8 * 1024 * 1024
    payload = bytes(range(256)) * (size // 256)
    # one 8 MiB chunk, then the same payload as 4000-byte chunks; both fed in 1 KiB pieces
    for chunk_size in (size, 4000):
        parts = [payload[i : i + chunk_size] for i in range(0, size, chunk_size)]
        wire = CHUNKED_HEAD + chunked(*parts)
        pieces = [wire[i : i + 1024] for i in range(0, len(wire), 1024)]
        p = http1_impl.ResponseParser()
        t0 = time.perf_counter()
        out = [p.feed(piece) for piece in pieces]
        elapsed = time.perf_counter() - t0
        assert p.complete and b"".join(out) == payload
        assert elapsed < 10, elapsed  # a quadratic parser takes minutes here
        if chunk_size == size:  # pure chunk data pieces come back as the input itself
            assert sum(o is pc for o, pc in zip(out, pieces, strict=True)) >= len(pieces) - 3


def test_long_head_byte_by_byte(http1_impl: ModuleType) -> None:
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 40) for i in range(500))
    data = head + b"Content-Length: 2\r\n\r\nok"
    p = http1_impl.ResponseParser()
    assert b"".join(p.feed(data[i : i + 1]) for i in range(len(data))) == b"ok"
    assert len(p.headers) == 501 and p.complete


# --- property tests --------------------------------------------------------------------------


@dataclass
class Built:
    wire: bytes
    body: bytes
    status: int
    reason: bytes
    version: int
    headers: list[tuple[bytes, bytes]]
    framing: str  # "length" | "chunked" | "eof" | "none"
    keep_alive: bool
    content_length: int


TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VALUE_BYTES = st.binary(max_size=30).map(
    lambda b: bytes(c for c in b if c == 9 or (c >= 32 and c != 127))
)
names = st.text(TOKEN_CHARS, min_size=1, max_size=12).map(lambda s: ("x-" + s).encode())


def mixed_case(name: bytes, flips: int) -> bytes:
    return bytes(
        c ^ 0x20 if 97 <= c <= 122 and (flips >> (i % 16)) & 1 else c for i, c in enumerate(name)
    )


@st.composite
def responses(draw: st.DrawFn) -> Built:
    version = draw(st.sampled_from([10, 11]))
    framing = draw(st.sampled_from(["length", "chunked", "eof", "none"]))
    if framing == "chunked" and version == 10:
        framing = "length"
    status = (
        draw(st.sampled_from([204, 304]))
        if framing == "none"
        else draw(st.sampled_from([200, 201, 400, 404, 429, 500, 503, 599, 226]))
    )
    reason = draw(st.sampled_from([b"", b"OK", b"Some Reason", b"\xc3\xa9t\xc3\xa9"]))
    body = b"" if framing == "none" else draw(st.binary(max_size=600))
    raw_headers: list[tuple[bytes, bytes]] = []
    for name, value in draw(st.lists(st.tuples(names, VALUE_BYTES), max_size=6)):
        raw_headers.append((mixed_case(name, draw(st.integers(0, 65535))), value))
    conn = draw(st.sampled_from([None, b"close", b"keep-alive", b"Keep-Alive, Upgrade"]))
    if conn is not None:
        raw_headers.insert(draw(st.integers(0, len(raw_headers))), (b"Connection", conn))
    content_length = -1
    if framing == "length":
        content_length = len(body)
        cl_value = draw(st.sampled_from([b"%d", b"%d, %d", b"0%d"]))
        cl = cl_value.replace(b"%d", b"%d" % len(body))
        raw_headers.insert(draw(st.integers(0, len(raw_headers))), (b"content-LENGTH", cl))
    elif framing == "chunked":
        te = draw(st.sampled_from([b"chunked", b"gzip, chunked", b"CHUNKED"]))
        raw_headers.insert(draw(st.integers(0, len(raw_headers))), (b"Transfer-Encoding", te))
    ows = draw(st.sampled_from([b"", b" ", b"\t ", b"  "]))
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    head = b"HTTP/1.%d %d" % (version % 10, status)
    if reason or draw(st.booleans()):
        head += b" " + reason
    head += eol + b"".join(n + b":" + ows + v + ows + eol for n, v in raw_headers) + eol
    interim = draw(
        st.sampled_from([b"", b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 EH\nA: b\n\n"])
    )

    if framing == "chunked":
        cuts = draw(st.lists(st.integers(0, len(body)), max_size=8))
        parts = [x for x in split(body, cuts) if x]
        wire_body = b""
        for part in parts:
            ext = draw(st.sampled_from([b"", b";a=b", b" ;x", b'; q="v"']))
            wire_body += b"%x%s\r\n%s\r\n" % (len(part), ext, part)
        trailers = draw(st.sampled_from([b"", b"X-T: 1\r\n", b"A: b\nC: d\r\n"]))
        wire_body += b"0\r\n" + trailers + b"\r\n"
    else:
        wire_body = body

    # HTTP/1.1: persistent unless "close"; HTTP/1.0: only with a keep-alive option
    keep = conn != b"close" if version == 11 else conn is not None and conn != b"close"
    if framing == "eof":
        keep = False
    return Built(
        wire=interim + head + wire_body,
        body=body,
        status=status,
        reason=reason,
        version=version,
        headers=[(n.lower(), v.strip(b" \t")) for n, v in raw_headers],
        framing=framing,
        keep_alive=keep,
        content_length=content_length,
    )


@SETTINGS
@given(resp=responses(), cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_random_responses(http1_impl: ModuleType, resp: Built, cuts: list[int]) -> None:
    chunks = split(resp.wire, cuts)
    eof = resp.framing == "eof"
    p, body = feed_all(http1_impl, chunks, eof=eof)
    assert body == resp.body
    assert p.complete and p.head_complete
    assert (p.status, p.reason, p.version) == (resp.status, resp.reason, resp.version)
    assert p.headers == resp.headers
    assert p.keep_alive is resp.keep_alive
    assert p.content_length == resp.content_length
    assert p.chunked is (resp.framing == "chunked")
    assert_twins_agree(http1_impl, chunks, eof=eof)


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, at, byte in edits:
        if not buf:
            buf.append(byte)
            continue
        i = at % len(buf)
        if kind == 0:
            buf[i] = byte
        elif kind == 1:
            del buf[i]
        else:
            buf.insert(i, byte)
    return bytes(buf)


INTERESTING = b"\r\n\t :;,0123456789abcdefHTTP/1.chunkedlose\x00\x7f\xff"


@SETTINGS
@given(
    resp=responses(),
    edits=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 5000), st.sampled_from(list(INTERESTING))),
        min_size=1,
        max_size=4,
    ),
    cuts=st.lists(st.integers(0, 2000), max_size=8),
    eof=st.booleans(),
)
def test_mutated_responses_twins_agree(
    http1_impl: ModuleType,
    resp: Built,
    edits: list[tuple[int, int, int]],
    cuts: list[int],
    eof: bool,
) -> None:
    data = mutate(resp.wire, edits)
    assert_twins_agree(http1_impl, split(data, cuts), eof=eof)


@SETTINGS
@given(
    prefix=st.sampled_from([b"", b"HTTP/1.1 200 OK\r\n", CHUNKED_HEAD, CL_RESPONSE[:60]]),
    garbage=st.binary(max_size=300),
    cuts=st.lists(st.integers(0, 400), max_size=6),
    limit=st.sampled_from([65536, 64, 200]),
)
def test_garbage_only_raises_parse_errors(
    http1_impl: ModuleType, prefix: bytes, garbage: bytes, cuts: list[int], limit: int
) -> None:
    # any exception other than HTTPParseError propagates out of trace() and fails the test
    assert_twins_agree(http1_impl, split(prefix + garbage, cuts), eof=True, max_head_bytes=limit)
