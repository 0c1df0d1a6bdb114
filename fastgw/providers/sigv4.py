"""AWS Signature Version 4 (header-based, ``AWS4-HMAC-SHA256``) for one HTTP request.

Pure: the caller passes the clock. Written from AWS's public description of the algorithm:

1. The *canonical request*::

       METHOD \\n CanonicalURI \\n CanonicalQuery \\n CanonicalHeaders \\n SignedHeaders \\n
       hex(sha256(body))

   * ``CanonicalURI``: the request path *as sent* (already percent-encoded), each ``/``
     segment URI-encoded once more. Every service but S3 signs that double encoding: a Bedrock
     model id ``anthropic.claude-v2:1`` is sent as ``…claude-v2%3A1`` and signed as
     ``…claude-v2%253A1``. S3 (``double_encode=False``) signs the path as
     sent. An empty path is ``/``. Dot segments are not normalised: the gateway builds
     paths without any.
   * ``CanonicalQuery``: ``name=value`` pairs, each side decoded then URI-encoded (spaces as
     ``%20``), sorted by name then value, joined with ``&``.
   * ``CanonicalHeaders``: ``name:value\\n`` per signed header, names lower-cased, values
     trimmed with inner runs of spaces collapsed, sorted by name; ``SignedHeaders`` lists the
     names joined with ``;``.

2. The *string to sign*: ``AWS4-HMAC-SHA256\\n<amz-date>\\n<scope>\\n hex(sha256(canonical))``
   with ``scope = <yyyymmdd>/<region>/<service>/aws4_request``.

3. The *signing key*: HMAC-SHA256 chained over date, region, service and ``aws4_request``,
   starting from ``"AWS4" + secret``. It changes once a day: it is cached per (secret, date,
   region, service).

4. ``authorization: AWS4-HMAC-SHA256 Credential=<access key>/<scope>,
   SignedHeaders=<names>, Signature=hex(hmac(signing key, string to sign))``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from urllib.parse import quote, unquote

__all__ = [
    "ALGORITHM",
    "canonical_query",
    "canonical_request",
    "canonical_uri",
    "sign",
    "signing_key",
    "uri_encode",
]

ALGORITHM = "AWS4-HMAC-SHA256"
#: The characters SigV4 never percent-encodes (RFC 3986's unreserved set).
_UNRESERVED = "-_.~"
_SPACES = re.compile(r" +")

#: (secret, date, region, service) → signing key. Keys change daily; the cache is small and
#: cleared when it grows past a bound (old days' keys are never needed again).
_KEYS: dict[tuple[str, str, str, str], bytes] = {}
_KEYS_MAX = 64


def uri_encode(text: str) -> str:
    """Percent-encode every byte of UTF-8 ``text`` except A-Z a-z 0-9 ``-_.~`` (upper-case
    hex), as SigV4 requires. ``/`` is encoded too: callers split paths first."""
    return quote(text, safe=_UNRESERVED)


def canonical_uri(path: str, double_encode: bool = True) -> str:
    """The canonical URI of a request path as sent on the wire (see the module docstring)."""
    if not path:
        return "/"
    if not double_encode:
        return path
    return "/".join(uri_encode(segment) for segment in path.split("/"))


def canonical_query(query: str) -> str:
    """The canonical form of a raw query string (``a=1&b=x%20y``); empty stays empty."""
    if not query:
        return ""
    pairs = []
    for item in query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((uri_encode(unquote(name)), uri_encode(unquote(value))))
    pairs.sort()
    return "&".join(f"{n}={v}" for n, v in pairs)


def canonical_request(
    method: str,
    url_path: str,
    query: str,
    headers: dict[str, str],
    payload_hash: str,
    double_encode: bool = True,
) -> tuple[str, str]:
    """(the canonical request, the signed header names joined with ``;``)."""
    signed: dict[str, str] = {}
    for name, value in headers.items():
        key = name.strip().lower()
        value = _SPACES.sub(" ", value.strip())
        signed[key] = f"{signed[key]},{value}" if key in signed else value
    if "host" not in signed:
        raise ValueError("SigV4: the 'host' header must be signed")
    names = sorted(signed)
    signed_headers = ";".join(names)
    canonical = "\n".join(
        [
            method.upper(),
            canonical_uri(url_path, double_encode),
            canonical_query(query),
            "".join(f"{n}:{signed[n]}\n" for n in names),
            signed_headers,
            payload_hash,
        ]
    )
    return canonical, signed_headers


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The day's signing key (``date`` is ``YYYYMMDD``), cached."""
    cache_key = (secret_key, date, region, service)
    key = _KEYS.get(cache_key)
    if key is None:
        key = _hmac(("AWS4" + secret_key).encode(), date)
        key = _hmac(key, region)
        key = _hmac(key, service)
        key = _hmac(key, "aws4_request")
        if len(_KEYS) >= _KEYS_MAX:
            _KEYS.clear()
        _KEYS[cache_key] = key
    return key


def sign(
    method: str,
    url_path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    *,
    service: str,
    region: str,
    access_key: str,
    secret_key: str,
    session_token: str | None = None,
    now: datetime,
    double_encode: bool = True,
    content_sha256_header: bool = False,
) -> dict[str, str]:
    """Sign one request; return the headers to add to it (lower-case names).

    ``url_path`` and ``query`` are exactly what goes on the request line (percent-encoded);
    ``headers`` are the headers to sign and must include ``host`` as the upstream receives
    it (with the port when it is not the scheme's default). The result holds ``x-amz-date``,
    ``x-amz-security-token`` (with a session token), ``x-amz-content-sha256`` (when asked
    for: S3 wants it, other services ignore it) and ``authorization``; all but
    ``authorization`` are signed too.
    """
    if now.tzinfo is not None:
        now = now.astimezone(UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    payload_hash = hashlib.sha256(body).hexdigest()
    added: dict[str, str] = {"x-amz-date": amz_date}
    if content_sha256_header:
        added["x-amz-content-sha256"] = payload_hash
    if session_token:
        added["x-amz-security-token"] = session_token

    canonical, signed_headers = canonical_request(
        method, url_path, query, {**headers, **added}, payload_hash, double_encode
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    signature = hmac.new(
        signing_key(secret_key, date, region, service), string_to_sign.encode(), hashlib.sha256
    ).hexdigest()
    added["authorization"] = (
        f"{ALGORITHM} Credential={access_key}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return added
