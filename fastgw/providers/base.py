"""The provider interface (DESIGN §4): pure transforms, no I/O, testable without a network."""

from __future__ import annotations

from typing import Protocol

from ..api.errors import GatewayError
from ..api.openai import ParsedRequest


class UpstreamRequest:
    """What the upstream layer sends: a path below the provider's ``base_url``, per-request
    headers (added to the provider's ``headers``) and body bytes."""

    __slots__ = ("body", "headers", "inject_usage", "path")

    def __init__(self, path: str, headers: dict[str, str], body: bytes, inject_usage: bool) -> None:
        self.path = path
        self.headers = headers
        self.body = body
        #: The gateway asked the upstream for stream usage the client did not ask for:
        #: the relay removes that extra chunk.
        self.inject_usage = inject_usage


class Provider(Protocol):
    name: str
    kind: str
    #: Responses and stream events already have OpenAI's shape: relay bytes untouched.
    openai_shaped: bool
    #: The API root requests go to, and headers sent with every request (auth, extras).
    base_url: str
    headers: dict[str, str]

    def build_request(
        self, req: ParsedRequest, upstream_model: str, request_id: str
    ) -> UpstreamRequest: ...

    def map_error(self, status: int, body: bytes) -> GatewayError: ...
