"""OpenAI and any OpenAI-compatible server (vLLM, Ollama, LM Studio, …): mostly data."""

from __future__ import annotations

from urllib.parse import quote

import msgspec

from ..api.errors import GatewayError
from ..api.openai import ParsedRequest
from ..config import ConfigError
from ..config.schema import ProviderConfig
from .base import StreamTranslator, UpstreamRequest
from .common import SecretScrubber, credentials_rejected, error_text, request_headers


class _UpstreamErrorDetail(msgspec.Struct):
    message: str | None = None
    type: str | None = None
    param: str | None = None
    code: str | int | None = None


class _UpstreamError(msgspec.Struct):
    error: _UpstreamErrorDetail | str | None = None
    message: str | None = None


_error_decoder = msgspec.json.Decoder(_UpstreamError)

#: Upstream statuses that describe the client's request: relayed as they are.
_CLIENT_STATUSES = frozenset({400, 404, 409, 413, 415, 422, 429})


class OpenAIProvider(SecretScrubber):
    """Relays OpenAI-shaped requests; the only rewrite is the model name (and usage in streams)."""

    openai_shaped = True

    def __init__(
        self,
        name: str,
        cfg: ProviderConfig,
        kind: str = "openai",
        default_base_url: str = "https://api.openai.com/v1",
    ) -> None:
        self.name = name
        self.kind = kind
        self.base_url = (cfg.base_url or default_base_url).rstrip("/")
        self._secret = cfg.api_key or ""
        headers = {"content-type": "application/json"}
        headers.update({k.lower(): v for k, v in cfg.headers.items()})
        if cfg.api_key:
            headers["authorization"] = f"Bearer {cfg.api_key}"
        #: Sent with every request (the upstream session's default headers).
        self.headers = headers

    def build_request(
        self, req: ParsedRequest, upstream_model: str, request_id: str
    ) -> UpstreamRequest:
        inject = req.stream and not req.client_usage and req.endpoint.stream_usage_option
        return UpstreamRequest(
            req.endpoint.path,
            request_headers(request_id, req.stream),
            req.upstream_body(upstream_model, inject),
            inject,
        )

    def transform_response(self, req: ParsedRequest, body: bytes) -> bytes:
        return body  # already OpenAI's shape: relayed as bytes

    def new_stream(self, req: ParsedRequest, upstream_model: str) -> StreamTranslator:
        raise NotImplementedError("OpenAI-shaped streams are relayed by the stream filter")

    def map_error(self, status: int, body: bytes) -> GatewayError:
        message: str | None = None
        etype: str | None = None
        code: str | None = None
        param: str | None = None
        try:
            parsed = _error_decoder.decode(body)
        except msgspec.DecodeError:
            parsed = None
        if parsed is not None:
            if isinstance(parsed.error, _UpstreamErrorDetail):
                message = parsed.error.message
                etype = parsed.error.type
                code = None if parsed.error.code is None else str(parsed.error.code)
                param = parsed.error.param
            elif isinstance(parsed.error, str):
                message = parsed.error
            elif parsed.message:
                message = parsed.message
        if message is None:
            message = error_text(body, status)
        message = self.scrub(message)
        if status in _CLIENT_STATUSES:
            return GatewayError(status, message, etype or "invalid_request_error", code, param)
        if status in (401, 403):
            return credentials_rejected(self.name, f"HTTP {status}", message)
        out_status = 503 if status == 503 else 502
        return GatewayError(
            out_status,
            f"Provider '{self.name}' failed (HTTP {status}): {message}",
            etype if etype and etype != "invalid_request_error" else "upstream_error",
            code or "upstream_error",
        )


class AzureProvider(OpenAIProvider):
    """Azure OpenAI. With ``api_version`` set: deployment URLs
    (``{base_url}/deployments/{deployment}/chat/completions?api-version=…``, the target's
    ``model`` being the deployment name) — ``base_url`` like
    ``https://RESOURCE.openai.azure.com/openai``. Without it: the v1 API
    (``https://RESOURCE.openai.azure.com/openai/v1``, model in the body). The key goes in
    the ``api-key`` header."""

    def __init__(self, name: str, cfg: ProviderConfig) -> None:
        if not cfg.base_url:
            raise ConfigError(
                [f"providers.{name}.base_url: required for kind 'azure' (your resource's URL)"]
            )
        super().__init__(name, cfg, kind="azure", default_base_url=cfg.base_url)
        self.headers.pop("authorization", None)
        if cfg.api_key:
            self.headers["api-key"] = cfg.api_key
        self.api_version = cfg.api_version

    def build_request(
        self, req: ParsedRequest, upstream_model: str, request_id: str
    ) -> UpstreamRequest:
        ureq = super().build_request(req, upstream_model, request_id)
        if self.api_version:
            deployment = quote(upstream_model, safe="")
            version = quote(self.api_version, safe="")
            ureq.path = f"/deployments/{deployment}{ureq.path}?api-version={version}"
        return ureq
