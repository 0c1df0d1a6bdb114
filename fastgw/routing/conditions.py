"""What a route may decide on: request fields, conditions over them, sticky keys.

A *field reference* names one fact of a request:

- ``model`` — the model name the client asked for;
- ``header.<name>`` — a request header (case-insensitive);
- ``metadata.<key>[.<key>…]`` — a member of the JSON object in the ``x-fastgw-metadata``
  header;
- ``body.<key>[.<key>|<index>…]`` — a member of the JSON request body.

A condition (``when``) maps references to a value (equality; a list: membership) or to
``{operator: value}`` pairs, all of which must hold. Facts are decoded on first use.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec

from ..api.errors import bad_request

#: A missing field (distinct from JSON null).
MISSING: Any = object()

SOURCES = ("model", "header", "metadata", "body", "key")
#: What ``key.<field>`` may name: the calling virtual key's name, team and tags.
KEY_FIELDS = ("name", "team", "tags")
OPERATORS = (
    "eq",
    "ne",
    "in",
    "not_in",
    "exists",
    "prefix",
    "suffix",
    "contains",
    "regex",
    "gt",
    "gte",
    "lt",
    "lte",
)

_json_decode = msgspec.json.Decoder().decode
#: An HTTP header name (RFC 9110 token).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class FieldRef:
    """A parsed field reference (``metadata.tier``): its source and path."""

    __slots__ = ("path", "source", "text")

    def __init__(self, text: str) -> None:
        source, _, rest = text.partition(".")
        if source not in SOURCES:
            raise ValueError(
                f"unknown field {text!r}: expected model, header.<name>, metadata.<key>, "
                "body.<key> or key.name|team|tags"
            )
        if source == "model":
            if rest:
                raise ValueError("'model' takes no path")
            path: tuple[str | int, ...] = ()
        elif not rest:
            raise ValueError(f"{source!r} needs a name after the dot (e.g. {source}.user)")
        elif source == "key":
            if rest not in KEY_FIELDS:
                raise ValueError(f"'key.' takes one of {', '.join(KEY_FIELDS)}, got {rest!r}")
            path = (rest,)
        elif source == "header":
            if not _TOKEN.fullmatch(rest):
                raise ValueError(f"{rest!r} is not a valid HTTP header name")
            path = (rest.lower(),)
        else:
            parts = rest.split(".")
            if any(not p for p in parts):
                raise ValueError(f"empty path segment in {text!r}")
            path = tuple(int(p) if p.isdigit() else p for p in parts)
        self.text = text
        self.source = source
        self.path = path


class RequestFacts:
    """The request as routing sees it; the body and metadata are decoded on first use.

    ``require_region``/``require_tags`` come from the ``x-fastgw-region`` and
    ``x-fastgw-tags`` headers; ``timeout`` from ``x-fastgw-timeout`` (seconds, capped)."""

    __slots__ = (
        "_body",
        "_metadata",
        "headers",
        "model",
        "principal",
        "provider_key",
        "raw",
        "require_region",
        "require_tags",
        "timeout",
    )

    def __init__(
        self,
        headers: list[tuple[bytes, bytes]],
        raw: bytes,
        model: str = "",
    ) -> None:
        self.headers = headers
        self.raw = raw
        self.model = model
        self._body: Any = MISSING
        self._metadata: Any = MISSING
        #: The calling virtual key (``key.*`` fields), when keys are in use.
        self.principal: Any = None
        #: The caller's own provider key (``x-fastgw-provider-key``), for bring-your-own-key.
        self.provider_key: str | None = None
        self.require_region: frozenset[str] | None = None
        self.require_tags: frozenset[str] = frozenset()
        self.timeout: float | None = None

    def header(self, name: str) -> str | None:
        key = name.encode("latin-1")
        values = [v.decode("latin-1") for k, v in self.headers if k == key]
        return ", ".join(values) if values else None

    def set_metadata(self, raw: bytes, limit: int) -> None:
        """Check the ``x-fastgw-metadata`` header now (a bad one is a 400 even when no route
        looks at it); it is decoded for good on first use."""
        if len(raw) > limit:
            raise bad_request(
                f"The x-fastgw-metadata header is larger than {limit} bytes.",
                param="x-fastgw-metadata",
                code="invalid_metadata",
            )
        try:
            value = _json_decode(raw)
        except msgspec.DecodeError:
            value = None
        if not isinstance(value, dict):
            raise bad_request(
                "The x-fastgw-metadata header must be a JSON object.",
                param="x-fastgw-metadata",
                code="invalid_metadata",
            )
        self._metadata = value

    def metadata(self) -> dict[str, Any]:
        m = self._metadata
        return {} if m is MISSING else m

    def body(self) -> Any:
        if self._body is MISSING:
            try:
                self._body = _json_decode(self.raw)
            except msgspec.DecodeError:
                self._body = None
        return self._body

    def get(self, ref: FieldRef) -> Any:
        """The value ``ref`` names, or MISSING."""
        src = ref.source
        if src == "model":
            return self.model
        if src == "key":
            p = self.principal
            if p is None:
                return MISSING
            field = ref.path[0]
            if field == "tags":
                return sorted(p.tags)
            v = p.name if field == "name" else p.team
            return MISSING if v is None else v
        if src == "header":
            v = self.header(str(ref.path[0]))
            return MISSING if v is None else v
        value = self.metadata() if src == "metadata" else self.body()
        for key in ref.path:
            if isinstance(value, dict):
                value = value.get(str(key), MISSING)
                if value is MISSING:
                    return MISSING
            elif isinstance(value, list) and isinstance(key, int) and key < len(value):
                value = value[key]
            else:
                return MISSING
        return value


Test = Callable[[Any], bool]


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _same(actual: Any, expected: Any) -> bool:
    """Equality where text meets a number or boolean (``"5"`` == 5, ``"true"`` == true):
    headers are text, config values and JSON members need not be."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        if type(actual) is type(expected):
            return bool(actual == expected)
    elif type(actual) is type(expected) or (
        isinstance(actual, int | float) and isinstance(expected, int | float)
    ):
        return bool(actual == expected)
    if isinstance(actual, str) and _scalar(expected):
        return actual == _text(expected)
    if isinstance(expected, str) and _scalar(actual):
        return expected == _text(actual)
    return False


def _scalar(v: Any) -> bool:
    return isinstance(v, bool | int | float)


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _compare(op: str, bound: float) -> Test:
    def test(v: Any) -> bool:
        n = _number(v)
        if n is None:
            return False
        if op == "gt":
            return n > bound
        if op == "gte":
            return n >= bound
        if op == "lt":
            return n < bound
        return n <= bound

    return test


def _operator(op: str, arg: Any) -> Test:
    """The test for ``{op: arg}``; ValueError when the pair makes no sense."""
    if op == "eq":
        return lambda v: v is not MISSING and _same(v, arg)
    if op == "ne":
        return lambda v: v is MISSING or not _same(v, arg)
    if op in ("in", "not_in"):
        if not isinstance(arg, list):
            raise ValueError(f"{op!r} takes a list")
        items = list(arg)
        if op == "in":
            return lambda v: v is not MISSING and any(_same(v, x) for x in items)
        return lambda v: v is MISSING or not any(_same(v, x) for x in items)
    if op == "exists":
        if not isinstance(arg, bool):
            raise ValueError("'exists' takes true or false")
        return lambda v: (v is not MISSING) is arg
    if op in ("prefix", "suffix"):
        if not isinstance(arg, str):
            raise ValueError(f"{op!r} takes a string")
        if op == "prefix":
            return lambda v: isinstance(v, str) and v.startswith(arg)
        return lambda v: isinstance(v, str) and v.endswith(arg)
    if op == "contains":
        return lambda v: (
            (isinstance(v, str) and isinstance(arg, str) and arg in v)
            or (isinstance(v, list) and any(_same(x, arg) for x in v))
        )
    if op == "regex":
        if not isinstance(arg, str):
            raise ValueError("'regex' takes a string")
        try:
            rx = re.compile(arg)
        except re.error as e:
            raise ValueError(f"invalid regex {arg!r}: {e}") from None
        return lambda v: isinstance(v, str) and rx.search(v) is not None
    if op in ("gt", "gte", "lt", "lte"):
        n = _number(arg)
        if n is None or isinstance(arg, str):
            raise ValueError(f"{op!r} takes a number")
        return _compare(op, n)
    raise ValueError(f"unknown operator {op!r}; known: {', '.join(OPERATORS)}")


class Condition:
    """A compiled ``when``: every (field, test) pair must hold."""

    __slots__ = ("tests",)

    def __init__(self, when: dict[str, object]) -> None:
        """Compile; ValueError (message prefixed with the field) on any mistake."""
        if not when:
            raise ValueError("a condition needs at least one field")
        tests: list[tuple[FieldRef, Test]] = []
        for field, spec in when.items():
            try:
                ref = FieldRef(field)
                if isinstance(spec, dict):
                    if not spec:
                        raise ValueError("an empty operator mapping")
                    for op, arg in spec.items():
                        tests.append((ref, _operator(str(op), arg)))
                elif isinstance(spec, list):
                    tests.append((ref, _operator("in", spec)))
                else:
                    tests.append((ref, _operator("eq", spec)))
            except ValueError as e:
                raise ValueError(f"{field}: {e}") from None
        self.tests = tests

    def holds(self, facts: RequestFacts) -> bool:
        return all(test(facts.get(ref)) for ref, test in self.tests)


def sticky_key(facts: RequestFacts, ref: FieldRef) -> str | None:
    """The text a sticky assignment hashes, or None when the request lacks the field."""
    v = facts.get(ref)
    if v is MISSING or v is None or v == "":
        return None
    return v if isinstance(v, str) else msgspec.json.encode(v).decode()
