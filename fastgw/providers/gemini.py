"""Google AI Gemini API (``generateContent`` / ``streamGenerateContent?alt=sse``): pure
transforms between OpenAI's chat completions and Gemini's wire format.

Parameter rule. Every top-level field of an OpenAI chat request falls in one of three sets:

* **mapped** (:data:`MAPPED`): translated into Gemini's request (see ``_generation_config``
  and ``build_request``).
* **dropped** (:data:`DROPPED`): fields that only tune OpenAI-side behaviour and have no
  Gemini meaning; losing them does not change the generated output (``user``, ``store``,
  ``metadata``, ``service_tier``, ``prompt_cache_key``, ``safety_identifier``; also
  ``logprobs: false``, ``parallel_tool_calls: true``, ``modalities: ["text"]`` and an empty
  ``logit_bias``, which only restate the default).
* everything else is **rejected** with 400 ``unsupported_parameter``: fields whose loss would
  change the output (``logprobs: true``, ``top_logprobs``, ``logit_bias``, ``audio``,
  ``modalities`` with audio, ``prediction``, ``reasoning_effort``, ``verbosity``,
  ``web_search_options``, ``parallel_tool_calls: false``, the legacy ``functions`` /
  ``function_call``) and fields this adapter does not know. A request is never translated
  with a silent loss of meaning.

Smaller documented choices:

* ``system`` / ``developer`` messages, wherever they stand, become ``systemInstruction``
  (in order). The ``name`` of a message is dropped (Gemini has no participant names), as is
  the ``detail`` of an image (it tunes OpenAI's image resolution).
* JSON schemas (tool ``parameters``, ``response_format.json_schema``) are rewritten to
  Gemini's OpenAPI-style Schema: local ``$ref`` are inlined, ``type: [T, "null"]`` and a
  ``{"type": "null"}`` branch of ``anyOf`` become ``nullable``, ``const`` becomes a
  one-value ``enum``. In tool parameters, keywords Gemini rejects (``additionalProperties``,
  ``$schema``, ``oneOf``, ``allOf``, formats other than Gemini's, …) are stripped: they only
  describe arguments the model writes. In a response schema (the output contract) only
  annotations (``$schema``, ``$id``, ``$defs``, ``examples``…) and ``additionalProperties:
  false`` are stripped; any other unsupported keyword is a 400. The ``strict`` flag of a
  function is dropped (Gemini has no such flag).
* Responses: ``completion_tokens`` = ``candidatesTokenCount + thoughtsTokenCount`` (thinking
  is billed as output, like OpenAI's reasoning tokens, reported again in
  ``completion_tokens_details.reasoning_tokens``); ``prompt_tokens`` = ``promptTokenCount +
  toolUsePromptTokenCount``; ``total_tokens`` = ``totalTokenCount``. Thought parts
  (``thought: true``) are not part of the answer and are skipped.
* A prompt blocked before any candidate (``promptFeedback.blockReason``) is a 400 with code
  ``content_filter`` (raised by ``transform_response``; in a stream, an error event).
* Streams: the usage chunk (when the client asked for it) is sent only if Gemini reported
  usage. Google's function-call ``thoughtSignature`` is not carried over to later turns.
* The ``mock`` field (controls of fastgw's mock upstream) is forwarded as is; the real
  Gemini API rejects it.
"""

from __future__ import annotations

import array
import base64
import hashlib
import mimetypes
import os
import time
from typing import Any
from urllib.parse import quote

import msgspec

from .._core.sse import SSEEvent
from ..api.errors import GatewayError
from ..api.openai import Endpoint, ParsedRequest
from ..config.schema import ProviderConfig
from .base import StreamTranslator, UpstreamRequest, Usage
from .common import (
    DONE,
    FunctionDef,
    ImageURL,
    Message,
    OChoice,
    OFunction,
    OMessage,
    OToolCall,
    OUsage,
    ResponseFormat,
    SecretScrubber,
    Tool,
    ToolChoice,
    chunk_end,
    chunk_head,
    completion,
    credentials_rejected,
    error_text,
    invalid_stream_event,
    not_a_response,
    request_headers,
    usage_chunk,
    usage_out,
)
from .common import encode as _encode

__all__ = ["DROPPED", "MAPPED", "GeminiProvider", "GeminiStream"]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"

#: Top-level OpenAI chat fields translated to Gemini.
MAPPED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "top_k",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "n",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "tools",
        "tool_choice",
        "mock",
    }
)
#: Top-level fields without a Gemini meaning that only tune OpenAI-side behaviour: dropped.
DROPPED = frozenset(
    {"user", "store", "metadata", "service_tier", "prompt_cache_key", "safety_identifier"}
)


def unsupported(param: str, why: str) -> GatewayError:
    return GatewayError(
        400,
        f"'{param}' is not supported by Gemini providers: {why}",
        "invalid_request_error",
        "unsupported_parameter",
        param,
    )


def _invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", None, param)


# -- the OpenAI request, as far as it is translated ----------------------------------------------


class _InputAudio(msgspec.Struct):
    data: str
    format: str


class _File(msgspec.Struct):
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class _InPart(msgspec.Struct):
    """A content part; beyond :class:`~.common.ContentPart`: audio, files, and an
    ``image_url`` given as a bare string."""

    type: str
    text: str | None = None
    image_url: ImageURL | str | None = None
    input_audio: _InputAudio | None = None
    file: _File | None = None
    refusal: str | None = None


_InMessage = Message[_InPart]


class _FunctionDef(FunctionDef):
    parameters: dict[str, Any] | None = None


class _JsonSchema(msgspec.Struct):
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class _ResponseFormat(ResponseFormat):
    json_schema: _JsonSchema | None = None


class _ChatRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Every top-level field the adapter knows; any other is rejected at decode."""

    messages: list[_InMessage]
    model: str = ""
    stream: Any = None
    stream_options: Any = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: _ResponseFormat | None = None
    tools: list[Tool[_FunctionDef]] | None = None
    tool_choice: str | ToolChoice | None = None
    mock: Any = None
    # dropped: OpenAI-side only
    user: Any = None
    store: Any = None
    metadata: Any = None
    service_tier: Any = None
    prompt_cache_key: Any = None
    safety_identifier: Any = None
    # conditionally dropped (the default value) or rejected
    logprobs: bool | None = None
    top_logprobs: Any = None
    logit_bias: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    modalities: list[str] | None = None
    audio: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    web_search_options: Any = None
    functions: Any = None
    function_call: Any = None


class _EmbeddingsRequest(msgspec.Struct, forbid_unknown_fields=True):
    input: str | list[Any]
    model: str = ""
    dimensions: int | None = None
    encoding_format: str | None = None
    user: Any = None
    mock: Any = None


_chat_decoder = msgspec.json.Decoder(_ChatRequest)
_embeddings_decoder = msgspec.json.Decoder(_EmbeddingsRequest)
_any_decoder = msgspec.json.Decoder()


def _decode_error(exc: msgspec.ValidationError) -> GatewayError:
    text = str(exc)
    prefix = "Object contains unknown field `"
    if text.startswith(prefix) and " - at " not in text:
        field = text[len(prefix) :].split("`", 1)[0]
        return unsupported(field, "this parameter has no Gemini equivalent.")
    return _invalid(f"Invalid request for a Gemini provider: {text}")


def _reject_changing(r: _ChatRequest) -> None:
    """Fields whose loss would change the output: 400 unless they restate the default."""
    if r.logprobs:
        raise unsupported("logprobs", "token log probabilities are not translated.")
    if r.top_logprobs is not None:
        raise unsupported("top_logprobs", "token log probabilities are not translated.")
    if r.logit_bias:
        raise unsupported("logit_bias", "Gemini has no token biasing.")
    if r.parallel_tool_calls is False:
        raise unsupported("parallel_tool_calls", "Gemini cannot be kept from parallel calls.")
    if r.modalities is not None and any(m != "text" for m in r.modalities):
        raise unsupported("modalities", "only text output is translated.")
    for name in (
        "audio",
        "prediction",
        "reasoning_effort",
        "verbosity",
        "web_search_options",
        "functions",
        "function_call",
    ):
        if getattr(r, name) is not None:
            raise unsupported(name, "this parameter has no faithful Gemini equivalent.")


# -- JSON schema → Gemini Schema ----------------------------------------------------------------

_SCHEMA_KEYS = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "propertyOrdering",
        "default",
        "items",
        "minimum",
        "maximum",
    }
)
#: Keywords stripped even from a response schema: annotations with no effect on the output.
_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "$defs", "definitions", "examples"})
_FORMATS = {
    "string": frozenset({"enum", "date-time"}),
    "number": frozenset({"float", "double"}),
    "integer": frozenset({"int32", "int64"}),
}


class _SchemaError(Exception):
    pass


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise _SchemaError(f"only local $ref are supported (got {ref!r})")
    node: Any = root
    for key in ref[2:].split("/"):
        key = key.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or key not in node:
            raise _SchemaError(f"$ref {ref!r} does not resolve")
        node = node[key]
    if not isinstance(node, dict):
        raise _SchemaError(f"$ref {ref!r} is not a schema")
    return node


def _schema(
    node: Any, root: dict[str, Any], strict: bool, refs: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One JSON-schema node → Gemini's Schema (see the module notes)."""
    if not isinstance(node, dict):
        raise _SchemaError("a schema must be an object")
    if "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str):
            raise _SchemaError("$ref must be a string")
        if ref in refs:
            raise _SchemaError(f"recursive $ref {ref!r} cannot be expressed")
        merged = {**_resolve(ref, root), **{k: v for k, v in node.items() if k != "$ref"}}
        return _schema(merged, root, strict, (*refs, ref))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type":
            types = value if isinstance(value, list) else [value]
            real = [t for t in types if t != "null"]
            if len(real) < len(types):
                out["nullable"] = True
            if len(real) == 1:
                out["type"] = real[0]
            elif len(real) > 1:
                out["anyOf"] = [{"type": t} for t in real]
        elif key == "const":
            if not isinstance(value, str):
                if strict:
                    raise _SchemaError("'const' is supported for strings only")
                continue
            out["enum"] = [value]
        elif key == "enum":
            if not all(isinstance(v, str) for v in value):
                if strict:
                    raise _SchemaError("'enum' is supported for strings only")
                continue
            out["enum"] = value
        elif key == "properties":
            out["properties"] = {k: _schema(v, root, strict, refs) for k, v in value.items()}
        elif key == "items":
            out["items"] = _schema(value, root, strict, refs)
        elif key == "anyOf":  # a {"type": "null"} branch becomes nullable (Optional[T])
            branches = [_schema(v, root, strict, refs) for v in value]
            real = [br for br in branches if br != {"nullable": True}]
            if len(real) < len(branches):
                out["nullable"] = True
            if len(real) == 1:
                out.update({k: v for k, v in real[0].items() if k not in out})
            elif real:
                out["anyOf"] = real
        elif key in _SCHEMA_KEYS:
            out[key] = value
        elif key in _ANNOTATIONS or not strict:
            continue
        elif key == "additionalProperties" and value is False:
            continue  # Gemini's structured output only writes the declared properties
        else:
            raise _SchemaError(f"the JSON-schema keyword '{key}' has no Gemini equivalent")
    if "format" in out:
        allowed = _FORMATS.get(str(out.get("type", "")).lower(), frozenset())
        if out["format"] not in allowed:
            if strict:
                raise _SchemaError(f"format {out['format']!r} is not supported by Gemini")
            del out["format"]
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


# -- request translation -------------------------------------------------------------------------


def _data_url(url: str, param: str) -> tuple[str, str]:
    """``data:<mime>;base64,<data>`` → (mime, data)."""
    head, sep, data = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise _invalid("Only base64 data: URLs are supported.", param)
    mime = head[5:-7] or "application/octet-stream"
    return mime, data


def _url_part(url: str, param: str, default_mime: str) -> dict[str, Any]:
    if url.startswith("data:"):
        mime, data = _data_url(url, param)
        return {"inlineData": {"mimeType": mime, "data": data}}
    if url.startswith(("http://", "https://", "gs://")):
        path = url.split("?", 1)[0].split("#", 1)[0]
        mime = mimetypes.guess_type(path)[0] or default_mime
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise _invalid("An image URL must be a data: URL or an http(s) URL.", param)


_AUDIO_MIME = {"wav": "audio/wav", "mp3": "audio/mp3"}


def _parts(content: str | list[_InPart] | None, i: int, role: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content or role != "assistant" else []
    out: list[dict[str, Any]] = []
    for j, p in enumerate(content):
        param = f"messages[{i}].content[{j}]"
        if p.type == "text" and p.text is not None:
            out.append({"text": p.text})
        elif p.type == "refusal" and p.refusal is not None and role == "assistant":
            out.append({"text": p.refusal})
        elif role in ("system", "developer"):
            raise _invalid("System messages may only contain text parts.", param)
        elif p.type == "image_url" and p.image_url is not None:
            url = p.image_url if isinstance(p.image_url, str) else p.image_url.url
            out.append(_url_part(url, param, "image/jpeg"))
        elif p.type == "input_audio" and p.input_audio is not None:
            mime = _AUDIO_MIME.get(p.input_audio.format)
            if mime is None:
                raise _invalid(f"Unsupported audio format {p.input_audio.format!r}.", param)
            out.append({"inlineData": {"mimeType": mime, "data": p.input_audio.data}})
        elif p.type == "file" and p.file is not None and p.file.file_data is not None:
            out.append(_url_part(p.file.file_data, param, "application/pdf"))
        elif p.type == "file":
            raise unsupported(param, "only files given inline (file_data) are translated.")
        else:
            raise _invalid(f"Unsupported content part type {p.type!r}.", param)
    return out


def _function_response(content: str | list[_InPart] | None) -> dict[str, Any]:
    if isinstance(content, list):
        text = "".join(p.text or "" for p in content if p.type == "text")
    else:
        text = content or ""
    try:
        parsed = _any_decoder.decode(text)
    except msgspec.DecodeError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"content": text}


def _contents(messages: list[_InMessage]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents) with consecutive same-role turns merged."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for i, m in enumerate(messages):
        role = m.role
        if role in ("system", "developer"):
            system.extend(_parts(m.content, i, role))
            continue
        if role == "user":
            grole, parts = "user", _parts(m.content, i, role)
        elif role == "assistant":
            if m.function_call is not None:
                raise unsupported(f"messages[{i}].function_call", "use tool_calls.")
            if m.audio is not None:
                raise unsupported(f"messages[{i}].audio", "audio is not translated.")
            grole, parts = "model", _parts(m.content, i, role)
            for k, call in enumerate(m.tool_calls or ()):
                try:
                    args = _any_decoder.decode(call.function.arguments or "{}")
                except msgspec.DecodeError:
                    args = None
                if not isinstance(args, dict):
                    raise _invalid(
                        "Tool call arguments must be a JSON object.",
                        f"messages[{i}].tool_calls[{k}].function.arguments",
                    )
                call_names[call.id] = call.function.name
                parts.append({"functionCall": {"name": call.function.name, "args": args}})
        elif role == "tool":
            name = call_names.get(m.tool_call_id or "")
            if name is None:
                raise _invalid(
                    f"No earlier assistant tool call has the id {m.tool_call_id!r}.",
                    f"messages[{i}].tool_call_id",
                )
            response = _function_response(m.content)
            grole, parts = "user", [{"functionResponse": {"name": name, "response": response}}]
        else:
            raise unsupported(f"messages[{i}].role", f"the role {role!r} is not translated.")
        if not parts:
            continue
        if contents and contents[-1]["role"] == grole:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": grole, "parts": parts})
    return system, contents


def _tools(r: _ChatRequest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.tools:
        decls: list[dict[str, Any]] = []
        for i, tool in enumerate(r.tools):
            fn = tool.function
            if tool.type != "function" or fn is None:
                raise unsupported(f"tools[{i}]", f"tools of type {tool.type!r} are not translated.")
            decl: dict[str, Any] = {"name": fn.name}
            if fn.description is not None:
                decl["description"] = fn.description
            if fn.parameters is not None:
                params = fn.parameters
                empty_object = params.get("type") == "object" and not params.get("properties")
                if not empty_object:  # Gemini rejects an object schema without properties
                    try:
                        decl["parameters"] = _schema(params, params, strict=False)
                    except _SchemaError as e:
                        raise _invalid(
                            f"Unsupported tool parameters schema: {e}.",
                            f"tools[{i}].function.parameters",
                        ) from None
            decls.append(decl)
        out["tools"] = [{"functionDeclarations": decls}]
    choice = r.tool_choice
    if choice is not None:
        if isinstance(choice, str):
            modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
            if choice not in modes:
                raise _invalid(f"Invalid tool_choice {choice!r}.", "tool_choice")
            config: dict[str, Any] = {"mode": modes[choice]}
        elif choice.type == "function" and choice.function is not None:
            config = {"mode": "ANY", "allowedFunctionNames": [choice.function.name]}
        else:
            raise unsupported("tool_choice", f"tool_choice of type {choice.type!r}.")
        out["toolConfig"] = {"functionCallingConfig": config}
    return out


def _generation_config(r: _ChatRequest) -> dict[str, Any]:
    g: dict[str, Any] = {}
    if r.temperature is not None:
        g["temperature"] = r.temperature
    if r.top_p is not None:
        g["topP"] = r.top_p
    if r.top_k is not None:
        g["topK"] = r.top_k
    limit = r.max_completion_tokens if r.max_completion_tokens is not None else r.max_tokens
    if limit is not None:
        g["maxOutputTokens"] = limit
    if r.stop is not None:
        g["stopSequences"] = [r.stop] if isinstance(r.stop, str) else r.stop
    if r.n is not None:
        g["candidateCount"] = r.n
    if r.seed is not None:
        g["seed"] = r.seed
    if r.presence_penalty is not None:
        g["presencePenalty"] = r.presence_penalty
    if r.frequency_penalty is not None:
        g["frequencyPenalty"] = r.frequency_penalty
    fmt = r.response_format
    if fmt is not None:
        if fmt.type == "json_object":
            g["responseMimeType"] = "application/json"
        elif fmt.type == "json_schema":
            schema = fmt.json_schema.schema if fmt.json_schema is not None else None
            if schema is None:
                raise _invalid("json_schema.schema is required.", "response_format")
            try:
                g["responseSchema"] = _schema(schema, schema, strict=True)
            except _SchemaError as e:
                raise unsupported("response_format", f"{e}.") from None
            g["responseMimeType"] = "application/json"
        elif fmt.type != "text":
            raise _invalid(f"Invalid response_format type {fmt.type!r}.", "response_format")
    return g


def _model_path(model: str) -> str:
    if model.startswith(("models/", "tunedModels/")):
        return "/" + quote(model, safe="/-._~")
    return "/models/" + quote(model, safe="-._~")


# -- responses ------------------------------------------------------------------------------------


class _GFunctionCall(msgspec.Struct):
    name: str = ""
    args: dict[str, Any] | None = None


class _GPart(msgspec.Struct):
    text: str | None = None
    functionCall: _GFunctionCall | None = None
    thought: bool = False


class _GContent(msgspec.Struct):
    parts: list[_GPart] = []


class _GCandidate(msgspec.Struct):
    content: _GContent | None = None
    finishReason: str | None = None
    index: int = 0


class _GUsage(msgspec.Struct):
    promptTokenCount: int = 0
    candidatesTokenCount: int = 0
    totalTokenCount: int = 0
    cachedContentTokenCount: int = 0
    thoughtsTokenCount: int = 0
    toolUsePromptTokenCount: int = 0


class _GPromptFeedback(msgspec.Struct):
    blockReason: str | None = None


class _GResponse(msgspec.Struct):
    candidates: list[_GCandidate] | None = None
    promptFeedback: _GPromptFeedback | None = None
    usageMetadata: _GUsage | None = None
    modelVersion: str | None = None
    responseId: str | None = None
    error: Any = None


_response_decoder = msgspec.json.Decoder(_GResponse)

_FILTERED = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
)


def finish_reason(reason: str, has_calls: bool) -> str:
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return "tool_calls" if has_calls else "stop"


def _usage(u: _GUsage) -> Usage:
    prompt = u.promptTokenCount + u.toolUsePromptTokenCount
    completion = u.candidatesTokenCount + u.thoughtsTokenCount
    return (prompt, completion, u.totalTokenCount or prompt + completion, u.cachedContentTokenCount)


def openai_usage(u: _GUsage) -> OUsage:
    return usage_out(_usage(u), u.thoughtsTokenCount)


def _blocked(reason: str) -> GatewayError:
    return GatewayError(
        400,
        f"The prompt was blocked by Gemini's content filter (blockReason {reason}).",
        "invalid_request_error",
        "content_filter",
    )


def _body_id(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=12).hexdigest()


# -- streams --------------------------------------------------------------------------------------


class _Delta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class _Choice(msgspec.Struct, omit_defaults=False):
    index: int
    delta: _Delta
    logprobs: None = None
    finish_reason: str | None = None


_EMPTY_DELTA = _Delta()


class GeminiStream:
    """One ``streamGenerateContent?alt=sse`` stream → OpenAI ``chat.completion.chunk`` events.

    Every SSE event is a complete GenerateContentResponse. Per candidate: the first chunk
    carries ``role``; text parts become ``content`` deltas, function calls ``tool_calls``
    deltas (whole arguments at once); a ``finishReason`` becomes a chunk of its own. The last
    ``usageMetadata`` seen is the stream's usage.
    """

    __slots__ = (
        "_cands",
        "_client_usage",
        "_head",
        "_id",
        "_provider",
        "_tail",
        "_usage_meta",
        "usage",
    )

    def __init__(self, provider: GeminiProvider, req: ParsedRequest, upstream_model: str) -> None:
        self._provider = provider
        self._id = os.urandom(12).hex()
        self._head = chunk_head("chatcmpl-" + self._id, int(time.time()), upstream_model)
        self._client_usage = req.client_usage
        self._tail = b"]" + chunk_end(req.client_usage)
        #: candidate index → [role sent, tool calls so far]
        self._cands: dict[int, list[int]] = {}
        self._usage_meta: _GUsage | None = None
        self.usage: Usage | None = None

    def _chunk(self, choice: _Choice) -> bytes:
        return self._head + _encode(choice) + self._tail

    def feed(self, event: SSEEvent) -> bytes:
        data = event.data
        if not data or data == b"[DONE]":
            return b""
        try:
            r = _response_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return invalid_stream_event(self._provider.name)
        if r.error is not None:
            status = r.error.get("code") if isinstance(r.error, dict) else None
            return self._provider.map_error(
                status if isinstance(status, int) else 500, data
            ).sse_event()
        if r.usageMetadata is not None:
            self._usage_meta = r.usageMetadata
            self.usage = _usage(r.usageMetadata)
        if not r.candidates:
            fb = r.promptFeedback
            if fb is not None and fb.blockReason:
                return _blocked(fb.blockReason).sse_event()
            return b""
        out: list[bytes] = []
        for cand in r.candidates:
            state = self._cands.get(cand.index)
            if state is None:
                state = self._cands[cand.index] = [0, 0]
            text: list[str] = []
            calls: list[dict[str, Any]] | None = None
            if cand.content is not None:
                for part in cand.content.parts:
                    if part.thought:
                        continue
                    if part.text:
                        text.append(part.text)
                    fc = part.functionCall
                    if fc is not None:
                        n = state[1]
                        state[1] = n + 1
                        if calls is None:
                            calls = []
                        calls.append(
                            {
                                "index": n,
                                "id": f"call_{self._id}_{cand.index}_{n}",
                                "type": "function",
                                "function": {
                                    "name": fc.name,
                                    "arguments": _encode(fc.args or {}).decode(),
                                },
                            }
                        )
            role = None if state[0] else "assistant"
            if text or calls is not None:
                state[0] = 1
                delta = _Delta(role, "".join(text) if text else None, calls)
                out.append(self._chunk(_Choice(cand.index, delta)))
                role = None
            if cand.finishReason:
                state[0] = 1
                delta = _EMPTY_DELTA if role is None else _Delta(role=role)
                reason = finish_reason(cand.finishReason, state[1] > 0)
                out.append(self._chunk(_Choice(cand.index, delta, None, reason)))
        return b"".join(out)

    def finish(self) -> bytes:
        u = self._usage_meta
        if u is None or not self._client_usage:
            return DONE
        return usage_chunk(self._head, openai_usage(u)) + DONE


# -- errors ---------------------------------------------------------------------------------------


class _GErrorDetail(msgspec.Struct):
    code: int | None = None
    message: str | None = None
    status: str | None = None
    details: list[Any] | None = None


class _GError(msgspec.Struct):
    error: _GErrorDetail | None = None


_error_decoder = msgspec.json.Decoder(_GError | list[_GError])

_AUTH_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED"})
_BY_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "INTERNAL": 500,
}
_BY_HTTP = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}
_BY_HTTP |= {404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}
_BY_HTTP |= {504: "DEADLINE_EXCEEDED", 500: "INTERNAL"}


def _retry_delay(details: list[Any] | None) -> bytes | None:
    for d in details or ():
        if isinstance(d, dict) and str(d.get("@type", "")).endswith("RetryInfo"):
            delay = d.get("retryDelay")
            if isinstance(delay, str) and delay.endswith("s"):
                try:
                    return b"%d" % max(1, round(float(delay[:-1])))
                except ValueError:
                    return None
    return None


# -- the provider ---------------------------------------------------------------------------------


class GeminiProvider(SecretScrubber):
    """Google AI Gemini API (``x-goog-api-key`` auth)."""

    kind = "gemini"
    openai_shaped = False
    default_base_url = DEFAULT_BASE_URL

    def __init__(self, name: str, cfg: ProviderConfig) -> None:
        self.name = name
        self.base_url = (cfg.base_url or DEFAULT_BASE_URL).rstrip("/")
        self._secret = cfg.api_key or ""
        headers = {"content-type": "application/json"}
        headers.update({k.lower(): v for k, v in cfg.headers.items()})
        if cfg.api_key:
            headers["x-goog-api-key"] = cfg.api_key
        self.headers = headers

    # requests

    def build_request(
        self, req: ParsedRequest, upstream_model: str, request_id: str
    ) -> UpstreamRequest:
        if req.endpoint is Endpoint.EMBEDDINGS:
            return self._embeddings_request(req, upstream_model, request_id)
        if req.endpoint is not Endpoint.CHAT:
            raise GatewayError(
                400,
                f"Provider '{self.name}' (gemini) serves chat completions and embeddings only.",
                "invalid_request_error",
                "unsupported_endpoint",
            )
        try:
            r = _chat_decoder.decode(req.raw)
        except msgspec.ValidationError as e:
            raise _decode_error(e) from None
        _reject_changing(r)
        system, contents = _contents(r.messages)
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": system}
        body.update(_tools(r))
        config = _generation_config(r)
        if config:
            body["generationConfig"] = config
        if r.mock is not None:
            body["mock"] = r.mock
        path = _model_path(upstream_model)
        path += ":streamGenerateContent?alt=sse" if req.stream else ":generateContent"
        return UpstreamRequest(path, request_headers(request_id, req.stream), _encode(body), False)

    def _embeddings_request(
        self, req: ParsedRequest, upstream_model: str, request_id: str
    ) -> UpstreamRequest:
        try:
            r = _embeddings_decoder.decode(req.raw)
        except msgspec.ValidationError as e:
            raise _decode_error(e) from None
        texts = [r.input] if isinstance(r.input, str) else r.input
        if not texts or not all(isinstance(t, str) for t in texts):
            raise unsupported("input", "token-id inputs cannot be sent to Gemini; send text.")
        if r.encoding_format not in (None, "float", "base64"):
            raise _invalid(f"Invalid encoding_format {r.encoding_format!r}.", "encoding_format")
        path = _model_path(upstream_model)
        model_ref = path[1:]  # "models/<name>" (or "tunedModels/<name>")
        requests: list[dict[str, Any]] = []
        for t in texts:
            one: dict[str, Any] = {"model": model_ref, "content": {"parts": [{"text": t}]}}
            if r.dimensions is not None:
                one["outputDimensionality"] = r.dimensions
            requests.append(one)
        body: dict[str, Any] = {"requests": requests}
        if r.mock is not None:
            body["mock"] = r.mock
        return UpstreamRequest(
            path + ":batchEmbedContents", {"x-request-id": request_id}, _encode(body), False
        )

    # responses

    def transform_response(self, req: ParsedRequest, body: bytes) -> bytes:
        if req.endpoint is Endpoint.EMBEDDINGS:
            return self._embeddings_response(req, body)
        try:
            r = _response_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise self._bad_body() from None
        if not r.candidates and r.promptFeedback is not None and r.promptFeedback.blockReason:
            raise _blocked(r.promptFeedback.blockReason)
        rid = r.responseId or _body_id(body)
        choices: list[OChoice] = []
        for cand in r.candidates or ():
            texts: list[str] = []
            calls: list[OToolCall] = []
            for part in cand.content.parts if cand.content is not None else ():
                if part.thought:
                    continue
                if part.text is not None:
                    texts.append(part.text)
                if part.functionCall is not None:
                    fc = part.functionCall
                    args = _encode(fc.args or {}).decode()
                    call_id = f"call_{rid}_{cand.index}_{len(calls)}"
                    calls.append(OToolCall(call_id, "function", OFunction(fc.name, args)))
            message = OMessage("assistant", "".join(texts) if texts else None)
            if calls:
                message.tool_calls = calls
            reason = finish_reason(cand.finishReason or "STOP", bool(calls))
            choices.append(OChoice(cand.index, message, None, reason))
        model = r.modelVersion or req.model
        if r.usageMetadata is None:
            return completion("chatcmpl-" + rid, model, choices)
        return completion("chatcmpl-" + rid, model, choices, openai_usage(r.usageMetadata))

    def _embeddings_response(self, req: ParsedRequest, body: bytes) -> bytes:
        try:
            r = msgspec.json.decode(body, type=_GEmbeddings)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise self._bad_body() from None
        try:
            as_base64 = _embeddings_decoder.decode(req.raw).encoding_format == "base64"
        except (msgspec.DecodeError, msgspec.ValidationError):
            as_base64 = False
        data: list[dict[str, Any]] = []
        for i, e in enumerate(r.embeddings):
            vec: Any = e.values
            if as_base64:
                vec = base64.b64encode(array.array("f", e.values).tobytes()).decode()
            data.append({"object": "embedding", "index": i, "embedding": vec})
        return _encode(
            {
                "object": "list",
                "data": data,
                "model": req.model,
                # Gemini reports no token counts for embeddings
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            }
        )

    def _bad_body(self) -> GatewayError:
        return not_a_response(self.name, "a Gemini response")

    def new_stream(self, req: ParsedRequest, upstream_model: str) -> StreamTranslator:
        return GeminiStream(self, req, upstream_model)

    # errors

    def map_error(self, status: int, body: bytes) -> GatewayError:
        detail: _GErrorDetail | None = None
        try:
            parsed = _error_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            parsed = None
        if isinstance(parsed, list):
            parsed = parsed[0] if parsed else None
        if parsed is not None:
            detail = parsed.error
        message = detail.message if detail is not None and detail.message else None
        if message is None:
            message = error_text(body, status)
        message = self.scrub(message)
        gstatus = (detail.status if detail is not None else None) or _BY_HTTP.get(status)
        if gstatus is None:
            gstatus = "INTERNAL" if status >= 500 else "INVALID_ARGUMENT"
        reasons = {
            d.get("reason")
            for d in (detail.details or () if detail is not None else ())
            if isinstance(d, dict)
        }
        if gstatus in ("UNAUTHENTICATED", "PERMISSION_DENIED") or reasons & _AUTH_REASONS:
            return credentials_rejected(self.name, f"HTTP {status}", message)
        code = gstatus.lower()
        mapped = _BY_STATUS.get(gstatus, 500)
        if mapped == 400:
            return GatewayError(400, message, "invalid_request_error", code)
        if mapped == 404:
            return GatewayError(404, message, "invalid_request_error", "model_not_found")
        if mapped == 429:
            err = GatewayError(429, message, "rate_limit_error", "rate_limit_exceeded")
            delay = _retry_delay(detail.details if detail is not None else None)
            if delay is not None:
                err.headers.append((b"retry-after", delay))
            return err
        prefix = f"Provider '{self.name}' failed (HTTP {status}, {gstatus}): {message}"
        if mapped == 503:
            return GatewayError(503, prefix, "upstream_error", code)
        if mapped == 504:
            return GatewayError(504, prefix, "timeout_error", "upstream_deadline_exceeded")
        return GatewayError(502, prefix, "upstream_error", code)


class _GEmbedding(msgspec.Struct):
    values: list[float]


class _GEmbeddings(msgspec.Struct):
    embeddings: list[_GEmbedding]
