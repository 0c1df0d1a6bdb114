"""The configuration file's shape, as msgspec Structs.

Durations are written as numbers of seconds or strings such as ``"500ms"``, ``"2s"``,
``"10m"``, ``"1h"``; after loading they are floats (seconds). ``docs/configuration.md`` is
the reference for every field.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from ..catalog.schema import ModelPatch

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
    #: Streams: from the request sent to the first bytes of the stream body (the first
    #: token); omitted: ``first_byte``. Until the first byte reaches the client, a target that
    #: misses it is failed over like any other timeout.
    first_token: Duration | None = None


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
    #: Bring-your-own-key: the provider has no ``api_key`` here; each request carries the
    #: caller's own key for it in ``x-fastgw-provider-key`` (allowed only to keys or teams
    #: with ``passthrough: true`` when keys are in use). Off by default.
    key_passthrough: bool = False


class RetryConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    #: Attempts per target (1 = no retry).
    attempts: int = 1
    #: Upstream statuses retried (connection failures and timeouts always are).
    on_status: list[int] = msgspec.field(default_factory=lambda: [429, 500, 502, 503, 504, 529])
    #: First wait; doubled each retry (with jitter), at most ``max_backoff``.
    backoff: Duration = 0.25
    max_backoff: Duration = 5.0
    #: An upstream's ``Retry-After`` is honoured up to this; longer → no retry on this target.
    max_retry_after: Duration = 10.0


class LimitsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Rate limits; an omitted one is unlimited."""

    #: Requests per minute.
    rpm: int | None = None
    #: Tokens (prompt + completion) per minute.
    tpm: int | None = None
    #: Requests (streams included) in flight at once.
    concurrency: int | None = None


class BreakerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A circuit breaker per target (per worker): ``failures`` of the last ``window`` calls
    failed → the target is out for ``cooldown``, then half-open (``probes`` trial calls)."""

    failures: int = 5
    window: int = 10
    cooldown: Duration = 30.0
    #: A 429 from the target counts as a failure.
    count_429: bool = True
    #: Calls let through at once while half-open; one success closes the breaker.
    probes: int = 1


class ConditionConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``conditional``: the first condition whose ``when`` holds picks the target ``then``
    (a target's ``name``). ``when`` maps a request field (``metadata.<key>``,
    ``header.<name>``, ``body.<path>``, ``model``) to a value or ``{operator: value}``."""

    when: dict[str, object]
    then: str


#: The strategies a node may use (docs/routing.md).
STRATEGIES = ("fallback", "loadbalance", "conditional", "least-latency", "least-busy")


class _StrategyFields(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What a strategy node (a model, or a target with its own ``targets``) may set. Unset
    ``fallback_on``/``retry``/``timeout``/``breaker`` are inherited from the enclosing node."""

    #: ``fallback`` | ``loadbalance`` | ``conditional`` | ``least-latency`` | ``least-busy``.
    strategy: str = "fallback"
    #: ``conditional``: the conditions in order, and the target (name) when none holds.
    conditions: list[ConditionConfig] = []
    default: str | None = None
    #: ``loadbalance``: a request field (``header.x-user-id``, ``metadata.user``,
    #: ``body.user``) whose value keeps a caller on one target (sticky canary / A-B).
    sticky: str | None = None
    #: Upstream statuses that move on to the next target (connection failures and timeouts
    #: always do). Only before the first byte reached the client.
    fallback_on: list[int] | None = None
    retry: RetryConfig | None = None
    timeout: TimeoutConfig | None = None
    breaker: BreakerConfig | None = None
    #: Request fields set on every request below this node (a deeper node's own win).
    override_params: dict[str, object] = {}


class TargetConfig(_StrategyFields, kw_only=True, forbid_unknown_fields=True):
    """A provider and upstream model — or, with ``targets``, a nested strategy."""

    provider: str | None = None
    #: Upstream model name; omitted = the name the client asked for (or the part a `*` matched).
    model: str | None = None
    #: Nested strategy: this target is itself a strategy over these targets.
    targets: list[TargetConfig] | None = None
    #: ``loadbalance``: relative share of requests.
    weight: float = 1.0
    #: How ``conditional`` names this target.
    name: str | None = None
    #: Where the target runs (e.g. ``eu``, ``us``): a request requiring a region is only sent
    #: to targets in it.
    region: str | None = None
    #: Properties of the target (e.g. ``zdr``, ``hipaa``) a request may require.
    tags: list[str] = []


#: 429 and every 5xx (Anthropic's 529 "overloaded" included).
DEFAULT_FALLBACK_ON = [429, *range(500, 600)]


class ModelConfig(_StrategyFields, kw_only=True, forbid_unknown_fields=True):
    """A public model: a strategy over its targets (``fallback`` by default)."""

    targets: list[TargetConfig]
    #: Limits on the model, whoever calls it.
    limits: LimitsConfig | None = None


class RoutingConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Request-level routing controls."""

    #: Upper bound of the ``x-fastgw-timeout`` request header (the whole request's deadline,
    #: retries and fallbacks included); larger values are capped to it.
    max_request_timeout: Duration = 600.0
    #: Largest ``x-fastgw-metadata`` header accepted (bytes of JSON).
    max_metadata_bytes: int = 4096


class BudgetConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A spend budget of a key, a team or a tag (docs/budgets.md): at most ``usd`` per
    ``period``; each request reserves its estimated maximum cost before the call and settles
    the real one after, so the spend exceeds ``usd`` only by what requests cost beyond their
    reservation."""

    #: The hard limit in US dollars (> 0).
    usd: float
    #: ``daily``, ``weekly`` (ISO weeks, from Monday), ``monthly`` (calendar months) — all
    #: in UTC — or ``<N>d``: the last N days (1 to 366), moving by whole UTC days.
    period: str = "monthly"
    #: Fraction of ``usd`` past which answers carry ``x-fastgw-budget-warning`` and an alert
    #: is logged (0 < soft < 1); null: no warning.
    soft: float | None = 0.8
    #: Over the limit: ``reject`` (429 ``budget_exceeded``) or ``fallback`` (serve the
    #: request with ``fallback_model`` instead).
    on_exceed: str = "reject"
    #: ``on_exceed: fallback``: the public model name requests go to once over the limit.
    fallback_model: str | None = None


class AccessConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What a key or team may use. Lists of glob patterns (``gpt-4o*``, ``*``); an empty
    allow list allows everything, a deny match always wins."""

    models: list[str] = []
    deny_models: list[str] = []
    providers: list[str] = []
    regions: list[str] = []
    #: API paths without ``/v1``: ``chat/completions``, ``embeddings``, ``messages``, …
    endpoints: list[str] = []
    #: Largest ``max_tokens`` (or ``max_completion_tokens``) a request may ask for.
    max_tokens: int | None = None
    #: Keys the ``x-fastgw-metadata`` header may carry (empty: any).
    metadata: list[str] = []
    #: May send its own provider key (``x-fastgw-provider-key``) to providers with
    #: ``key_passthrough``.
    passthrough: bool = False
    limits: LimitsConfig | None = None
    #: A spend budget for the key, or for the team's keys together (docs/budgets.md).
    budget: BudgetConfig | None = None


class KeyConfig(AccessConfig, kw_only=True, forbid_unknown_fields=True):
    """A virtual key: the secret itself (``key: ${TEAM_A_KEY}``, hashed at load and never
    kept) or its hash (``hash: sha256:<hex>``)."""

    name: str
    key: str | None = None
    hash: str | None = None
    team: str | None = None
    tags: list[str] = []
    #: ISO 8601 date or time after which the key stops working (UTC when no offset).
    expires: str | None = None
    disabled: bool = False


class AdminConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The admin API (``/admin/``, docs/admin-api.md): on when this section is present."""

    #: Bearer token of the admin API: at least 32 characters (usually ``${FASTGW_ADMIN_TOKEN}``).
    token: str | None = None
    #: Where keys created at run time are kept with the ``local``/``memory`` state backends
    #: (an SQLite file); omitted: one under /var/tmp per user and config file. With the
    #: ``redis`` backend they live in Redis.
    store: str | None = None


STATE_BACKENDS = ("local", "redis", "memory")


class StateConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Where rate-limit buckets, concurrency slots and counters live (fastgw/state)."""

    #: ``local`` (shared memory across the workers of one host), ``redis`` (across hosts) or
    #: ``memory`` (each worker its own; tests).
    backend: str = "local"
    #: local: the shared-memory file; omitted: one under /dev/shm (or the temp dir) named
    #: after the configuration file and port, so the workers of one gateway share it.
    path: str | None = None
    #: local: entries in the table (buckets, slots and counters together).
    entries: int = 65536
    #: redis: where, e.g. ``redis://127.0.0.1:6379/0`` (``rediss://`` for TLS).
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: redis: prefix of every key the gateway writes.
    prefix: str = "fastgw:"
    #: redis unreachable: ``open`` (serve; limits enforced per worker meanwhile) or
    #: ``closed`` (refuse with 503).
    on_error: str = "open"
    #: redis: the longest wait for one operation before it counts as unreachable.
    timeout: Duration = 1.0


class CatalogConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The model catalog (prices, context windows, capabilities; docs/catalog.md): the
    shipped file, then the file at ``path``, then ``models``."""

    #: The catalog file ``fastgw catalog update`` writes and the gateway follows; omitted:
    #: ``fastgw-<uid>/catalog-<tag>.json`` under /var/tmp, beside the admin key store.
    path: str | None = None
    #: Overrides and additions: a known model changes only the fields given (e.g. just
    #: ``input``); a new one needs at least ``input``, ``output`` and ``context_window``.
    models: dict[str, ModelPatch] = {}
    #: How often each worker checks ``path`` for a new catalog.
    watch: Duration = 1.0


class BudgetsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Budgets beyond keys and teams, and where spend is journaled (docs/budgets.md)."""

    #: A budget per key tag: every key carrying the tag spends from it.
    tags: dict[str, BudgetConfig] = {}
    #: The spend ledger (an SQLite file, WAL mode) every worker journals settled spend to;
    #: omitted: ``fastgw-<uid>/spend-<tag>.db`` under /var/tmp, beside the admin key store.
    ledger: str | None = None
    #: How often each worker writes its queued spend to the ledger (what a crash may lose).
    flush_interval: Duration = 1.0


class GatewayConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    providers: dict[str, ProviderConfig] = {}
    #: Public model names (exact, or a pattern with one `*`) → where they are served.
    models: dict[str, ModelConfig] = {}
    routing: RoutingConfig = msgspec.field(default_factory=RoutingConfig)
    state: StateConfig = msgspec.field(default_factory=StateConfig)
    #: Virtual keys. None declared: the gateway is open (no key asked for).
    keys: list[KeyConfig] = []
    #: Access rules and limits shared by every key of a team (a key's own apply too).
    teams: dict[str, AccessConfig] = {}
    #: The admin API; absent: no admin API.
    admin: AdminConfig | None = None
    #: Limits on the whole gateway (every caller together).
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    #: The model catalog: where its file lives and the config's overrides.
    catalog: CatalogConfig = msgspec.field(default_factory=CatalogConfig)
    #: Tag budgets and the spend ledger (key and team budgets sit on the key or team).
    budgets: BudgetsConfig = msgspec.field(default_factory=BudgetsConfig)
