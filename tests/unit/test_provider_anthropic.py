"""The Anthropic provider: OpenAI chat completions ⇄ Anthropic Messages, checked with both
official SDKs' types (``openai`` for what clients get, ``anthropic`` for what is sent), on
recorded-shape fixtures and against the mock upstream over a real socket."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.message_create_params import (
    MessageCreateParamsNonStreaming,
    MessageCreateParamsStreaming,
)
from anthropic.types.shared import ErrorResponse
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessageFunctionToolCall,
)

from fastgw._core.sse import SSEEvent, SSEParser
from fastgw.api.errors import GatewayError
from fastgw.api.openai import Endpoint, ParsedRequest, parse_request
from fastgw.config.schema import ProviderConfig
from fastgw.mock.anthropic import TOOL_INPUT
from fastgw.mock.behaviour import MockState, Plan, plan_request
from fastgw.mock.server import start_server
from fastgw.providers.anthropic import (
    DEFAULT_MAX_TOKENS,
    AnthropicProvider,
    AnthropicStream,
)
from fastgw.providers.registry import build_provider

KEY = "sk-ant-secret-123"
MODEL = "claude-sonnet-4-5"

_NON_STREAM = pydantic.TypeAdapter(MessageCreateParamsNonStreaming)
_STREAM = pydantic.TypeAdapter(MessageCreateParamsStreaming)
_EVENT = pydantic.TypeAdapter(RawMessageStreamEvent)


def provider(**kw: Any) -> AnthropicProvider:
    return AnthropicProvider("claude", ProviderConfig(kind="anthropic", api_key=KEY, **kw))


def parsed(body: dict[str, Any], endpoint: Endpoint = Endpoint.CHAT) -> ParsedRequest:
    return parse_request(endpoint, json.dumps(body).encode())


def _drain(x: Any) -> Any:
    """Consume pydantic's lazy iterators so that nested values are validated too."""
    if isinstance(x, dict):
        return {k: _drain(v) for k, v in x.items()}
    if x is None or isinstance(x, str | bytes | int | float | bool):
        return x
    return [_drain(v) for v in x]


def check_anthropic(body: dict[str, Any]) -> None:
    """The body is a valid ``MessageCreateParams`` for the anthropic SDK."""
    adapter = _STREAM if body.get("stream") else _NON_STREAM
    _drain(adapter.validate_python(body))


def build(body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": "gpt-x"}
    base.update(body)
    ureq = provider(**kw).build_request(parsed(base), MODEL, "req-1")
    out: dict[str, Any] = json.loads(ureq.body)
    check_anthropic(out)
    return out


def reject(body: dict[str, Any]) -> GatewayError:
    base: dict[str, Any] = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}
    base.update(body)
    with pytest.raises(GatewayError) as exc:
        provider().build_request(parsed(base), MODEL, "req-1")
    assert exc.value.status == 400
    return exc.value


USER = [{"role": "user", "content": "hi"}]

# -- the adapter ------------------------------------------------------------------------------


def test_identity_and_headers() -> None:
    p = provider(headers={"X-Extra": "1"})
    assert (p.kind, p.openai_shaped, p.name) == ("anthropic", False, "claude")
    assert p.base_url == "https://api.anthropic.com/v1"
    assert p.headers == {
        "content-type": "application/json",
        "x-api-key": KEY,
        "anthropic-version": "2023-06-01",
        "x-extra": "1",
    }
    bare = AnthropicProvider(
        "a", ProviderConfig(kind="anthropic", base_url="http://127.0.0.1:9/v1/")
    )
    assert bare.base_url == "http://127.0.0.1:9/v1"
    assert "x-api-key" not in bare.headers


def test_registry_builds_it() -> None:
    assert isinstance(build_provider("c", ProviderConfig(kind="anthropic")), AnthropicProvider)


def test_build_request_shape() -> None:
    p = provider()
    u = p.build_request(parsed({"model": "m", "messages": USER}), MODEL, "rid-1")
    assert (u.path, u.headers, u.inject_usage) == ("/messages", {"x-request-id": "rid-1"}, False)
    assert json.loads(u.body) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": DEFAULT_MAX_TOKENS,
    }
    s = p.build_request(parsed({"model": "m", "messages": USER, "stream": True}), MODEL, "r")
    assert s.headers == {"x-request-id": "r", "accept": "text/event-stream"}
    assert json.loads(s.body)["stream"] is True


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        (Endpoint.COMPLETIONS, {"model": "m", "prompt": "x"}),
        (Endpoint.EMBEDDINGS, {"model": "m", "input": "x"}),
        (Endpoint.RESPONSES, {"model": "m", "input": "x"}),
    ],
)
def test_other_endpoints_rejected(endpoint: Endpoint, body: dict[str, Any]) -> None:
    with pytest.raises(GatewayError) as exc:
        provider().build_request(parsed(body, endpoint), MODEL, "r")
    assert exc.value.status == 400
    assert exc.value.code == "unsupported_endpoint"
    assert "not supported by provider kind 'anthropic'" in exc.value.message


# -- request translation ----------------------------------------------------------------------


def test_system_single_string() -> None:
    out = build({"messages": [{"role": "system", "content": "Be brief."}, *USER]})
    assert out["system"] == "Be brief."
    assert out["messages"] == [{"role": "user", "content": "hi"}]


def test_system_and_developer_concatenated_in_order_and_hoisted() -> None:
    out = build(
        {
            "messages": [
                {"role": "system", "content": "A"},
                {"role": "developer", "content": [{"type": "text", "text": "B"}]},
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "a1"},
                {"role": "system", "content": "C"},
                {"role": "user", "content": "q2"},
            ]
        }
    )
    assert out["system"] == [
        {"type": "text", "text": "A"},
        {"type": "text", "text": "B"},
        {"type": "text", "text": "C"},
    ]
    assert out["messages"] == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]


def test_system_with_image_rejected() -> None:
    img = {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
    err = reject({"messages": [{"role": "system", "content": [img]}, *USER]})
    assert err.param == "messages[0].content[0]"


def test_consecutive_same_role_turns_merged() -> None:
    out = build(
        {
            "messages": [
                {"role": "user", "content": "one"},
                {"role": "user", "content": [{"type": "text", "text": "two"}]},
                {"role": "assistant", "content": "three"},
                {"role": "assistant", "content": "four"},
                {"role": "user", "content": "five"},
            ]
        }
    )
    assert out["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "three"}, {"type": "text", "text": "four"}],
        },
        {"role": "user", "content": "five"},
    ]


def test_images_base64_and_url() -> None:
    out = build(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,iVBORw0K", "detail": "low"},
                        },
                        {"type": "image_url", "image_url": {"url": "https://ex.com/cat.jpg"}},
                    ],
                }
            ]
        }
    )
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"},
        },
        {"type": "image", "source": {"type": "url", "url": "https://ex.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    "url", ["data:image/png,rawbytes", "data:;base64,AAAA", "ftp://x/y.png", "file:///etc/passwd"]
)
def test_bad_image_urls_rejected(url: str) -> None:
    part = {"type": "image_url", "image_url": {"url": url}}
    err = reject({"messages": [{"role": "user", "content": [part]}]})
    assert err.param == "messages[0].content[0].image_url.url"
    assert err.code == "invalid_image_url"


@pytest.mark.parametrize("kind", ["input_audio", "file"])
def test_unsupported_content_parts_rejected(kind: str) -> None:
    err = reject({"messages": [{"role": "user", "content": [{"type": kind, kind: {}}]}]})
    assert (err.param, err.code) == ("messages[0].content[0]", "unsupported_content")


TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {"type": "function", "function": {"name": "now"}},
]

TOOL_TURNS: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Paris and the time?"},
    {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {"id": "toolu_2", "type": "function", "function": {"name": "now", "arguments": ""}},
        ],
    },
    {"role": "tool", "tool_call_id": "toolu_1", "content": "18C, sunny"},
    {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "12:00"}]},
    {"role": "user", "content": "Thanks!"},
]


def test_tools_calls_and_results() -> None:
    out = build({"messages": TOOL_TURNS, "tools": TOOLS})
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather of a city",
            "input_schema": TOOLS[0]["function"]["parameters"],
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert out["messages"] == [
        {"role": "user", "content": "Weather in Paris and the time?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C, sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "12:00"}],
                },
                {"type": "text", "text": "Thanks!"},
            ],
        },
    ]


def test_assistant_with_only_tool_calls() -> None:
    turns = [dict(TOOL_TURNS[1], content=None), *TOOL_TURNS[2:4]]
    out = build({"messages": [TOOL_TURNS[0], *turns], "tools": TOOLS})
    assert [b["type"] for b in out["messages"][1]["content"]] == ["tool_use", "tool_use"]


@pytest.mark.parametrize("args", ["{not json", "[1, 2]", '"text"'])
def test_tool_call_arguments_must_be_a_json_object(args: str) -> None:
    call = {"id": "t", "type": "function", "function": {"name": "f", "arguments": args}}
    err = reject({"messages": [*USER, {"role": "assistant", "tool_calls": [call]}]})
    assert err.param == "messages[1].tool_calls[0].function.arguments"
    assert err.code == "invalid_tool_arguments"


def test_tool_message_needs_its_call_id() -> None:
    err = reject({"messages": [*USER, {"role": "tool", "content": "x"}]})
    assert err.param == "messages[1].tool_call_id"


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, None, None),
        (None, True, None),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (
            {"type": "function", "function": {"name": "now"}},
            False,
            {"type": "tool", "name": "now", "disable_parallel_tool_use": True},
        ),
        ("none", False, {"type": "none"}),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: dict[str, Any] | None) -> None:
    body: dict[str, Any] = {"messages": USER, "tools": TOOLS}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert build(body).get("tool_choice") == expected


def test_bad_tool_choice() -> None:
    assert reject({"tools": TOOLS, "tool_choice": "sometimes"}).param == "tool_choice"
    err = reject({"tools": TOOLS, "tool_choice": {"type": "allowed_tools", "allowed_tools": {}}})
    assert (err.param, err.code) == ("tool_choice", "unsupported_parameter")


def test_strict_and_custom_tools_rejected() -> None:
    strict = {"type": "function", "function": {"name": "f", "strict": True, "parameters": {}}}
    assert reject({"tools": [strict]}).param == "tools[0].function.strict"
    custom = {"type": "custom", "custom": {"name": "g"}}
    assert reject({"tools": [TOOLS[0], custom]}).param == "tools[1]"
    lax = {"type": "function", "function": {"name": "f", "strict": False}}
    assert build({"messages": USER, "tools": [lax]})["tools"][0]["name"] == "f"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, DEFAULT_MAX_TOKENS),
        ({"max_tokens": 100}, 100),
        ({"max_completion_tokens": 200}, 200),
        ({"max_tokens": 100, "max_completion_tokens": 300}, 300),
        ({"max_tokens": None}, DEFAULT_MAX_TOKENS),
    ],
)
def test_max_tokens(fields: dict[str, Any], expected: int) -> None:
    assert build({"messages": USER, **fields})["max_tokens"] == expected


def test_sampling_stop_and_user() -> None:
    out = build({"messages": USER, "temperature": 0.5, "top_p": 0.9, "stop": "END", "user": "u-42"})
    assert (out["temperature"], out["top_p"]) == (0.5, 0.9)
    assert out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "u-42"}
    out = build({"messages": USER, "stop": ["a", "b"], "safety_identifier": "s-1"})
    assert out["stop_sequences"] == ["a", "b"]
    assert out["metadata"] == {"user_id": "s-1"}
    assert "stop_sequences" not in build({"messages": USER, "stop": []})
    assert build({"messages": USER, "temperature": 1})["temperature"] == 1


@pytest.mark.parametrize("t", [1.2, 2.0, -0.1])
def test_temperature_out_of_anthropic_range(t: float) -> None:
    err = reject({"temperature": t})
    assert err.param == "temperature"
    assert "between 0 and 1" in err.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("response_format", {"type": "json_object"}),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
        ("prediction", {"type": "content", "content": "x"}),
        ("presence_penalty", 0.5),
        ("frequency_penalty", -1.0),
        ("logit_bias", {"50256": -100}),
        ("reasoning_effort", "high"),
        ("verbosity", "low"),
        ("web_search_options", {}),
        ("functions", [{"name": "f"}]),
        ("function_call", "auto"),
        ("top_k", 5),
        ("some_future_option", {"a": 1}),
    ],
)
def test_rejected_parameters(field: str, value: Any) -> None:
    err = reject({field: value})
    assert (err.param, err.code, err.type) == (
        field,
        "unsupported_parameter",
        "invalid_request_error",
    )
    assert "provider kind 'anthropic'" in err.message
    assert json.loads(err.body())["error"]["param"] == field


def test_dropped_parameters() -> None:
    dropped: dict[str, Any] = {
        "stream_options": {"include_usage": True},
        "store": True,
        "metadata": {"k": "v"},
        "service_tier": "auto",
        "seed": 7,
        "prompt_cache_key": "k",
        "n": 1,
        "logprobs": False,
        "top_logprobs": 0,
        "presence_penalty": 0,
        "frequency_penalty": 0.0,
        "logit_bias": {},
        "response_format": {"type": "text"},
        "modalities": ["text"],
        "parallel_tool_calls": True,
        "audio": None,
        "prediction": None,
    }
    out = build({"messages": USER, "stream": True, **dropped})
    assert out == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": DEFAULT_MAX_TOKENS,
        "stream": True,
    }


def test_mock_controls_forwarded() -> None:
    out = build({"messages": USER, "mock": {"status": 529}})
    assert out["mock"] == {"status": 529}


def test_unknown_role_and_legacy_message_fields() -> None:
    assert reject({"messages": [{"role": "function", "content": "x", "name": "f"}]}).param == (
        "messages[0].role"
    )
    err = reject({"messages": [*USER, {"role": "assistant", "function_call": {"name": "f"}}]})
    assert err.param == "messages[1].function_call"
    err = reject({"messages": [*USER, {"role": "assistant", "audio": {"id": "a"}}]})
    assert err.param == "messages[1].audio"


def test_bad_field_types() -> None:
    err = reject({"max_tokens": "many"})
    assert err.param == "max_tokens"


# -- responses --------------------------------------------------------------------------------

RESPONSE_TEXT: dict[str, Any] = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": ", world"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 12,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 2000,
        "output_tokens": 6,
        "service_tier": "standard",
    },
}

RESPONSE_TOOLS: dict[str, Any] = {
    "id": "msg_02",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"},
        {
            "type": "tool_use",
            "id": "toolu_01A",
            "name": "get_weather",
            "input": {"city": "Paris", "unit": "c"},
        },
        {"type": "tool_use", "id": "toolu_01B", "name": "now", "input": {}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 50, "output_tokens": 40},
}


def transform(msg: dict[str, Any], req: dict[str, Any] | None = None) -> ChatCompletion:
    Message.model_validate(msg)  # the fixture has Anthropic's shape
    body = provider().transform_response(
        parsed(req or {"model": "m", "messages": USER}), json.dumps(msg).encode()
    )
    return ChatCompletion.model_validate_json(body)


def test_text_response() -> None:
    c = transform(RESPONSE_TEXT)
    assert c.id == "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL"
    assert c.object == "chat.completion"
    assert c.model == "claude-sonnet-4-5-20250929"
    assert len(c.choices) == 1
    choice = c.choices[0]
    assert (choice.index, choice.finish_reason) == (0, "stop")
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hello, world"
    assert choice.message.tool_calls is None
    assert c.usage is not None
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) == (
        2112,
        6,
        2118,
    )
    assert c.usage.prompt_tokens_details is not None
    assert c.usage.prompt_tokens_details.cached_tokens == 2000


def test_tool_use_response_skips_thinking() -> None:
    c = transform(RESPONSE_TOOLS)
    msg = c.choices[0].message
    assert msg.content is None
    assert c.choices[0].finish_reason == "tool_calls"
    assert msg.tool_calls is not None
    calls = []
    for t in msg.tool_calls:
        assert isinstance(t, ChatCompletionMessageFunctionToolCall)
        calls.append((t.id, t.type, t.function.name, json.loads(t.function.arguments)))
    assert calls == [
        ("toolu_01A", "function", "get_weather", {"city": "Paris", "unit": "c"}),
        ("toolu_01B", "function", "now", {}),
    ]
    assert c.usage is not None and c.usage.prompt_tokens == 50
    assert c.usage.prompt_tokens_details is not None
    assert c.usage.prompt_tokens_details.cached_tokens == 0


def test_text_and_tool_use_response() -> None:
    msg = dict(
        RESPONSE_TOOLS,
        content=[{"type": "text", "text": "Checking."}, *RESPONSE_TOOLS["content"][1:]],
    )
    c = transform(msg)
    assert c.choices[0].message.content == "Checking."
    assert c.choices[0].message.tool_calls is not None
    assert len(c.choices[0].message.tool_calls) == 2


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons(stop: str, finish: str) -> None:
    msg = dict(RESPONSE_TEXT, stop_reason=stop)
    if stop == "stop_sequence":
        msg["stop_sequence"] = "END"
    assert transform(msg).choices[0].finish_reason == finish


def test_empty_content_response() -> None:
    c = transform(dict(RESPONSE_TEXT, content=[]))
    assert c.choices[0].message.content == ""


def test_invalid_response_body() -> None:
    with pytest.raises(GatewayError) as exc:
        provider().transform_response(parsed({"model": "m", "messages": USER}), b"<html>")
    assert (exc.value.status, exc.value.code) == (502, "upstream_protocol_error")


# -- streams ----------------------------------------------------------------------------------


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def recorded_stream(blocks: list[bytes]) -> bytes:
    return b"".join(blocks)


MESSAGE_START = sse(
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_stream_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 25,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 400,
                "output_tokens": 1,
            },
        },
    },
)
PING = sse("ping", {"type": "ping"})


def text_start(i: int) -> bytes:
    return sse(
        "content_block_start",
        {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
    )


def text_delta(i: int, text: str) -> bytes:
    return sse(
        "content_block_delta",
        {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": text}},
    )


def block_stop(i: int) -> bytes:
    return sse("content_block_stop", {"type": "content_block_stop", "index": i})


def tool_start(i: int, tid: str, name: str) -> bytes:
    return sse(
        "content_block_start",
        {
            "type": "content_block_start",
            "index": i,
            "content_block": {"type": "tool_use", "id": tid, "name": name, "input": {}},
        },
    )


def json_delta(i: int, part: str) -> bytes:
    return sse(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": i,
            "delta": {"type": "input_json_delta", "partial_json": part},
        },
    )


def message_delta(stop: str, output: int) -> bytes:
    return sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": output},
        },
    )


MESSAGE_STOP = sse("message_stop", {"type": "message_stop"})

TEXT_STREAM = [
    MESSAGE_START,
    text_start(0),
    PING,
    text_delta(0, "Hello"),
    text_delta(0, ', "world"'),
    text_delta(0, " ✓"),
    block_stop(0),
    message_delta("end_turn", 15),
    MESSAGE_STOP,
]

THINKING_START = sse(
    "content_block_start",
    {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
    },
)
THINKING_DELTA = sse(
    "content_block_delta",
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "thinking_delta", "thinking": "Let me think"},
    },
)
SIGNATURE_DELTA = sse(
    "content_block_delta",
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM"},
    },
)

TOOL_STREAM = [
    MESSAGE_START,
    THINKING_START,
    THINKING_DELTA,
    SIGNATURE_DELTA,
    block_stop(0),
    text_start(1),
    text_delta(1, "Checking."),
    block_stop(1),
    tool_start(2, "toolu_A", "get_weather"),
    json_delta(2, ""),
    json_delta(2, '{"city": "Pa'),
    json_delta(2, 'ris", "unit"'),
    json_delta(2, ': "c"}'),
    block_stop(2),
    tool_start(3, "toolu_B", "now"),
    json_delta(3, "{}"),
    block_stop(3),
    message_delta("tool_use", 89),
    MESSAGE_STOP,
]


def check_fixture(blocks: list[bytes]) -> None:
    """Each recorded event validates as an anthropic SDK stream event."""
    for block in blocks:
        for ev in SSEParser().feed(block):
            assert ev.data is not None
            data = json.loads(ev.data)
            if data["type"] not in ("error", "ping"):  # the SDK's union leaves these out
                _EVENT.validate_python(data)
                assert ev.event == data["type"].encode()


def run_stream(
    blocks: list[bytes], client_usage: bool = False, split: int = 0
) -> tuple[AnthropicStream, list[bytes]]:
    """Translate a recorded stream (re-split into ``split``-byte chunks when set); return the
    translator and the client's SSE data payloads."""
    check_fixture(blocks)
    body: dict[str, Any] = {"model": "m", "messages": USER, "stream": True}
    if client_usage:
        body["stream_options"] = {"include_usage": True}
    tr = provider().new_stream(parsed(body), MODEL)
    assert isinstance(tr, AnthropicStream)
    raw = recorded_stream(blocks)
    chunks = [raw[i : i + split] for i in range(0, len(raw), split)] if split else [raw]
    parser = SSEParser()
    out = b"".join(tr.feed(ev) for c in chunks for ev in parser.feed(c))
    last = parser.flush()
    if last is not None:
        out += tr.feed(last)
    out += tr.finish()
    events = [ev.data for ev in SSEParser().feed(out)]
    assert all(d is not None for d in events)
    return tr, [d for d in events if d is not None]


def chunks_of(events: list[bytes]) -> list[ChatCompletionChunk]:
    assert events[-1] == b"[DONE]"
    return [ChatCompletionChunk.model_validate_json(d) for d in events[:-1]]


@pytest.mark.parametrize("split", [0, 1, 7])
def test_text_stream(split: int) -> None:
    tr, events = run_stream(TEXT_STREAM, split=split)
    chunks = chunks_of(events)
    assert all(c.id == "chatcmpl-msg_stream_1" for c in chunks)
    assert all(c.model == "claude-sonnet-4-5-20250929" for c in chunks)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.created for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == 'Hello, "world" ✓'
    assert [c.choices[0].finish_reason for c in chunks] == [None, None, None, None, "stop"]
    assert all(c.usage is None for c in chunks)
    assert all(b'"usage"' not in e for e in events)
    assert tr.usage == (425, 15, 440, 400)


def test_text_stream_with_client_usage() -> None:
    _, events = run_stream(TEXT_STREAM, client_usage=True)
    chunks = chunks_of(events)
    assert all(b'"usage":null' in e for e in events[:-2])
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (425, 15)
    assert last.usage.total_tokens == 440
    assert last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cached_tokens == 400
    assert last.id == "chatcmpl-msg_stream_1"


@pytest.mark.parametrize("split", [0, 5])
def test_tool_call_stream(split: int) -> None:
    tr, events = run_stream(TOOL_STREAM, split=split)
    chunks = chunks_of(events)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Checking."
    calls: dict[int, dict[str, str]] = {}
    for c in chunks:
        for tc in c.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            if tc.id:
                entry["id"] = tc.id
                assert tc.type == "function"
            if tc.function is not None:
                entry["name"] += tc.function.name or ""
                entry["arguments"] += tc.function.arguments or ""
    assert calls == {
        0: {"id": "toolu_A", "name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'},
        1: {"id": "toolu_B", "name": "now", "arguments": "{}"},
    }
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert tr.usage == (425, 89, 514, 400)
    # the first piece of each tool call names it, with empty arguments
    first = json.loads(events[2])["choices"][0]["delta"]
    assert first == {
        "tool_calls": [
            {
                "index": 0,
                "id": "toolu_A",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ]
    }


ERROR_EVENT = sse(
    "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
)


def test_error_event_mid_stream() -> None:
    tr, events = run_stream([MESSAGE_START, text_start(0), text_delta(0, "Hel"), ERROR_EVENT])
    assert events[-1] == b"[DONE]"
    err = json.loads(events[-2])
    assert err == {
        "error": {
            "message": "Provider 'claude' is overloaded: Overloaded",
            "type": "overloaded_error",
            "param": None,
            "code": "upstream_overloaded",
        }
    }
    ChatCompletionChunk.model_validate_json(events[1])
    assert tr.usage == (425, 1, 426, 400)


@pytest.mark.parametrize(
    ("etype", "status_type"),
    [
        ("api_error", "upstream_error"),
        ("rate_limit_error", "rate_limit_error"),
        ("invalid_request_error", "invalid_request_error"),
        ("something_new", "upstream_error"),
    ],
)
def test_other_error_events(etype: str, status_type: str) -> None:
    ev = sse("error", {"type": "error", "error": {"type": etype, "message": f"boom {KEY}"}})
    _, events = run_stream([MESSAGE_START, ev])
    err = json.loads(events[-2])["error"]
    assert err["type"] == status_type
    assert KEY not in err["message"] and "***" in err["message"]


def test_events_that_produce_nothing() -> None:
    tr = provider().new_stream(parsed({"model": "m", "messages": USER, "stream": True}), MODEL)
    for block in [PING, block_stop(0), MESSAGE_STOP, text_start(0), text_delta(0, "")]:
        (ev,) = SSEParser().feed(block)
        assert tr.feed(ev) == b""
    assert tr.feed(SSEEvent(b": keep-alive\n\n")) == b""
    assert tr.feed(SSEEvent(b"\n")) == b""
    unknown = sse("future_event", {"type": "future_event", "x": 1})
    (ev,) = SSEParser().feed(unknown)
    assert tr.feed(ev) == b""
    assert tr.usage is None
    assert tr.finish() == b"data: [DONE]\n\n"


def test_invalid_event_json() -> None:
    tr = provider().new_stream(parsed({"model": "m", "messages": USER, "stream": True}), MODEL)
    out = tr.feed(SSEEvent(b"data: {oops\n\n", data=b"{oops"))
    assert json.loads(out[6:])["error"]["code"] == "upstream_protocol_error"


def test_chunks_before_message_start_use_the_requested_model() -> None:
    _, events = run_stream([text_delta(0, "x")])
    (chunk,) = chunks_of(events)
    assert chunk.model == MODEL
    assert chunk.choices[0].delta.content == "x"


def test_message_delta_with_cumulative_input_usage() -> None:
    delta = sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            "usage": {
                "input_tokens": 30,
                "cache_creation_input_tokens": 5,
                "cache_read_input_tokens": 400,
                "output_tokens": 20,
            },
        },
    )
    tr, events = run_stream([MESSAGE_START, text_start(0), text_delta(0, "a"), delta])
    assert tr.usage == (435, 20, 455, 400)
    assert chunks_of(events)[-1].choices[0].finish_reason == "length"


# -- errors -----------------------------------------------------------------------------------


def anthropic_error(etype: str, message: str) -> bytes:
    body = {"type": "error", "error": {"type": etype, "message": message}, "request_id": "req_1"}
    if etype != "request_too_large":  # documented (HTTP 413), but not in the SDK's union
        ErrorResponse.model_validate(body)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("http", "etype", "status", "otype", "code"),
    [
        (400, "invalid_request_error", 400, "invalid_request_error", None),
        (401, "authentication_error", 502, "upstream_error", "upstream_auth_failed"),
        (403, "permission_error", 502, "upstream_error", "upstream_auth_failed"),
        (402, "billing_error", 502, "upstream_error", "upstream_auth_failed"),
        (404, "not_found_error", 404, "invalid_request_error", "not_found"),
        (413, "request_too_large", 413, "invalid_request_error", "request_too_large"),
        (429, "rate_limit_error", 429, "rate_limit_error", "rate_limit_exceeded"),
        (500, "api_error", 502, "upstream_error", "upstream_error"),
        (529, "overloaded_error", 503, "overloaded_error", "upstream_overloaded"),
        (503, "overloaded_error", 503, "overloaded_error", "upstream_overloaded"),
        (504, "timeout_error", 504, "timeout_error", "upstream_timeout"),
    ],
)
def test_map_error(http: int, etype: str, status: int, otype: str, code: str | None) -> None:
    err = provider().map_error(http, anthropic_error(etype, f"details with {KEY} inside"))
    assert (err.status, err.type, err.code) == (status, otype, code)
    assert KEY not in err.message
    assert "details with *** inside" in err.message


@pytest.mark.parametrize(
    ("http", "body", "status", "otype"),
    [
        (529, b"", 503, "overloaded_error"),
        (503, b"Service Unavailable", 503, "overloaded_error"),
        (502, b"<html>Bad Gateway</html>", 502, "upstream_error"),
        (500, b"null", 502, "upstream_error"),
        (401, b"", 502, "upstream_error"),
        (400, b'{"error": "plain string"}', 400, "invalid_request_error"),
        (422, b'{"message": "bad"}', 422, "invalid_request_error"),
        (418, b"teapot", 502, "upstream_error"),
    ],
)
def test_map_error_without_anthropic_body(http: int, body: bytes, status: int, otype: str) -> None:
    err = provider().map_error(http, body)
    assert (err.status, err.type) == (status, otype)
    assert err.message


def test_map_error_messages() -> None:
    err = provider().map_error(400, anthropic_error("invalid_request_error", "max_tokens: bad"))
    assert err.message == "max_tokens: bad"
    err = provider().map_error(502, b"<html>Bad Gateway</html>")
    assert "Provider 'claude'" in err.message and "HTTP 502" in err.message


# -- the mock upstream ------------------------------------------------------------------------

HEADERS = [(b"content-type", b"application/json"), (b"anthropic-version", b"2023-06-01")]


def mock_plan(body: dict[str, Any], headers: list[tuple[bytes, bytes]] = HEADERS) -> Plan:
    return plan_request(MockState(), "POST", "/v1/messages", "", headers, json.dumps(body).encode())


def mock_events(p: Plan) -> list[tuple[str, dict[str, Any]]]:
    assert p.frames is not None
    raw = b"".join(data for _, data in p.frames if data is not None)
    return [
        (ev.event.decode(), json.loads(ev.data))
        for ev in SSEParser().feed(raw)
        if ev.event is not None and ev.data is not None
    ]


BASIC = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "Hi there"}]}


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        ({"max_tokens": 5, "messages": []}, HEADERS, "model: Field required"),
        ({"model": "m", "messages": []}, HEADERS, "max_tokens: Field required"),
        ({"model": "m", "max_tokens": 5}, HEADERS, "messages: Field required"),
        (BASIC, HEADERS[:1], "anthropic-version: header is required"),
    ],
)
def test_mock_validates(
    body: dict[str, Any], headers: list[tuple[bytes, bytes]], message: str
) -> None:
    p = mock_plan(body, headers)
    assert p.status == 400
    err = ErrorResponse.model_validate_json(p.body)
    assert (err.error.type, err.error.message) == ("invalid_request_error", message)


def test_mock_message() -> None:
    p = mock_plan(BASIC)
    assert p.status == 200
    msg = Message.model_validate_json(p.body)
    assert msg.content[0].type == "text"
    assert msg.content[0].text.endswith("Hi there")
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == 2
    assert msg.usage.cache_read_input_tokens == 0


def test_mock_limits_and_stop_sequences() -> None:
    msg = Message.model_validate_json(mock_plan(dict(BASIC, max_tokens=3)).body)
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 3
    body = dict(BASIC, stop_sequences=["mock"])
    msg = Message.model_validate_json(mock_plan(body).body)
    assert (msg.stop_reason, msg.stop_sequence) == ("stop_sequence", "mock")
    assert "mock" not in msg.content[0].text  # type: ignore[union-attr]


def test_mock_cached_system_blocks() -> None:
    system = [
        {"type": "text", "text": "one two three", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "four"},
    ]
    msg = Message.model_validate_json(mock_plan(dict(BASIC, system=system)).body)
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens) == (3, 3)


def test_mock_stream_event_sequence() -> None:
    events = mock_events(mock_plan(dict(BASIC, stream=True, mock={"chunks": 3})))
    for name, data in events:
        assert name == data["type"]
        if name != "ping":
            _EVENT.validate_python(data)
    assert [n for n, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_mock_tool_use() -> None:
    body = dict(
        BASIC,
        messages=[{"role": "user", "content": "please call get_weather"}],
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
    )
    msg = Message.model_validate_json(mock_plan(body).body)
    assert msg.stop_reason == "tool_use"
    tool = msg.content[-1]
    assert tool.type == "tool_use"
    assert (tool.name, tool.input) == ("get_weather", TOOL_INPUT)
    events = mock_events(mock_plan(dict(body, stream=True)))
    parts = [
        d["delta"]["partial_json"]
        for n, d in events
        if d.get("index") == 1 and n == "content_block_delta"
    ]
    assert len(parts) > 1 and json.loads("".join(parts)) == TOOL_INPUT
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("status", "etype"),
    [
        (529, "overloaded_error"),
        (429, "rate_limit_error"),
        (401, "authentication_error"),
        (500, "api_error"),
    ],
)
def test_mock_status_control(status: int, etype: str) -> None:
    p = mock_plan(dict(BASIC, mock={"status": status}))
    assert p.status == status
    assert ErrorResponse.model_validate_json(p.body).error.type == etype
    if status in (429, 529):
        assert (b"retry-after", b"1") in p.headers


def test_mock_drop_after() -> None:
    p = mock_plan(dict(BASIC, stream=True, mock={"chunks": 4, "drop_after": 2}))
    assert p.frames is not None
    frames = list(p.frames)
    assert frames[-1][1] is None
    assert sum(1 for _, d in frames if d and b"text_delta" in d) == 2


# -- over a real socket -----------------------------------------------------------------------


async def _post(
    session: aiohttp.ClientSession, url: str, p: AnthropicProvider, body: dict[str, Any]
) -> tuple[int, ParsedRequest, bytes, str]:
    req = parsed(body)
    ureq = p.build_request(req, MODEL, "rid-socket")
    async with session.post(
        url + ureq.path, data=ureq.body, headers={**p.headers, **ureq.headers}
    ) as resp:
        return resp.status, req, await resp.read(), resp.headers.get("content-type", "")


async def test_against_mock_server() -> None:
    async with await start_server("127.0.0.1", 0) as server, aiohttp.ClientSession() as session:
        p = AnthropicProvider(
            "mock", ProviderConfig(kind="anthropic", base_url=server.url, api_key=KEY)
        )
        base: dict[str, Any] = {
            "model": "gpt-4o",
            "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "Yo"}],
        }
        # non-streamed
        status, req, body, _ = await _post(session, server.url, p, base)
        assert status == 200
        c = ChatCompletion.model_validate_json(p.transform_response(req, body))
        assert c.choices[0].message.content is not None
        assert c.choices[0].message.content.endswith("Yo")
        assert c.model == MODEL and c.usage is not None and c.usage.prompt_tokens == 2

        # streamed, with tool calls and client usage
        tool_body = dict(
            base,
            messages=[{"role": "user", "content": "call get_weather now"}],
            tools=TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
        status, req, body, ctype = await _post(session, server.url, p, tool_body)
        assert status == 200 and ctype.startswith("text/event-stream")
        tr = p.new_stream(req, MODEL)
        out = b"".join(tr.feed(ev) for ev in SSEParser().feed(body)) + tr.finish()
        events = [ev.data for ev in SSEParser().feed(out) if ev.data is not None]
        chunks = chunks_of(events)
        args = "".join(
            tc.function.arguments or ""
            for ch in chunks
            if ch.choices
            for tc in ch.choices[0].delta.tool_calls or []
            if tc.function is not None
        )
        assert json.loads(args) == TOOL_INPUT
        assert chunks[-2].choices[0].finish_reason == "tool_calls"
        assert chunks[-1].usage is not None and tr.usage is not None
        assert chunks[-1].usage.completion_tokens == tr.usage[1]

        # the recorded request is what the provider built, with its headers
        log = server.state.log[-1]
        sent = {k.decode().lower(): v.decode() for k, v in log.headers}
        assert sent["x-api-key"] == KEY and sent["anthropic-version"] == "2023-06-01"
        check_anthropic(json.loads(log.body))

        # an upstream error, mapped
        status, _, body, _ = await _post(session, server.url, p, dict(base, mock={"status": 529}))
        assert status == 529
        err = p.map_error(status, body)
        assert (err.status, err.type) == (503, "overloaded_error")
