"""AWS Signature Version 4: AWS's published test vectors (the SigV4 test suite's
``get-vanilla`` family, the signing-key example, S3's GET Object example) and a Bedrock
request worked out by hand from the specification."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from fastgw.providers import sigv4

SUITE_KEY = "AKIDEXAMPLE"
SUITE_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SUITE_NOW = datetime(2015, 8, 30, 12, 36, 0, tzinfo=UTC)
SUITE_HOST = {"host": "example.amazonaws.com"}
SUITE_CRED = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "


def suite(method: str, path: str, query: str = "", **kw: Any) -> dict[str, str]:
    return sigv4.sign(
        method,
        path,
        query,
        dict(SUITE_HOST),
        b"",
        service="service",
        region="us-east-1",
        access_key=SUITE_KEY,
        secret_key=SUITE_SECRET,
        now=SUITE_NOW,
        **kw,
    )


def test_signing_key_example() -> None:
    # AWS's "derive a signing key" example (IAM, 2012-02-15).
    key = sigv4.signing_key(SUITE_SECRET, "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
    assert sigv4.signing_key(SUITE_SECRET, "20120215", "us-east-1", "iam") is key  # cached


@pytest.mark.parametrize(
    ("name", "method", "path", "query", "signature"),
    [
        (
            "get-vanilla",
            "GET",
            "/",
            "",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "post-vanilla",
            "POST",
            "/",
            "",
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        ),
        (
            "get-vanilla-query-order-key-case",
            "GET",
            "/",
            "Param2=value2&Param1=value1",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
        (
            "get-vanilla-empty-query-key",
            "GET",
            "/",
            "Param1=value1",
            "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb",
        ),
        (
            "get-utf8",
            "GET",
            "/ሴ",
            "",
            "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
        ),
    ],
)
def test_aws_test_suite(name: str, method: str, path: str, query: str, signature: str) -> None:
    out = suite(method, path, query)
    assert out == {
        "x-amz-date": "20150830T123600Z",
        "authorization": SUITE_CRED + f"SignedHeaders=host;x-amz-date, Signature={signature}",
    }, name


def test_get_vanilla_canonical_request() -> None:
    empty = hashlib.sha256(b"").hexdigest()
    canonical, names = sigv4.canonical_request(
        "GET", "/", "", {"Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"}, empty
    )
    assert names == "host;x-amz-date"
    assert canonical == (
        "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
        "host;x-amz-date\n" + empty
    )
    assert (
        hashlib.sha256(canonical.encode()).hexdigest()
        == "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
    )


def test_s3_get_object_example() -> None:
    # S3's documented example: single URI encoding, a range header, x-amz-content-sha256.
    out = sigv4.sign(
        "GET",
        "/test.txt",
        "",
        {"Host": "examplebucket.s3.amazonaws.com", "Range": "bytes=0-9"},
        b"",
        service="s3",
        region="us-east-1",
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        now=datetime(2013, 5, 24, tzinfo=UTC),
        double_encode=False,
        content_sha256_header=True,
    )
    assert out["x-amz-content-sha256"] == hashlib.sha256(b"").hexdigest()
    assert out["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_bedrock_request_by_hand() -> None:
    """A Converse request, its canonical request written out from the specification: the
    ``:`` of the model id is sent as ``%3A`` and signed double-encoded as ``%253A``."""
    body = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'
    path = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    headers = {
        "host": "bedrock-runtime.us-west-2.amazonaws.com",
        "content-type": "application/json",
    }
    now = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    out = sigv4.sign(
        "POST",
        path,
        "",
        headers,
        body,
        service="bedrock",
        region="us-west-2",
        access_key="AKIDEXAMPLE",
        secret_key="secret/key+1",
        session_token="token  with   spaces",
        now=now,
    )
    body_hash = hashlib.sha256(body).hexdigest()
    expected_canonical = (
        "POST\n"
        "/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse\n"
        "\n"
        "content-type:application/json\n"
        "host:bedrock-runtime.us-west-2.amazonaws.com\n"
        "x-amz-date:20240102T030405Z\n"
        "x-amz-security-token:token with spaces\n"
        "\n"
        "content-type;host;x-amz-date;x-amz-security-token\n" + body_hash
    )
    canonical, _ = sigv4.canonical_request(
        "POST",
        path,
        "",
        {
            **headers,
            "x-amz-date": out["x-amz-date"],
            "x-amz-security-token": out["x-amz-security-token"],
        },
        body_hash,
    )
    assert canonical == expected_canonical
    # The rest by hand with hashlib/hmac.
    scope = "20240102/us-west-2/bedrock/aws4_request"
    to_sign = (
        f"AWS4-HMAC-SHA256\n20240102T030405Z\n{scope}\n"
        + hashlib.sha256(expected_canonical.encode()).hexdigest()
    )
    key = b"AWS4secret/key+1"
    for part in ("20240102", "us-west-2", "bedrock", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    assert out == {
        "x-amz-date": "20240102T030405Z",
        "x-amz-security-token": "token  with   spaces",
        "authorization": f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{scope}, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, "
        f"Signature={signature}",
    }


def test_canonical_pieces() -> None:
    assert sigv4.uri_encode("a b/c~d._-*:é") == "a%20b%2Fc~d._-%2A%3A%C3%A9"
    assert sigv4.canonical_uri("") == "/"
    assert sigv4.canonical_uri("/a%3Ab/c d") == "/a%253Ab/c%20d"
    assert sigv4.canonical_uri("/a%3Ab", double_encode=False) == "/a%3Ab"
    assert sigv4.canonical_query("") == ""
    assert sigv4.canonical_query("b=2&a=x+y&a=1&c&d=%7E") == "a=1&a=x%2By&b=2&c=&d=~"


def test_time_zone_and_host_required() -> None:
    later = SUITE_NOW.astimezone(timezone(timedelta(hours=5)))
    a = sigv4.sign(
        "GET",
        "/",
        "",
        dict(SUITE_HOST),
        b"",
        service="service",
        region="us-east-1",
        access_key=SUITE_KEY,
        secret_key=SUITE_SECRET,
        now=later,
    )
    assert a == suite("GET", "/")
    with pytest.raises(ValueError, match="host"):
        sigv4.sign(
            "GET",
            "/",
            "",
            {},
            b"",
            service="s",
            region="r",
            access_key="a",
            secret_key="b",
            now=SUITE_NOW,
        )


def test_header_values_trimmed_and_repeated_names_joined() -> None:
    canonical, names = sigv4.canonical_request(
        "post",
        "/",
        "",
        {"Host": " h ", "My-Header1": "  a   b   c  ", "my-header1": "d"},
        "x",
    )
    assert names == "host;my-header1"
    assert "host:h\nmy-header1:a b c,d\n" in canonical
    assert canonical.startswith("POST\n")
