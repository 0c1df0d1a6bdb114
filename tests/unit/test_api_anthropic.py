"""Anthropic Messages ingress: validation, conversion to OpenAI chat and back, streams, errors.

Produced OpenAI requests are checked against the openai SDK's request types, produced
Anthropic messages and stream events against the anthropic SDK's models, and whole streams
are read by the anthropic SDK's own stream accumulator.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2 as httpx
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import completion_create_params
from pydantic import TypeAdapter

from fastgw._core.sse import SSEEvent, SSEParser
from fastgw.api.anthropic import (
    OpenAIToAnthropicStream,
    error_body,
    error_event,
    estimate_input_tokens,
    from_openai_response,
    parse_messages,
    to_openai_chat,
)
from fastgw.api.errors import GatewayError

# --- helpers ----------------------------------------------------------------------------------

_OPENAI_REQ: dict[bool, TypeAdapter[Any]] = {
    False: TypeAdapter(completion_create_params.CompletionCreateParamsNonStreaming),
    True: TypeAdapter(completion_create_params.CompletionCreateParamsStreaming),
}
_EVENT = TypeAdapter[Any](RawMessageStreamEvent)


def _materialize(value: Any) -> Any:
    """pydantic validates ``Iterable`` fields lazily: walk them so every item is checked."""
    if isinstance(value, Iterator):  # pydantic's ValidatorIterator
        return [_materialize(v) for v in value]
    if isinstance(value, dict):
        return {k: _materialize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_materialize(v) for v in value]
    return value


def req(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-alias",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "hi"}],
    }
    body.update(fields)
    return body


def convert(body: dict[str, Any], model: str | None = "gpt-target") -> dict[str, Any]:
    """Anthropic request dict → OpenAI request dict, validated with the openai SDK types."""
    out: dict[str, Any] = json.loads(
        to_openai_chat(parse_messages(json.dumps(body).encode()), model)
    )
    _materialize(_OPENAI_REQ[bool(out.get("stream"))].validate_python(out))
    return out


def rejected(body: dict[str, Any] | bytes, convert_too: bool = False) -> GatewayError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(GatewayError) as info:
        parsed = parse_messages(raw)
        if convert_too:
            to_openai_chat(parsed)
    assert info.value.status == 400
    return info.value


def completion(message: dict[str, Any], finish: str | None = "stop", **extra: Any) -> bytes:
    body = {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-target",
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
        ],
        **extra,
    }
    return json.dumps(body).encode()


def answer(body: bytes) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(from_openai_response(body, "claude-alias"))
    Message.model_validate(out)
    return out


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> SSEEvent:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    body = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "choices": choices, **extra}
    data = json.dumps(body).encode()
    return SSEEvent(b"data: " + data + b"\n\n", data)


def done() -> SSEEvent:
    return SSEEvent(b"data: [DONE]\n\n", b"[DONE]")


def run_stream(events: list[SSEEvent], conv: OpenAIToAnthropicStream | None = None) -> bytes:
    conv = conv or OpenAIToAnthropicStream("claude-alias", "seed1")
    return b"".join(conv.feed(e) for e in events) + conv.finish()


def parse_sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Frame the produced bytes with the gateway's SSE parser; every event names its type."""
    parser = SSEParser()
    events = parser.feed(raw)
    assert parser.flush() is None and raw.endswith(b"\n\n")
    out = []
    for e in events:
        assert e.event is not None and e.data is not None
        data = json.loads(e.data)
        assert data["type"] == e.event.decode()
        if e.event != b"error":
            _EVENT.validate_python(data)
        out.append((e.event.decode(), data))
    return out


def sdk_client(sse: bytes) -> anthropic.Anthropic:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sse)

    return anthropic.Anthropic(
        api_key="k",
        base_url="http://gateway.test",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )


def sdk_final_message(sse: bytes) -> Message:
    client = sdk_client(sse)
    with client.messages.stream(
        model="claude-alias", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        return stream.get_final_message()


# --- parse_messages ---------------------------------------------------------------------------


def test_parse_keeps_raw_and_routing_facts() -> None:
    raw = json.dumps(req(stream=True)).encode()
    parsed = parse_messages(raw)
    assert parsed.raw is raw and parsed.model == "claude-alias" and parsed.stream
    assert not parse_messages(json.dumps(req()).encode()).stream


def test_parse_accepts_what_only_anthropic_targets_can_serve() -> None:
    """Pass-through bodies are not refused for features the conversion cannot express."""
    body = req(
        thinking={"type": "enabled", "budget_tokens": 1024},
        tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
        output_config={"effort": "high"},
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain"}},
                    {"type": "text", "text": "summarise", "cache_control": {"type": "ephemeral"}},
                ],
            }
        ],
    )
    assert parse_messages(json.dumps(body).encode()).model == "claude-alias"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (req(model=""), "model", None),
        (
            {"max_tokens": 1, "messages": [{"role": "user", "content": "x"}]},
            "model",
            "missing_required_parameter",
        ),
        (req(max_tokens=0), "max_tokens", None),
        (req(max_tokens="10"), "max_tokens", None),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}]},
            "max_tokens",
            "missing_required_parameter",
        ),
        (req(messages=[]), "messages", None),
        (req(messages=[{"role": "system", "content": "x"}]), "messages[0].role", None),
        (req(messages=[{"role": "user"}]), "messages[0].content", "missing_required_parameter"),
        (req(messages=[{"role": "user", "content": 5}]), "messages[0].content", None),
        (
            req(messages=[{"role": "user", "content": [{"text": "x"}]}]),
            "messages[0].content[0].type",
            "missing_required_parameter",
        ),
        (req(system=5), "system", None),
        (req(system=[{"type": "image", "source": {}}]), "system[0].type", None),
        (req(stream="yes"), "stream", None),
        (req(tools={"name": "x"}), "tools", None),
        (req(tool_choice={"type": "sometimes"}), "tool_choice.type", None),
        (req(tool_choice={"type": "tool"}), "tool_choice.name", "missing_required_parameter"),
        (req(stop_sequences="END"), "stop_sequences", None),
        (req(temperature="hot"), "temperature", None),
        (req(top_p=[1]), "top_p", None),
        (req(top_k=1.5), "top_k", None),
        (req(metadata={"user_id": 7}), "metadata.user_id", None),
        (req(thinking={"budget_tokens": 5}), "thinking.type", "missing_required_parameter"),
    ],
)
def test_parse_errors_name_the_field(body: dict[str, Any], param: str, code: str | None) -> None:
    err = rejected(body)
    assert err.param == param, err.message
    assert err.type == "invalid_request_error" and param in err.message
    if code:
        assert err.code == code


@pytest.mark.parametrize(("raw", "code"), [(b"", None), (b"{", "invalid_json"), (b"[]", None)])
def test_parse_rejects_non_objects(raw: bytes, code: str | None) -> None:
    err = rejected(raw)
    assert err.code == code and err.param is None


# --- to_openai_chat: messages -----------------------------------------------------------------


def test_string_system_and_multi_turn() -> None:
    out = convert(
        req(
            system="Be brief.",
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "text", "text": "again"}]},
            ],
        )
    )
    assert out["model"] == "gpt-target"
    assert out["max_tokens"] == 256
    assert out["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},  # a single text block becomes a string
    ]
    assert "stream" not in out and "tools" not in out


def test_model_kept_when_not_replaced() -> None:
    assert convert(req(), model=None)["model"] == "claude-alias"


def test_system_blocks_and_several_text_blocks_become_parts() -> None:
    out = convert(
        req(
            system=[
                {"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Two."},
            ],
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
                {"role": "assistant", "content": [{"type": "text", "text": "c"}]},
            ],
        )
    )
    assert out["messages"] == [
        {
            "role": "system",
            "content": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}],
        },
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "c"},
    ]
    single = convert(req(system=[{"type": "text", "text": "Only."}]))
    assert single["messages"][0] == {"role": "system", "content": "Only."}


def test_images_base64_and_url() -> None:
    out = convert(
        req(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/png",
                                "data": "iVBORw0K",
                            },
                        },
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://x.test/cat.jpg"},
                        },
                        {"type": "text", "text": "What is this?"},
                    ],
                }
            ]
        )
    )
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}},
                {"type": "text", "text": "What is this?"},
            ],
        }
    ]


def test_tool_use_and_tool_result_turns() -> None:
    out = convert(
        req(
            messages=[
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "weather",
                            "input": {"city": "Paris"},
                        },
                        {
                            "type": "tool_use",
                            "id": "toolu_2",
                            "name": "weather",
                            "input": {"city": "Rome", "n": [1, 2]},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_2",
                            "is_error": True,
                            "content": [
                                {"type": "text", "text": "timeout"},
                                {"type": "text", "text": "retry later"},
                            ],
                        },
                        {"type": "text", "text": "Summarise."},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "toolu_3", "name": "noop", "input": {}}],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_3"}]},
            ]
        )
    )
    msgs = out["messages"]
    assert msgs[1]["role"] == "assistant" and msgs[1]["content"] == "Checking."
    calls = msgs[1]["tool_calls"]
    assert [(c["id"], c["type"], c["function"]["name"]) for c in calls] == [
        ("toolu_1", "function", "weather"),
        ("toolu_2", "function", "weather"),
    ]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [
        {"city": "Paris"},
        {"city": "Rome", "n": [1, 2]},
    ]
    # tool results: their own messages, before the rest of the user turn
    assert msgs[2:5] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: timeout\nretry later"},
        {"role": "user", "content": "Summarise."},
    ]
    assert msgs[5] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "toolu_3", "type": "function", "function": {"name": "noop", "arguments": "{}"}}
        ],
    }
    assert msgs[6] == {"role": "tool", "tool_call_id": "toolu_3", "content": ""}
    assert len(msgs) == 7


def test_tools_and_tool_choice() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    out = convert(
        req(
            tools=[
                {
                    "name": "weather",
                    "description": "Get weather",
                    "input_schema": schema,
                    "cache_control": {"type": "ephemeral"},
                },
                {
                    "type": "custom",
                    "name": "noop",
                    "input_schema": {"type": "object"},
                    "strict": True,
                },
            ],
            tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        )
    )
    assert out["tools"] == [
        {
            "type": "function",
            "function": {"name": "weather", "description": "Get weather", "parameters": schema},
        },
        {
            "type": "function",
            "function": {"name": "noop", "parameters": {"type": "object"}, "strict": True},
        },
    ]
    assert out["tool_choice"] == "auto" and out["parallel_tool_calls"] is False


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        (
            {"type": "tool", "name": "weather"},
            {"type": "function", "function": {"name": "weather"}},
        ),
    ],
)
def test_tool_choice_variants(choice: dict[str, Any], expected: Any) -> None:
    tools = [{"name": "weather", "input_schema": {"type": "object"}}]
    out = convert(req(tools=tools, tool_choice=choice))
    assert out["tool_choice"] == expected
    assert "parallel_tool_calls" not in out


def test_sampling_stop_user_and_stream() -> None:
    out = convert(
        req(
            temperature=0.2,
            top_p=0.9,
            top_k=40,
            stop_sequences=["END", "STOP"],
            metadata={"user_id": "u-42"},
            stream=True,
            thinking={"type": "disabled"},
            service_tier="auto",
            cache_control={"type": "ephemeral"},
        )
    )
    assert out["temperature"] == 0.2 and out["top_p"] == 0.9
    assert out["stop"] == ["END", "STOP"] and out["user"] == "u-42"
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    # dropped by rule: no OpenAI equivalent (top_k), no effect (cache_control, service_tier)
    for gone in (
        "top_k",
        "thinking",
        "service_tier",
        "cache_control",
        "metadata",
        "stop_sequences",
    ):
        assert gone not in out


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (
            req(thinking={"type": "enabled", "budget_tokens": 2048}),
            "thinking",
            "unsupported_parameter",
        ),
        (req(thinking={"type": "adaptive"}), "thinking", "unsupported_parameter"),
        (req(output_config={"effort": "high"}), "output_config", "unsupported_parameter"),
        (req(container="c1"), "container", "unsupported_parameter"),
        (
            req(tools=[{"type": "web_search_20250305", "name": "web_search"}]),
            "tools[0].type",
            "unsupported_parameter",
        ),
        (
            req(tools=[{"name": "t", "input_schema": {"type": "object"}, "input_examples": [{}]}]),
            "tools[0].input_examples",
            "unsupported_parameter",
        ),
        (
            req(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "document",
                                "source": {
                                    "type": "base64",
                                    "media_type": "application/pdf",
                                    "data": "JVBER",
                                },
                            }
                        ],
                    }
                ]
            ),
            "messages[0].content[0]",
            "unsupported_content",
        ),
        (
            req(
                messages=[
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "xx"}]},
                ]
            ),
            "messages[1].content[0]",
            "unsupported_content",
        ),
        (
            req(
                messages=[
                    {"role": "user", "content": "q"},
                    {
                        "role": "assistant",
                        "content": [{"type": "thinking", "thinking": "hm", "signature": "s"}],
                    },
                ]
            ),
            "messages[1].content[0]",
            "unsupported_content",
        ),
        (
            req(
                messages=[
                    {"role": "user", "content": "q"},
                    {
                        "role": "assistant",
                        "content": [
                            {
                                "type": "server_tool_use",
                                "id": "s",
                                "name": "web_search",
                                "input": {},
                            }
                        ],
                    },
                ]
            ),
            "messages[1].content[0]",
            "unsupported_content",
        ),
        (
            req(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "web_search_tool_result", "tool_use_id": "s", "content": []}
                        ],
                    }
                ]
            ),
            "messages[0].content[0]",
            "unsupported_content",
        ),
        (
            req(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [
                                    {"type": "image", "source": {"type": "url", "url": "https://x"}}
                                ],
                            }
                        ],
                    }
                ]
            ),
            "messages[0].content[0].content[0]",
            "unsupported_content",
        ),
        (
            req(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}],
                    }
                ]
            ),
            "messages[0].content[0]",
            "unsupported_content",
        ),
        (
            req(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                    }
                ]
            ),
            "messages[0].content[0].source.type",
            None,
        ),
        (
            req(messages=[{"role": "user", "content": [{"type": "text"}]}]),
            "messages[0].content[0].text",
            "missing_required_parameter",
        ),
        (
            req(
                messages=[
                    {"role": "user", "content": "q"},
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t", "name": "n", "input": [1]}],
                    },
                ]
            ),
            "messages[1].content[0].input",
            None,
        ),
        (
            req(tools=[{"name": "t", "input_schema": "object"}]),
            "tools[0].input_schema",
            None,
        ),
    ],
)
def test_what_cannot_be_converted_is_a_400(
    body: dict[str, Any], param: str, code: str | None
) -> None:
    parse_messages(json.dumps(body).encode())  # valid for a pass-through target
    err = rejected(body, convert_too=True)
    assert err.param == param, err.message
    assert err.code == code, err.message


# --- from_openai_response ---------------------------------------------------------------------


def test_response_text_and_usage_with_cached_tokens() -> None:
    usage = {
        "prompt_tokens": 120,
        "completion_tokens": 7,
        "total_tokens": 127,
        "prompt_tokens_details": {"cached_tokens": 100},
    }
    out = answer(completion({"content": "Hello!"}, usage=usage))
    assert out == {
        "id": "msg_chatcmpl-abc123",
        "type": "message",
        "role": "assistant",
        "model": "claude-alias",
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 20,
            "output_tokens": 7,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 100,
        },
    }


def test_response_tool_calls_after_text() -> None:
    message = {
        "content": "Let me check.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
            },
            {"id": "call_2", "type": "function", "function": {"name": "noop", "arguments": ""}},
        ],
    }
    out = answer(completion(message, "tool_calls"))
    assert out["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "noop", "input": {}},
    ]
    assert out["stop_reason"] == "tool_use"
    assert out["usage"]["input_tokens"] == 0  # no usage reported: zeros


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
        ("something_new", "end_turn"),
    ],
)
def test_response_finish_reasons(finish: str | None, reason: str) -> None:
    assert answer(completion({"content": "x"}, finish))["stop_reason"] == reason


def test_response_stop_with_tool_calls_is_tool_use_and_refusal_is_text() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assert answer(completion({"content": None, "tool_calls": [call]}))["stop_reason"] == "tool_use"
    refused = answer(completion({"content": None, "refusal": "I can't help with that."}))
    assert refused["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert refused["stop_reason"] == "refusal"
    empty = answer(completion({"content": ""}))
    assert empty["content"] == [] and empty["stop_reason"] == "end_turn"


@pytest.mark.parametrize("arguments", ['{"city": "Par', "[1, 2]", '"text"'])
def test_response_unusable_tool_arguments_are_a_502(arguments: str) -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}
    with pytest.raises(GatewayError) as info:
        from_openai_response(completion({"content": None, "tool_calls": [call]}, "tool_calls"), "m")
    assert info.value.status == 502 and "'f'" in info.value.message


def test_response_not_a_completion_is_a_502() -> None:
    for body in (b"<html>", b'{"choices": 5}'):
        with pytest.raises(GatewayError) as info:
            from_openai_response(body, "m")
        assert info.value.status == 502


# --- stream -----------------------------------------------------------------------------------


def tool_delta(
    index: int, *, id: str | None = None, name: str | None = None, args: str | None = None
) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {}}
    if id is not None:
        call["id"] = id
        call["type"] = "function"
    if name is not None:
        call["function"]["name"] = name
    if args is not None:
        call["function"]["arguments"] = args
    return {"tool_calls": [call]}


def full_stream() -> list[SSEEvent]:
    return [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Checking "}),
        chunk({"content": "both."}),
        chunk(tool_delta(0, id="call_a", name="weather", args="")),
        chunk(tool_delta(0, args='{"ci')),
        chunk(tool_delta(0, args='ty": "Par')),
        chunk(tool_delta(0, args='is"}')),
        chunk(tool_delta(1, id="call_b", name="time", args='{"tz":')),
        chunk(tool_delta(1, args=' "CET"}')),
        chunk({}, "tool_calls"),
        chunk(
            None,
            usage={
                "prompt_tokens": 50,
                "completion_tokens": 30,
                "total_tokens": 80,
                "prompt_tokens_details": {"cached_tokens": 20},
            },
        ),
        done(),
    ]


def test_stream_text_then_two_tool_calls() -> None:
    conv = OpenAIToAnthropicStream("claude-alias", "seed1")
    raw = run_stream(full_stream(), conv)
    events = parse_sse(raw)
    assert [t for t, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["id"] == "msg_seed1" and start["model"] == "claude-alias"
    assert start["content"] == [] and start["usage"]["input_tokens"] == 0
    assert [e["index"] for t, e in events if t.startswith("content_block")] == [0] * 4 + [1] * 5 + [
        2
    ] * 4
    assert events[5][1]["content_block"] == {
        "type": "tool_use",
        "id": "call_a",
        "name": "weather",
        "input": {},
    }
    assert events[14][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {
            "input_tokens": 30,
            "output_tokens": 30,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 20,
        },
    }
    assert conv.usage == (50, 30, 80, 20)

    # The anthropic SDK's own stream accumulator reads the same bytes into one message.
    final = sdk_final_message(raw)
    assert final.id == "msg_seed1" and final.stop_reason == "tool_use"
    dumped = [b.model_dump(exclude_none=True) for b in final.content]
    assert dumped[0] == {"type": "text", "text": "Checking both."}
    assert dumped[1]["id"] == "call_a" and dumped[1]["input"] == {"city": "Paris"}
    assert dumped[2]["name"] == "time" and dumped[2]["input"] == {"tz": "CET"}
    assert final.usage.output_tokens == 30 and final.usage.cache_read_input_tokens == 20


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_stream_finish_reasons(finish: str | None, reason: str) -> None:
    events = [chunk({"content": "hi"}, finish)]
    parsed = parse_sse(run_stream(events))
    assert parsed[-2][1]["delta"]["stop_reason"] == reason
    assert parsed[-3][0] == "content_block_stop"  # the text block is closed before the end


def test_empty_stream_is_still_a_valid_message() -> None:
    for events in ([], [done()], [SSEEvent(b": keep-alive\n\n")]):
        raw = run_stream(events)
        assert [t for t, _ in parse_sse(raw)] == ["message_start", "message_delta", "message_stop"]
        final = sdk_final_message(raw)
        assert final.content == [] and final.stop_reason == "end_turn"


def test_stream_error_event_ends_the_stream() -> None:
    conv = OpenAIToAnthropicStream("claude-alias", "s")
    err_data = (
        b'{"error": {"message": "Upstream timed out.", "type": "timeout_error",'
        b' "code": "upstream_timeout"}}'
    )
    raw = (
        conv.feed(chunk({"content": "partial"}))
        + conv.feed(SSEEvent(b"data: " + err_data + b"\n\n", err_data))
        + conv.feed(chunk({"content": "ignored"}))
        + conv.finish()
    )
    events = parse_sse(raw)
    assert [t for t, _ in events][-1] == "error"
    assert events[-1][1] == {
        "type": "error",
        "error": {"type": "timeout_error", "message": "Upstream timed out."},
    }
    with pytest.raises(anthropic.APIStatusError, match="Upstream timed out"):
        sdk_final_message(raw)


def test_gateway_error_event_converts_too() -> None:
    conv = OpenAIToAnthropicStream("m", "s")
    gw = GatewayError(502, "Upstream connection lost.", "upstream_error", "upstream_disconnect")
    ev = gw.sse_event()
    out = conv.feed(SSEEvent(ev, ev[6:-2]))
    assert parse_sse(out)[-1][1]["error"] == {
        "type": "api_error",
        "message": "Upstream connection lost.",
    }


def test_stream_bad_tool_arguments_and_bad_events_are_errors() -> None:
    bad_args = [chunk(tool_delta(0, id="c", name="f", args='{"a": ')), chunk({}, "tool_calls")]
    events = parse_sse(run_stream(bad_args))
    assert events[-1][0] == "error" and "'f'" in events[-1][1]["error"]["message"]

    garbage = SSEEvent(b"data: {nope\n\n", b"{nope")
    events = parse_sse(run_stream([garbage]))
    assert events[-1][1]["error"]["type"] == "api_error"


def test_stream_interleaved_tool_arguments_are_refused() -> None:
    events = [
        chunk(tool_delta(0, id="a", name="f", args="{")),
        chunk(tool_delta(1, id="b", name="g", args="{}")),
        chunk(tool_delta(0, args="}")),
    ]
    assert parse_sse(run_stream(events))[-1][0] == "error"


def test_stream_tool_calls_without_index_but_new_ids_are_separate_blocks() -> None:
    events = [
        chunk(tool_delta(0, id="a", name="f", args="{}")),
        chunk(tool_delta(0, id="b", name="g", args='{"x": 1}')),
        chunk({}, "stop"),  # some servers say "stop" after tool calls
    ]
    final = sdk_final_message(run_stream(events))
    assert [(b.type, getattr(b, "id", None)) for b in final.content] == [
        ("tool_use", "a"),
        ("tool_use", "b"),
    ]
    assert final.stop_reason == "tool_use"


@given(
    args=st.dictionaries(
        st.text(max_size=8),
        st.one_of(st.integers(), st.text(max_size=12), st.booleans()),
        max_size=5,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_stream_tool_arguments_survive_any_fragmentation(
    args: dict[str, Any], cuts: list[int]
) -> None:
    text = json.dumps(args)
    points = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    pieces = [text[a:b] for a, b in itertools.pairwise(points)]
    events = [chunk(tool_delta(0, id="c", name="f"))] + [
        chunk(tool_delta(0, args=p)) for p in pieces
    ]
    parsed = parse_sse(run_stream([*events, chunk({}, "tool_calls")]))
    partial = "".join(e["delta"]["partial_json"] for t, e in parsed if t == "content_block_delta")
    assert json.loads(partial) == args


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_body_and_event(status: int, kind: str) -> None:
    err = GatewayError(status, 'Something "quoted" failed.')
    body = json.loads(error_body(err))
    assert body == {
        "type": "error",
        "error": {"type": kind, "message": 'Something "quoted" failed.'},
    }
    event = error_event(err)
    assert event == b"event: error\ndata: " + error_body(err) + b"\n\n"


def test_error_body_is_what_the_sdk_raises_on() -> None:
    err = GatewayError(429, "Rate limit reached for key team-a.", "rate_limit_error")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, content=error_body(err), headers={"content-type": "application/json"}
        )

    client = anthropic.Anthropic(
        api_key="k",
        base_url="http://gateway.test",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}])
    assert info.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": err.message},
    }


# --- count_tokens -----------------------------------------------------------------------------


def test_estimate_input_tokens_counts_every_part() -> None:
    def est(**fields: Any) -> int:
        return estimate_input_tokens(parse_messages(json.dumps(req(**fields)).encode()))

    base = est(messages=[{"role": "user", "content": "x" * 400}])
    assert base == 100 + 4
    assert est(system="y" * 400, messages=[{"role": "user", "content": "x" * 400}]) == base + 100
    two = est(
        messages=[
            {"role": "user", "content": "x" * 400},
            {"role": "assistant", "content": "z" * 40},
        ]
    )
    assert two == base + 10 + 4
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "A" * 100000},
    }
    with_image = est(
        messages=[{"role": "user", "content": [image, {"type": "text", "text": "x" * 400}]}]
    )
    assert with_image == base + 1600  # a flat cost per image, its base64 is not text
    tool = {"name": "weather", "description": "d" * 200, "input_schema": {"type": "object"}}
    assert est(tools=[tool], messages=[{"role": "user", "content": "x" * 400}]) > base + 50
