"""The configuration file's shape, as msgspec Structs.

Durations are written as numbers of seconds or strings such as ``"500ms"``, ``"2s"``,
``"10m"``, ``"1h"``; after loading they are floats (seconds). ``docs/configuration.md`` is
the reference for every field.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

#: A duration in seconds. In the file: a number (seconds) or "<n>ms|s|m|h".
Duration = Annotated[float, "duration"]

MIB = 1024 * 1024


class ServerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    backlog: int = 2048
    #: Requests (streams included) one worker handles at once; past it, connections wait.
    max_concurrent_requests: int = 10000
    #: Largest request body accepted (413 above it).
    max_body_bytes: int = 10 * MIB
    #: Largest single SSE event relayed from an upstream (the stream ends with an error above it).
    max_event_bytes: int = 16 * MIB
    #: On SIGTERM: how long in-flight requests and streams may take to finish.
    drain_timeout: Duration = 30.0
    #: Serve the built-in mock upstream under /_demo (the offline demo uses it).
    demo_upstream: bool = False


class TimeoutConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    #: TCP (and TLS) connection set-up to the upstream.
    connect: Duration = 10.0
    #: From the request sent to the upstream's response headers; for streams, also the longest
    #: silence allowed between two chunks.
    first_byte: Duration = 120.0
    #: The whole upstream exchange, body or stream included.
    total: Duration = 600.0


class ProviderConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    #: The adapter: ``openai`` (any OpenAI-compatible server) or a named provider; see
    #: docs/providers.md (``fastgw.providers.registry.kinds()`` lists them).
    kind: str
    #: The API root; omitted: the kind's default (e.g. https://api.openai.com/v1).
    base_url: str | None = None
    api_key: str | None = None
    #: Azure OpenAI: the ``api-version`` query parameter (deployment URLs); omitted with the
    #: v1 API (``base_url`` ending in ``/openai/v1``).
    api_version: str | None = None
    #: Bedrock: the AWS region (e.g. ``us-east-1``); omitted: ``AWS_REGION`` or
    #: ``AWS_DEFAULT_REGION`` from the environment.
    aws_region: str | None = None
    #: Bedrock: the AWS access key id requests are signed with (SigV4); omitted:
    #: ``AWS_ACCESS_KEY_ID`` from the environment.
    aws_access_key_id: str | None = None
    #: Bedrock: the AWS secret access key; omitted: ``AWS_SECRET_ACCESS_KEY`` from the
    #: environment.
    aws_secret_access_key: str | None = None
    #: Bedrock: the session token of temporary credentials; omitted: ``AWS_SESSION_TOKEN``
    #: from the environment (when the keys come from there too).
    aws_session_token: str | None = None
    #: Extra headers sent upstream with every request (e.g. OpenAI-Organization).
    headers: dict[str, str] = {}
    #: Default timeouts for models served by this provider.
    timeout: TimeoutConfig | None = None
    #: Upper bound of open connections to this provider from one worker.
    max_connections: int = 10000


class RetryConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    #: Attempts per target (1 = no retry).
    attempts: int = 1
    #: Upstream statuses retried (connection failures and timeouts always are).
    on_status: list[int] = msgspec.field(default_factory=lambda: [429, 500, 502, 503, 504])
    #: First wait; doubled each retry (with jitter), at most ``max_backoff``.
    backoff: Duration = 0.25
    max_backoff: Duration = 5.0
    #: An upstream's ``Retry-After`` is honoured up to this; longer → no retry on this target.
    max_retry_after: Duration = 10.0


class TargetConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    provider: str
    #: Upstream model name; omitted = the name the client asked for (or the part a `*` matched).
    model: str | None = None
    #: Request fields set (overriding the client's) on every request to this target, e.g.
    #: ``{temperature: 0, max_tokens: 1024}``; a null value removes the field.
    override_params: dict[str, object] = {}
    #: ``loadbalance``: relative share of requests.
    weight: float = 1.0


class ModelConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    targets: list[TargetConfig]
    #: ``fallback``: targets in order, the next one when a target fails; ``loadbalance``: one
    #: target drawn by weight, the others (drawn likewise) as its fallbacks.
    strategy: str = "fallback"
    #: Upstream statuses that move on to the next target (connection failures and timeouts
    #: always do). Only before the first byte reached the client.
    fallback_on: list[int] = msgspec.field(default_factory=lambda: [429, 500, 502, 503, 504])
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    timeout: TimeoutConfig | None = None
    #: Request fields set on every request to this model (a target's own win).
    override_params: dict[str, object] = {}


class GatewayConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    providers: dict[str, ProviderConfig] = {}
    #: Public model names (exact, or a pattern with one `*`) → where they are served.
    models: dict[str, ModelConfig] = {}
