"""The Gemini provider: request translation, response and stream translation (checked with the
openai SDK's own types), error mapping, and a round trip through the mock upstream's Gemini
endpoints over a real socket."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import aiohttp
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from fastgw._core.sse import SSEParser
from fastgw.api.errors import GatewayError
from fastgw.api.openai import Endpoint, ParsedRequest, parse_request
from fastgw.config.schema import ProviderConfig
from fastgw.mock.server import start_server
from fastgw.providers.base import StreamTranslator
from fastgw.providers.gemini import GeminiProvider
from fastgw.providers.registry import build_provider

KEY = "AIza-test-secret"
USER = {"role": "user", "content": "hello"}


def provider(**cfg: Any) -> GeminiProvider:
    return GeminiProvider("gem", ProviderConfig(kind="gemini", api_key=KEY, **cfg))


def chat(**fields: Any) -> ParsedRequest:
    body: dict[str, Any] = {"model": "g", "messages": [USER]}
    body.update(fields)
    return parse_request(Endpoint.CHAT, json.dumps(body).encode())


def gbody(**fields: Any) -> dict[str, Any]:
    """The Gemini request body built for an OpenAI chat request with ``fields``."""
    out: dict[str, Any] = json.loads(provider().build_request(chat(**fields), "gm", "r").body)
    return out


def rejected(**fields: Any) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        provider().build_request(chat(**fields), "gm", "r")
    assert info.value.status == 400
    return info.value


# -- construction ---------------------------------------------------------------------------------


def test_registry_headers_and_base_url() -> None:
    p = build_provider("gem", ProviderConfig(kind="gemini", api_key=KEY, headers={"X-A": "1"}))
    assert isinstance(p, GeminiProvider)
    assert (p.kind, p.openai_shaped) == ("gemini", False)
    assert p.base_url == "https://generativelanguage.googleapis.com/v1beta"
    assert p.headers == {"content-type": "application/json", "x-a": "1", "x-goog-api-key": KEY}
    q = GeminiProvider("g", ProviderConfig(kind="gemini", base_url="http://h:1/v1beta/"))
    assert q.base_url == "http://h:1/v1beta"
    assert "x-goog-api-key" not in q.headers


# -- requests -------------------------------------------------------------------------------------


def test_paths_and_headers() -> None:
    p = provider()
    u = p.build_request(chat(), "gemini-2.0-flash", "rid")
    assert u.path == "/models/gemini-2.0-flash:generateContent"
    assert u.headers == {"x-request-id": "rid"} and not u.inject_usage
    s = p.build_request(chat(stream=True), "gemini-2.0-flash", "rid")
    assert s.path == "/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    assert s.headers["accept"] == "text/event-stream" and not s.inject_usage
    t = p.build_request(chat(), "tunedModels/my-model", "rid")
    assert t.path == "/tunedModels/my-model:generateContent"
    assert json.loads(u.body) == {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}


def test_system_developer_and_multi_turn_merging() -> None:
    body = gbody(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            {"role": "user", "content": "one", "name": "alice"},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": "un deux"},
            {"role": "user", "content": "three"},
        ]
    )
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Use French."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
        {"role": "model", "parts": [{"text": "un deux"}]},
        {"role": "user", "parts": [{"text": "three"}]},
    ]


def test_images_inline_and_by_url() -> None:
    png = base64.b64encode(b"\x89PNG").decode()
    body = gbody(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://x.test/cat.webp?s=1", "detail": "high"},
                    },
                    {"type": "image_url", "image_url": {"url": "https://x.test/image"}},
                ],
            }
        ]
    )
    assert body["contents"][0]["parts"] == [
        {"text": "look"},
        {"inlineData": {"mimeType": "image/png", "data": png}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://x.test/cat.webp?s=1"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x.test/image"}},
    ]
    bad = rejected(
        messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}
        ]
    )
    assert bad.param == "messages[0].content[0]"


def test_audio_and_unknown_part() -> None:
    body = gbody(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": "AA", "format": "mp3"}}
                ],
            }
        ]
    )
    assert body["contents"][0]["parts"] == [{"inlineData": {"mimeType": "audio/mp3", "data": "AA"}}]
    rejected(messages=[{"role": "user", "content": [{"type": "video", "video": {}}]}])


WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Weather of a city",
        "strict": True,
        "parameters": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {
                "city": {"type": "string", "format": "hostname"},
                "unit": {"anyOf": [{"$ref": "#/$defs/Unit"}, {"type": "null"}]},
                "days": {"type": ["integer", "null"], "minimum": 1},
            },
            "required": ["city"],
            "additionalProperties": False,
            "$defs": {"Unit": {"type": "string", "enum": ["C", "F"]}},
        },
    },
}


def test_tools_are_declared_with_a_gemini_schema() -> None:
    body = gbody(tools=[WEATHER, {"type": "function", "function": {"name": "now"}}])
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "weather",
                    "description": "Weather of a city",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "city": {"type": "string"},
                            "unit": {"nullable": True, "type": "string", "enum": ["C", "F"]},
                            "days": {"type": "integer", "nullable": True, "minimum": 1},
                        },
                        "required": ["city"],
                    },
                },
                {"name": "now"},
            ]
        }
    ]
    recursive = {"$ref": "#/$defs/N", "$defs": {"N": {"type": "object", "properties": {}}}}
    recursive["$defs"]["N"]["properties"] = {"next": {"$ref": "#/$defs/N"}}  # type: ignore[index]
    err = rejected(tools=[{"type": "function", "function": {"name": "n", "parameters": recursive}}])
    assert err.param == "tools[0].function.parameters"
    err = rejected(tools=[{"type": "custom", "custom": {"name": "x"}}])
    assert err.code == "unsupported_parameter"


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["weather"]},
        ),
    ],
)
def test_tool_choice(choice: Any, config: dict[str, Any]) -> None:
    body = gbody(tools=[WEATHER], tool_choice=choice)
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_tool_choice_invalid() -> None:
    assert rejected(tool_choice="sometimes").param == "tool_choice"
    err = rejected(tool_choice={"type": "allowed_tools", "allowed_tools": {}})
    assert err.code == "unsupported_parameter"


def test_tool_calls_and_tool_results() -> None:
    body = gbody(
        messages=[
            {"role": "user", "content": "weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "time", "arguments": ""},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 21}'},
            {"role": "tool", "tool_call_id": "call_b", "content": "noon"},
            {
                "role": "tool",
                "tool_call_id": "call_b",
                "content": [{"type": "text", "text": "[1]"}],
            },
            {"role": "user", "content": "thanks"},
        ]
    )
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "weather in Paris and Rome?"}]},
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "time", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "weather", "response": {"temp": 21}}},
                {"functionResponse": {"name": "time", "response": {"content": "noon"}}},
                {"functionResponse": {"name": "time", "response": {"content": "[1]"}}},
                {"text": "thanks"},
            ],
        },
    ]


def test_tool_result_without_call_and_bad_arguments() -> None:
    err = rejected(messages=[USER, {"role": "tool", "tool_call_id": "nope", "content": "x"}])
    assert err.param == "messages[1].tool_call_id"
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
    err = rejected(messages=[USER, {"role": "assistant", "tool_calls": [call]}])
    assert err.param == "messages[1].tool_calls[0].function.arguments"
    err = rejected(messages=[USER, {"role": "function", "name": "f", "content": "x"}])
    assert err.code == "unsupported_parameter"


def test_generation_config() -> None:
    body = gbody(
        temperature=0.5,
        top_p=0.9,
        max_tokens=50,
        stop=["END", "STOP"],
        n=2,
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        response_format={"type": "json_object"},
    )
    assert body["generationConfig"] == {
        "temperature": 0.5,
        "topP": 0.9,
        "maxOutputTokens": 50,
        "stopSequences": ["END", "STOP"],
        "candidateCount": 2,
        "seed": 7,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "responseMimeType": "application/json",
    }
    body = gbody(max_tokens=5, max_completion_tokens=9, stop="x", response_format={"type": "text"})
    assert body["generationConfig"] == {"maxOutputTokens": 9, "stopSequences": ["x"]}


def test_response_format_json_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {}}},
        "required": ["name", "tags"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": schema}}
    config = gbody(response_format=fmt)["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"] == {
        "type": "object",
        "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {}}},
        "required": ["name", "tags"],
    }
    for keyword in ({"oneOf": [{"type": "string"}]}, {"additionalProperties": {"type": "string"}}):
        bad = {**fmt, "json_schema": {"name": "x", "schema": {"type": "object", **keyword}}}
        err = rejected(response_format=bad)
        assert (err.code, err.param) == ("unsupported_parameter", "response_format")
    fmt_email = {"type": "string", "format": "email"}
    err = rejected(response_format={**fmt, "json_schema": {"name": "x", "schema": fmt_email}})
    assert err.code == "unsupported_parameter"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("logprobs", True),
        ("top_logprobs", 2),
        ("logit_bias", {"50256": -100}),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
        ("prediction", {"type": "content", "content": "x"}),
        ("reasoning_effort", "low"),
        ("verbosity", "low"),
        ("web_search_options", {}),
        ("parallel_tool_calls", False),
        ("functions", [{"name": "f"}]),
        ("function_call", "auto"),
        ("some_future_param", 1),
    ],
)
def test_parameters_that_change_the_output_are_rejected(field: str, value: Any) -> None:
    err = rejected(**{field: value})
    assert (err.code, err.param, err.type) == (
        "unsupported_parameter",
        field,
        "invalid_request_error",
    )
    assert field in err.message


def test_openai_side_parameters_are_dropped() -> None:
    plain = gbody()
    assert (
        gbody(
            user="u1",
            store=True,
            metadata={"a": "b"},
            service_tier="auto",
            prompt_cache_key="k",
            safety_identifier="s",
            logprobs=False,
            parallel_tool_calls=True,
            modalities=["text"],
            logit_bias={},
            stream_options={"include_usage": True},
        )
        == plain
    )


def test_mock_controls_are_forwarded() -> None:
    assert gbody(mock={"chunks": 3})["mock"] == {"chunks": 3}


def test_invalid_field_types() -> None:
    err = rejected(temperature="hot")
    assert err.code is None and "temperature" in err.message


def test_unsupported_endpoints() -> None:
    req = parse_request(Endpoint.COMPLETIONS, b'{"model": "g", "prompt": "x"}')
    with pytest.raises(GatewayError) as info:
        provider().build_request(req, "gm", "r")
    assert (info.value.status, info.value.code) == (400, "unsupported_endpoint")


# -- embeddings -----------------------------------------------------------------------------------


def test_embeddings_request_and_response() -> None:
    p = provider()
    req = parse_request(
        Endpoint.EMBEDDINGS, b'{"model": "e", "input": ["a", "b"], "dimensions": 2}'
    )
    u = p.build_request(req, "text-embedding-004", "r")
    assert u.path == "/models/text-embedding-004:batchEmbedContents"
    assert json.loads(u.body) == {
        "requests": [
            {
                "model": "models/text-embedding-004",
                "content": {"parts": [{"text": t}]},
                "outputDimensionality": 2,
            }
            for t in ("a", "b")
        ]
    }
    upstream = b'{"embeddings": [{"values": [0.5, -1.0]}, {"values": [0.25, 2.0]}]}'
    out = CreateEmbeddingResponse.model_validate_json(p.transform_response(req, upstream))
    assert [d.embedding for d in out.data] == [[0.5, -1.0], [0.25, 2.0]]
    assert out.model == "e"
    req64 = parse_request(
        Endpoint.EMBEDDINGS, b'{"model": "e", "input": "a", "encoding_format": "base64"}'
    )
    body = json.loads(p.transform_response(req64, b'{"embeddings": [{"values": [0.5, -1.0]}]}'))
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert struct.unpack("<2f", raw) == (0.5, -1.0)
    tokens = parse_request(Endpoint.EMBEDDINGS, b'{"model": "e", "input": [1, 2]}')
    with pytest.raises(GatewayError) as info:
        p.build_request(tokens, "m", "r")
    assert info.value.code == "unsupported_parameter"


# -- responses ------------------------------------------------------------------------------------


def response(**fields: Any) -> bytes:
    body: dict[str, Any] = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "Hello"}, {"text": " world"}]},
                "finishReason": "STOP",
                "index": 0,
                "safetyRatings": [],
            }
        ],
        "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2, "totalTokenCount": 6},
        "modelVersion": "gemini-2.0-flash-001",
        "responseId": "resp1",
    }
    body.update(fields)
    return json.dumps(body, indent=2).encode()  # Google pretty-prints non-streamed bodies


def completion(body: bytes, req: ParsedRequest | None = None) -> ChatCompletion:
    out = provider().transform_response(req or chat(), body)
    return ChatCompletion.model_validate_json(out)


def test_text_response() -> None:
    c = completion(response())
    assert c.id == "chatcmpl-resp1" and c.object == "chat.completion"
    assert c.model == "gemini-2.0-flash-001"
    assert len(c.choices) == 1
    ch = c.choices[0]
    assert (ch.index, ch.finish_reason, ch.message.role) == (0, "stop", "assistant")
    assert ch.message.content == "Hello world" and ch.message.tool_calls is None
    assert c.usage is not None
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) == (4, 2, 6)


def test_usage_with_thoughts_and_cache() -> None:
    usage = {
        "promptTokenCount": 100,
        "candidatesTokenCount": 10,
        "thoughtsTokenCount": 30,
        "cachedContentTokenCount": 64,
        "totalTokenCount": 140,
    }
    c = completion(response(usageMetadata=usage))
    u = c.usage
    assert u is not None
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (100, 40, 140)
    assert u.prompt_tokens_details is not None and u.prompt_tokens_details.cached_tokens == 64
    assert u.completion_tokens_details is not None
    assert u.completion_tokens_details.reasoning_tokens == 30


def test_function_call_response() -> None:
    parts = [
        {"text": "thinking...", "thought": True},
        {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
        {"functionCall": {"name": "weather", "args": {"city": "Rome"}}},
    ]
    body = response(
        candidates=[{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
        responseId=None,
    )
    c = completion(body)
    ch = c.choices[0]
    assert ch.finish_reason == "tool_calls" and ch.message.content is None
    calls = ch.message.tool_calls
    assert calls is not None and len(calls) == 2
    assert [(t.function.name, json.loads(t.function.arguments)) for t in calls] == [  # type: ignore[union-attr]
        ("weather", {"city": "Paris"}),
        ("weather", {"city": "Rome"}),
    ]
    ids = [t.id for t in calls]
    assert all(i.startswith("call_") for i in ids) and len(set(ids)) == 2
    again = completion(body).choices[0].message.tool_calls
    assert again is not None and [t.id for t in again] == ids  # deterministic


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("FINISH_REASON_UNSPECIFIED", "stop"),
    ],
)
def test_finish_reasons(reason: str, expected: str) -> None:
    cand: dict[str, Any] = {"finishReason": reason, "index": 0}
    if reason != "SAFETY":  # a filtered candidate may come without content
        cand["content"] = {"role": "model", "parts": [{"text": "x"}]}
    assert completion(response(candidates=[cand])).choices[0].finish_reason == expected


def test_several_candidates() -> None:
    cands = [
        {"content": {"parts": [{"text": f"answer {i}"}]}, "finishReason": "STOP", "index": i}
        for i in range(3)
    ]
    c = completion(response(candidates=cands), chat(n=3))
    assert [(ch.index, ch.message.content) for ch in c.choices] == [
        (0, "answer 0"),
        (1, "answer 1"),
        (2, "answer 2"),
    ]


def test_blocked_prompt_and_invalid_body() -> None:
    blocked = json.dumps(
        {
            "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
            "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5},
        }
    ).encode()
    with pytest.raises(GatewayError) as info:
        provider().transform_response(chat(), blocked)
    assert (info.value.status, info.value.code) == (400, "content_filter")
    assert "SAFETY" in info.value.message
    with pytest.raises(GatewayError) as info:
        provider().transform_response(chat(), b"<html>")
    assert (info.value.status, info.value.code) == (502, "upstream_protocol_error")


# -- streams --------------------------------------------------------------------------------------


def sse(*payloads: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(p).encode() + b"\r\n\r\n" for p in payloads)


def run_stream(
    raw: bytes, client_usage: bool = False, split: int = 7
) -> tuple[list[dict[str, Any]], bytes, StreamTranslator]:
    """Feed ``raw`` (split in small pieces) through a parser and a translator; return the
    decoded chunks (each validated as a ChatCompletionChunk), the raw output and the
    translator."""
    opts = {"stream_options": {"include_usage": True}} if client_usage else {}
    tr = provider().new_stream(chat(stream=True, **opts), "gemini-2.0-flash")
    parser = SSEParser()
    out = b""
    for i in range(0, len(raw), split):
        for ev in parser.feed(raw[i : i + split]):
            out += tr.feed(ev)
    last = parser.flush()
    if last is not None:
        out += tr.feed(last)
    out += tr.finish()
    assert out.endswith(b"data: [DONE]\n\n")
    chunks: list[dict[str, Any]] = []
    for block in out.split(b"\n\n")[:-2]:
        assert block.startswith(b"data: ")
        payload = json.loads(block[6:])
        if "error" not in payload:
            ChatCompletionChunk.model_validate(payload)
            assert ("usage" in payload) == client_usage
        chunks.append(payload)
    return chunks, out, tr


def gchunk(
    parts: list[dict[str, Any]] | None, finish: str | None = None, usage: int | None = None
) -> dict[str, Any]:
    cand: dict[str, Any] = {"index": 0}
    if parts is not None:
        cand["content"] = {"role": "model", "parts": parts}
    if finish:
        cand["finishReason"] = finish
    out: dict[str, Any] = {"candidates": [cand], "modelVersion": "gemini-2.0-flash"}
    if usage is not None:
        out["usageMetadata"] = {
            "promptTokenCount": 3,
            "candidatesTokenCount": usage,
            "totalTokenCount": 3 + usage,
        }
    return out


TEXT_STREAM = sse(
    gchunk([{"text": "Hel"}], usage=1),
    gchunk([{"text": "lo "}]),
    gchunk([{"text": "world"}], "STOP", usage=3),
)


def test_stream_text_chunks() -> None:
    chunks, _, tr = run_stream(TEXT_STREAM)
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": "Hel"},
        {"content": "lo "},
        {"content": "world"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert all(c["choices"][0]["logprobs"] is None for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert {c["model"] for c in chunks} == {"gemini-2.0-flash"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert tr.usage == (3, 3, 6, 0)


def test_stream_usage_chunk_when_asked() -> None:
    chunks, _, tr = run_stream(TEXT_STREAM, client_usage=True)
    assert all(c["usage"] is None for c in chunks[:-1])
    last = chunks[-1]
    assert last["choices"] == [] and last["id"] == chunks[0]["id"]
    assert last["usage"]["prompt_tokens"] == 3 and last["usage"]["completion_tokens"] == 3
    assert last["usage"]["total_tokens"] == 6
    assert tr.usage == (3, 3, 6, 0)


def test_stream_function_calls() -> None:
    raw = sse(
        gchunk([{"text": "Let me check."}]),
        gchunk(
            [
                {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "weather", "args": {"city": "Rome"}}},
            ]
        ),
        gchunk([{"functionCall": {"name": "time", "args": {}}}], "STOP", usage=9),
    )
    chunks, _, _ = run_stream(raw)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": "Let me check."}
    calls = deltas[1]["tool_calls"] + deltas[2]["tool_calls"]
    assert [c["index"] for c in calls] == [0, 1, 2]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("weather", {"city": "Paris"}),
        ("weather", {"city": "Rome"}),
        ("time", {}),
    ]
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
    assert len({c["id"] for c in calls}) == 3
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }


def test_stream_filtered_without_content_carries_the_role() -> None:
    chunks, _, _ = run_stream(sse(gchunk(None, "SAFETY")))
    assert chunks == [
        {
            **{k: chunks[0][k] for k in ("id", "object", "created", "model")},
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant"},
                    "logprobs": None,
                    "finish_reason": "content_filter",
                }
            ],
        }
    ]


def test_stream_error_event() -> None:
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    chunks, _, _ = run_stream(sse(gchunk([{"text": "Hi"}]), error))
    assert chunks[0]["choices"][0]["delta"]["content"] == "Hi"
    assert chunks[1]["error"]["code"] == "unavailable"
    assert "overloaded" in chunks[1]["error"]["message"]


def test_stream_blocked_prompt_and_garbage() -> None:
    blocked = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}
    chunks, _, tr = run_stream(sse(blocked))
    assert chunks[0]["error"]["code"] == "content_filter" and tr.usage is None
    tr2 = provider().new_stream(chat(stream=True), "m")
    parser = SSEParser()
    (ev,) = parser.feed(b"data: not json\n\n")
    assert b"upstream_protocol_error" in tr2.feed(ev)
    (ev,) = parser.feed(b": keep-alive\n\n")
    assert tr2.feed(ev) == b""


# -- errors ---------------------------------------------------------------------------------------


def gerror(code: int, status: str, message: str = "boom", **extra: Any) -> str:
    return json.dumps({"error": {"code": code, "message": message, "status": status, **extra}})


@pytest.mark.parametrize(
    ("status", "gstatus", "out", "code"),
    [
        (400, "INVALID_ARGUMENT", 400, "invalid_argument"),
        (400, "FAILED_PRECONDITION", 400, "failed_precondition"),
        (401, "UNAUTHENTICATED", 502, "upstream_auth_failed"),
        (403, "PERMISSION_DENIED", 502, "upstream_auth_failed"),
        (404, "NOT_FOUND", 404, "model_not_found"),
        (429, "RESOURCE_EXHAUSTED", 429, "rate_limit_exceeded"),
        (503, "UNAVAILABLE", 503, "unavailable"),
        (504, "DEADLINE_EXCEEDED", 504, "upstream_deadline_exceeded"),
        (500, "INTERNAL", 502, "internal"),
        (502, "UNKNOWN", 502, "unknown"),
    ],
)
def test_map_error(status: int, gstatus: str, out: int, code: str) -> None:
    err = provider().map_error(status, gerror(status, gstatus).encode())
    assert (err.status, err.code) == (out, code)
    assert "boom" in err.message
    assert json.loads(err.body())["error"]["code"] == code


def test_map_error_details() -> None:
    p = provider()
    bad_key = gerror(
        400,
        "INVALID_ARGUMENT",
        f"API key not valid: {KEY}",
        details=[
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
        ],
    )
    err = p.map_error(400, bad_key.encode())
    assert (err.status, err.code) == (502, "upstream_auth_failed")
    assert KEY not in err.message and "***" in err.message
    quota = gerror(
        429,
        "RESOURCE_EXHAUSTED",
        details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}],
    )
    assert (b"retry-after", b"17") in p.map_error(429, quota.encode()).headers
    listed = json.dumps([json.loads(gerror(404, "NOT_FOUND", "models/x is not found"))])
    assert p.map_error(404, listed.encode()).message == "models/x is not found"
    html = p.map_error(500, b"<html>oops</html>")
    assert (html.status, "oops" in html.message) == (502, True)
    assert p.map_error(400, b"").message == "HTTP 400"


# -- against the mock upstream over a real socket -------------------------------------------------


async def test_against_the_mock_upstream() -> None:
    async with await start_server("127.0.0.1", 0, chunks=4) as mock:
        p = GeminiProvider(
            "gem",
            ProviderConfig(kind="gemini", base_url=f"http://127.0.0.1:{mock.port}/v1beta"),
        )
        tools = [WEATHER]
        async with aiohttp.ClientSession(headers=p.headers) as session:

            async def send(req: ParsedRequest) -> tuple[int, bytes, str]:
                u = p.build_request(req, "gemini-mock", "rid-1")
                async with session.post(p.base_url + u.path, data=u.body) as resp:
                    return resp.status, await resp.read(), resp.headers["content-type"]

            # non-streamed text
            status, body, _ = await send(chat(messages=[{"role": "user", "content": "hi there"}]))
            assert status == 200
            c = ChatCompletion.model_validate_json(p.transform_response(chat(), body))
            assert c.choices[0].message.content is not None
            assert c.choices[0].message.content.endswith("You said: hi there")
            assert c.usage is not None and c.usage.total_tokens > 0

            # non-streamed function call
            req = chat(messages=[{"role": "user", "content": "call weather"}], tools=tools)
            status, body, _ = await send(req)
            c = ChatCompletion.model_validate_json(p.transform_response(req, body))
            calls = c.choices[0].message.tool_calls
            assert c.choices[0].finish_reason == "tool_calls" and calls is not None
            assert json.loads(calls[0].function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]

            # streamed text, several chunks, CRLF framing
            req = chat(
                messages=[{"role": "user", "content": "stream please"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            status, raw, ctype = await send(req)
            assert status == 200 and ctype.startswith("text/event-stream")
            assert raw.count(b"\r\n\r\n") == 5
            tr = p.new_stream(req, "gemini-mock")
            parser = SSEParser()
            out = b"".join(tr.feed(ev) for ev in parser.feed(raw)) + tr.finish()
            blocks = out.split(b"\n\n")[:-2]
            chunks = [ChatCompletionChunk.model_validate_json(b[6:]) for b in blocks]
            text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
            assert text.endswith("You said: stream please")
            assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
            assert chunks[-1].usage is not None and tr.usage is not None
            assert chunks[-1].usage.total_tokens == tr.usage[2] > 0

            # streamed function call
            req = chat(
                messages=[{"role": "user", "content": "call weather"}], tools=tools, stream=True
            )
            status, raw, _ = await send(req)
            tr = p.new_stream(req, "gemini-mock")
            out = b"".join(tr.feed(ev) for ev in SSEParser().feed(raw)) + tr.finish()
            assert b'"finish_reason":"tool_calls"' in out and b'"name":"weather"' in out

            # the mock's status control answers Google's error envelope
            status, body, _ = await send(chat(mock={"status": 429}))
            err = p.map_error(status, body)
            assert (status, err.status, err.code) == (429, 429, "rate_limit_exceeded")
