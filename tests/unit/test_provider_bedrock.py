"""The Bedrock provider: OpenAI chat completions ⇄ Converse / ConverseStream, SigV4-signed.
What clients get is checked with the openai SDK's types; streams are built with the
event-stream encoder and fed split at random offsets; the mock upstream is exercised in
process and over a real socket."""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
import yarl
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from fastgw._core.eventstream import EventStreamDecoder, encode_message
from fastgw.api.errors import GatewayError
from fastgw.api.openai import Endpoint, ParsedRequest, parse_request
from fastgw.config import ConfigError
from fastgw.config.schema import ProviderConfig
from fastgw.mock.bedrock import TOOL_INPUT
from fastgw.mock.behaviour import MockState, Plan, plan_request
from fastgw.mock.server import start_server
from fastgw.providers import sigv4
from fastgw.providers.base import ByteStreamProvider
from fastgw.providers.bedrock import BedrockProvider, BedrockStream
from fastgw.providers.registry import build_provider

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
ENCODED = "anthropic.claude-3-haiku-20240307-v1%3A0"
CREDS: dict[str, Any] = {
    "aws_region": "us-west-2",
    "aws_access_key_id": "AKIDEXAMPLE",
    "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
}
USER = [{"role": "user", "content": "hi"}]
_AWS_ENV = (
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)


@pytest.fixture(autouse=True)
def _no_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _AWS_ENV:
        monkeypatch.delenv(name, raising=False)


def provider(**kw: Any) -> BedrockProvider:
    return BedrockProvider("br", ProviderConfig(kind="bedrock", **{**CREDS, **kw}))


def parsed(body: dict[str, Any], endpoint: Endpoint = Endpoint.CHAT) -> ParsedRequest:
    return parse_request(endpoint, json.dumps(body).encode())


def build(body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": "gpt-x"}
    base.update(body)
    ureq = provider(**kw).build_request(parsed(base), MODEL, "req-1")
    out: dict[str, Any] = json.loads(ureq.body)
    return out


def reject(body: dict[str, Any]) -> GatewayError:
    base: dict[str, Any] = {"model": "gpt-x", "messages": USER}
    base.update(body)
    with pytest.raises(GatewayError) as exc:
        provider().build_request(parsed(base), MODEL, "req-1")
    assert exc.value.status == 400
    return exc.value


# -- configuration ----------------------------------------------------------------------------


def test_identity_and_headers() -> None:
    p = provider(headers={"X-Extra": "1"})
    assert (p.kind, p.openai_shaped, p.name, p.region) == ("bedrock", False, "br", "us-west-2")
    assert p.base_url == "https://bedrock-runtime.us-west-2.amazonaws.com"
    assert p.headers == {"content-type": "application/json", "x-extra": "1"}
    assert p.stream_content_type == b"application/vnd.amazon.eventstream"
    assert isinstance(p, ByteStreamProvider)
    with pytest.raises(NotImplementedError):
        p.new_stream(parsed({"model": "m", "messages": USER, "stream": True}), MODEL)


def test_registry_builds_it() -> None:
    p = build_provider("b", ProviderConfig(kind="bedrock", **CREDS))
    assert isinstance(p, BedrockProvider)


def test_region_and_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "envtoken")
    p = BedrockProvider("b", ProviderConfig(kind="bedrock"))
    assert p.base_url == "https://bedrock-runtime.eu-west-1.amazonaws.com"
    h = p.sign("/model/m/converse", b"{}")
    assert h["x-amz-security-token"] == "envtoken"
    assert h["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKENV/")
    assert "/eu-west-1/bedrock/aws4_request" in h["authorization"]
    monkeypatch.setenv("AWS_REGION", "ap-south-1")  # AWS_REGION wins over the default
    assert BedrockProvider("b", ProviderConfig(kind="bedrock")).region == "ap-south-1"
    # keys in the configuration: the environment's session token is not theirs
    p = provider()
    assert "x-amz-security-token" not in p.sign("/model/m/converse", b"{}")
    assert p.region == "us-west-2"


def test_missing_region_and_credentials_are_config_errors() -> None:
    with pytest.raises(ConfigError) as exc:
        BedrockProvider("b", ProviderConfig(kind="bedrock"))
    assert [e.split(":")[0] for e in exc.value.errors] == [
        "providers.b.aws_region",
        "providers.b.aws_access_key_id",
        "providers.b.aws_secret_access_key",
    ]
    with pytest.raises(ConfigError) as exc:
        BedrockProvider("b", ProviderConfig(kind="bedrock", aws_region="r", aws_access_key_id="AK"))
    assert exc.value.errors[0].startswith("providers.b.aws_secret_access_key: required")


# -- the upstream request: path, signature ----------------------------------------------------


def _check_signature(p: BedrockProvider, full_path: str, host: str, u: Any) -> None:
    """The authorization header is what SigV4 gives for the request as sent."""
    date = datetime.strptime(u.headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    expected = sigv4.sign(
        "POST",
        full_path,
        "",
        {"host": host, "content-type": "application/json"},
        u.body,
        service="bedrock",
        region=p.region,
        access_key=CREDS["aws_access_key_id"],
        secret_key=CREDS["aws_secret_access_key"],
        session_token=p.sign("/", b"").get("x-amz-security-token"),
        now=date,
    )
    assert u.headers["authorization"] == expected["authorization"]


def test_build_request_shape() -> None:
    p = provider()
    u = p.build_request(parsed({"model": "m", "messages": USER}), MODEL, "rid-1")
    assert u.path == f"/model/{ENCODED}/converse"
    assert u.inject_usage is False
    assert set(u.headers) == {"x-amz-date", "authorization", "x-request-id"}
    assert u.headers["x-request-id"] == "rid-1"
    auth = u.headers["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-west-2/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date," in auth
    assert json.loads(u.body) == {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}
    _check_signature(p, u.path, "bedrock-runtime.us-west-2.amazonaws.com", u)
    s = p.build_request(parsed({"model": "m", "messages": USER, "stream": True}), MODEL, "r")
    assert s.path == f"/model/{ENCODED}/converse-stream"
    assert s.headers["accept"] == "application/vnd.amazon.eventstream"
    assert "stream" not in json.loads(s.body)


def test_signing_uses_base_path_port_and_session_token() -> None:
    p = provider(base_url="http://127.0.0.1:8123/_demo/", aws_session_token="tok")
    assert p.base_url == "http://127.0.0.1:8123/_demo"
    u = p.build_request(parsed({"model": "m", "messages": USER}), "arn:aws:x/y", "r")
    assert u.path == "/model/arn%3Aaws%3Ax%2Fy/converse"
    assert u.headers["x-amz-security-token"] == "tok"
    assert (
        "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,"
        in (u.headers["authorization"])
    )
    _check_signature(p, "/_demo" + u.path, "127.0.0.1:8123", u)
    default_port = provider(base_url="https://example.com:443")
    assert default_port.sign("/x", b"") == sigv4.sign(
        "POST",
        "/x",
        "",
        {"host": "example.com", "content-type": "application/json"},
        b"",
        service="bedrock",
        region="us-west-2",
        access_key=CREDS["aws_access_key_id"],
        secret_key=CREDS["aws_secret_access_key"],
        now=datetime.strptime(default_port.sign("/x", b"")["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=UTC
        ),
    )


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
    assert (exc.value.status, exc.value.code) == (400, "unsupported_endpoint")


# -- request translation ----------------------------------------------------------------------


def test_system_and_developer_hoisted_in_order() -> None:
    out = build(
        {
            "messages": [
                {"role": "system", "content": "one"},
                {"role": "user", "content": "hi"},
                {"role": "developer", "content": [{"type": "text", "text": "two"}]},
                {"role": "system", "content": ""},
            ]
        }
    )
    assert out["system"] == [{"text": "one"}, {"text": "two"}]
    assert out["messages"] == [{"role": "user", "content": [{"text": "hi"}]}]


def test_system_with_image_rejected() -> None:
    e = reject(
        {
            "messages": [
                {
                    "role": "system",
                    "content": [{"type": "image_url", "image_url": {"url": "data:x"}}],
                },
                *USER,
            ]
        }
    )
    assert (e.code, e.param) == ("unsupported_content", "messages[0].content[0]")


def test_consecutive_turns_merged_and_empty_text_left_out() -> None:
    out = build(
        {
            "messages": [
                {"role": "user", "content": "a"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "b"}, {"type": "text", "text": ""}],
                },
                {"role": "assistant", "content": "c"},
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
                {"role": "user", "content": "d"},
            ]
        }
    )
    assert out["messages"] == [
        {"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
        {"role": "assistant", "content": [{"text": "c"}, {"text": "no"}]},
        {"role": "user", "content": [{"text": "d"}]},
    ]


@pytest.mark.parametrize(
    ("media", "fmt"),
    [("image/png", "png"), ("image/jpeg", "jpeg"), ("image/gif", "gif"), ("image/webp", "webp")],
)
def test_data_url_images(media: str, fmt: str) -> None:
    url = f"data:{media};base64,QUJD"
    out = build(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "see"},
                        {"type": "image_url", "image_url": {"url": url, "detail": "high"}},
                    ],
                }
            ]
        }
    )
    assert out["messages"][0]["content"] == [
        {"text": "see"},
        {"image": {"format": fmt, "source": {"bytes": "QUJD"}}},
    ]


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://example.com/cat.png", "unsupported_image_url"),
        ("http://example.com/cat.png", "unsupported_image_url"),
        ("data:image/png,QUJD", "invalid_image_url"),
        ("data:image/tiff;base64,QUJD", "unsupported_content"),
        ("ftp://x/y.png", "invalid_image_url"),
    ],
)
def test_bad_images_rejected(url: str, code: str) -> None:
    e = reject(
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
            ]
        }
    )
    assert (e.code, e.param) == (code, "messages[0].content[0].image_url.url")


@pytest.mark.parametrize("kind", ["input_audio", "file", "refusal"])
def test_unsupported_user_parts_rejected(kind: str) -> None:
    e = reject({"messages": [{"role": "user", "content": [{"type": kind}]}]})
    assert (e.code, e.param) == ("unsupported_content", "messages[0].content[0]")


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
    {"type": "function", "function": {"name": "noop"}},
]

CONVERSATION = [
    {"role": "user", "content": "weather?"},
    {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            },
            {"id": "call_2", "type": "function", "function": {"name": "noop", "arguments": ""}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "ok"}]},
    {"role": "user", "content": "thanks"},
]


def test_tools_calls_and_results() -> None:
    out = build({"messages": CONVERSATION, "tools": TOOLS})
    assert out["messages"] == [
        {"role": "user", "content": [{"text": "weather?"}]},
        {
            "role": "assistant",
            "content": [
                {"text": "Let me check."},
                {
                    "toolUse": {
                        "toolUseId": "call_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                },
                {"toolUse": {"toolUseId": "call_2", "name": "noop", "input": {}}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "call_1", "content": [{"text": "sunny"}]}},
                {"toolResult": {"toolUseId": "call_2", "content": [{"text": "ok"}]}},
                {"text": "thanks"},
            ],
        },
    ]
    assert out["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "Weather of a city",
                    "inputSchema": {"json": TOOLS[0]["function"]["parameters"]},  # type: ignore[index]
                }
            },
            {
                "toolSpec": {
                    "name": "noop",
                    "inputSchema": {"json": {"type": "object", "properties": {}}},
                }
            },
        ]
    }


@pytest.mark.parametrize("args", ["[1]", "not json", '"s"'])
def test_tool_call_arguments_must_be_an_object(args: str) -> None:
    msgs = [
        *USER,
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": args}}
            ],
        },
    ]
    e = reject({"messages": msgs})
    assert (e.code, e.param) == (
        "invalid_tool_arguments",
        "messages[1].tool_calls[0].function.arguments",
    )


def test_tool_message_needs_its_call_id() -> None:
    e = reject({"messages": [*USER, {"role": "tool", "content": "x"}]})
    assert (e.code, e.param) == ("missing_required_parameter", "messages[1].tool_call_id")


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        ({"type": "function", "function": {"name": "noop"}}, {"tool": {"name": "noop"}}),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    out = build({"messages": USER, "tools": TOOLS, "tool_choice": choice})
    assert out["toolConfig"]["toolChoice"] == expected


def test_tool_choice_none_sends_no_tools() -> None:
    out = build({"messages": USER, "tools": TOOLS, "tool_choice": "none"})
    assert "toolConfig" not in out
    assert "toolConfig" not in build({"messages": USER, "tool_choice": "none"})
    e = reject({"messages": CONVERSATION, "tools": TOOLS, "tool_choice": "none"})
    assert (e.code, e.param) == ("unsupported_parameter", "tool_choice")


def test_bad_tool_choices() -> None:
    assert reject({"tools": TOOLS, "tool_choice": "sometimes"}).code == "invalid_value"
    assert reject({"tools": TOOLS, "tool_choice": {"type": "custom"}}).code == (
        "unsupported_parameter"
    )
    assert reject({"tool_choice": "required"}).param == "tool_choice"


def test_strict_and_custom_tools_rejected() -> None:
    strict = [{"type": "function", "function": {"name": "f", "strict": True}}]
    assert reject({"tools": strict}).param == "tools[0].function.strict"
    assert reject({"tools": [{"type": "custom", "custom": {}}]}).param == "tools[0]"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, None),
        ({"max_tokens": 10}, {"maxTokens": 10}),
        ({"max_tokens": 10, "max_completion_tokens": 20}, {"maxTokens": 20}),
        (
            {"temperature": 0.5, "top_p": 0.9, "stop": "END"},
            {"temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]},
        ),
        ({"stop": ["a", "b"], "temperature": 1}, {"temperature": 1, "stopSequences": ["a", "b"]}),
        ({"stop": []}, None),
    ],
)
def test_inference_config(fields: dict[str, Any], expected: dict[str, Any] | None) -> None:
    out = build({"messages": USER, **fields})
    assert out.get("inferenceConfig") == expected


@pytest.mark.parametrize("t", [1.5, -0.1, 2])
def test_temperature_out_of_converse_range(t: float) -> None:
    e = reject({"temperature": t})
    assert (e.code, e.param) == ("unsupported_value", "temperature")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("presence_penalty", 0.5),
        ("frequency_penalty", -1),
        ("logit_bias", {"50256": -100}),
        ("response_format", {"type": "json_object"}),
        ("response_format", {"type": "json_schema"}),
        ("audio", {"voice": "alloy"}),
        ("modalities", ["text", "audio"]),
        ("prediction", {"type": "content", "content": "x"}),
        ("reasoning_effort", "low"),
        ("verbosity", "low"),
        ("web_search_options", {}),
        ("functions", [{"name": "f"}]),
        ("function_call", "auto"),
        ("top_k", 5),
        ("guardrailConfig", {}),
    ],
)
def test_rejected_parameters(field: str, value: Any) -> None:
    e = reject({field: value})
    assert (e.code, e.param) == ("unsupported_parameter", field)


def test_parallel_tool_calls_false_rejected_only_with_tools() -> None:
    e = reject({"tools": TOOLS, "parallel_tool_calls": False})
    assert (e.code, e.param) == ("unsupported_parameter", "parallel_tool_calls")
    assert "toolConfig" not in build({"messages": USER, "parallel_tool_calls": False})
    assert "toolConfig" in build({"messages": USER, "tools": TOOLS, "parallel_tool_calls": True})


def test_dropped_parameters() -> None:
    out = build(
        {
            "messages": USER,
            "stream_options": {"include_usage": True},
            "store": True,
            "metadata": {"a": "b"},
            "service_tier": "auto",
            "prompt_cache_key": "k",
            "prompt_cache_retention": "24h",
            "seed": 7,
            "user": "u-1",
            "safety_identifier": "s",
            "n": 1,
            "logprobs": False,
            "top_logprobs": 0,
            "presence_penalty": 0,
            "frequency_penalty": 0,
            "logit_bias": {},
            "response_format": {"type": "text"},
            "modalities": ["text"],
            "parallel_tool_calls": True,
        }
    )
    assert out == {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}


def test_mock_controls_forwarded() -> None:
    assert build({"messages": USER, "mock": {"status": 429}})["mock"] == {"status": 429}


def test_unknown_role_and_legacy_message_fields() -> None:
    assert reject({"messages": [{"role": "function", "content": "x"}]}).param == "messages[0].role"
    e = reject({"messages": [*USER, {"role": "assistant", "function_call": {"name": "f"}}]})
    assert e.param == "messages[1].function_call"
    e = reject({"messages": [*USER, {"role": "assistant", "audio": {"id": "a"}}]})
    assert e.param == "messages[1].audio"


def test_bad_field_types() -> None:
    e = reject({"temperature": "hot"})
    assert e.param == "temperature"
    e = reject({"messages": [{"role": "user", "content": 5}]})
    assert e.param == "messages[0].content"


# -- responses --------------------------------------------------------------------------------


def respond(answer: dict[str, Any], model: str = "gpt-x") -> ChatCompletion:
    req = parsed({"model": model, "messages": USER})
    return ChatCompletion.model_validate_json(
        provider().transform_response(req, json.dumps(answer).encode())
    )


def test_text_response() -> None:
    c = respond(
        {
            "output": {
                "message": {"role": "assistant", "content": [{"text": "Hello"}, {"text": " there"}]}
            },
            "stopReason": "end_turn",
            "usage": {
                "inputTokens": 10,
                "outputTokens": 5,
                "totalTokens": 25,
                "cacheReadInputTokens": 7,
                "cacheWriteInputTokens": 3,
            },
            "metrics": {"latencyMs": 100},
        }
    )
    assert c.object == "chat.completion" and c.model == "gpt-x"
    assert c.id.startswith("chatcmpl-bedrock-")
    msg = c.choices[0].message
    assert (msg.role, msg.content, msg.tool_calls) == ("assistant", "Hello there", None)
    assert c.choices[0].finish_reason == "stop"
    assert c.usage is not None
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) == (20, 5, 25)
    assert c.usage.prompt_tokens_details is not None
    assert c.usage.prompt_tokens_details.cached_tokens == 7


def test_tool_use_response_skips_reasoning() -> None:
    c = respond(
        {
            "output": {
                "message": {
                    "role": "assistant",
                    "content": [
                        {"reasoningContent": {"reasoningText": {"text": "hmm"}}},
                        {
                            "toolUse": {
                                "toolUseId": "t1",
                                "name": "get_weather",
                                "input": {"city": "Paris"},
                            }
                        },
                    ],
                }
            },
            "stopReason": "tool_use",
            "usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3},
        }
    )
    msg = c.choices[0].message
    assert msg.content is None and msg.tool_calls is not None
    call = msg.tool_calls[0]
    assert call.id == "t1" and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert c.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("content_filtered", "content_filter"),
        ("guardrail_intervened", "content_filter"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons(stop: str, finish: str) -> None:
    c = respond(
        {
            "output": {"message": {"role": "assistant", "content": [{"text": "x"}]}},
            "stopReason": stop,
        }
    )
    assert c.choices[0].finish_reason == finish
    assert c.usage is None


def test_empty_content_response() -> None:
    c = respond(
        {"output": {"message": {"role": "assistant", "content": []}}, "stopReason": "end_turn"}
    )
    assert c.choices[0].message.content == ""


@pytest.mark.parametrize("body", [b"not json", b"[]", b"{}", b'{"output": {}}'])
def test_invalid_response_body(body: bytes) -> None:
    with pytest.raises(GatewayError) as exc:
        provider().transform_response(parsed({"model": "m", "messages": USER}), body)
    assert (exc.value.status, exc.value.code) == (502, "upstream_protocol_error")


# -- streams ----------------------------------------------------------------------------------


def ev(name: str, payload: dict[str, Any]) -> bytes:
    return encode_message(
        {":event-type": name, ":content-type": "application/json", ":message-type": "event"},
        json.dumps(payload).encode(),
    )


def exc_msg(etype: str, message: str) -> bytes:
    return encode_message(
        {
            ":exception-type": etype,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        json.dumps({"message": message}).encode(),
    )


USAGE = {"inputTokens": 12, "outputTokens": 6, "totalTokens": 18, "cacheReadInputTokens": 2}

TEXT_STREAM = [
    ev("messageStart", {"p": "abc", "role": "assistant"}),
    ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}, "p": "xy"}),
    ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": 'lo \u00e9\u4e16 "q"'}}),
    ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": ""}}),
    ev("contentBlockStop", {"contentBlockIndex": 0}),
    ev("messageStop", {"stopReason": "end_turn"}),
    ev("metadata", {"usage": USAGE, "metrics": {"latencyMs": 5}}),
]

TOOL_STREAM = [
    ev("messageStart", {"role": "assistant"}),
    ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Checking."}}),
    ev("contentBlockStop", {"contentBlockIndex": 0}),
    ev(
        "contentBlockStart",
        {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu1", "name": "get_weather"}}},
    ),
    ev("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"ci'}}}),
    ev(
        "contentBlockDelta",
        {"contentBlockIndex": 1, "delta": {"toolUse": {"input": 'ty": "Paris"}'}}},
    ),
    ev("contentBlockStop", {"contentBlockIndex": 1}),
    ev(
        "contentBlockStart",
        {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "tu2", "name": "noop"}}},
    ),
    ev("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": ""}}}),
    ev("contentBlockStop", {"contentBlockIndex": 2}),
    ev("messageStop", {"stopReason": "tool_use"}),
    ev("metadata", {"usage": USAGE}),
]


def random_splits(raw: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(raw)), k=min(len(raw) - 1, rng.randint(0, 40))))
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]


def run_stream(
    messages: list[bytes], client_usage: bool = False, chunks: list[bytes] | None = None
) -> tuple[BedrockStream, list[bytes]]:
    body: dict[str, Any] = {"model": "m", "messages": USER, "stream": True}
    if client_usage:
        body["stream_options"] = {"include_usage": True}
    tr = provider().new_byte_stream(parsed(body), MODEL)
    raw = b"".join(messages)
    out = b"".join(tr.feed(c) for c in (chunks if chunks is not None else [raw])) + tr.flush()
    assert out.endswith(b"data: [DONE]\n\n")
    events = [e.removeprefix(b"data: ") for e in out.split(b"\n\n") if e]
    return tr, events


def chunks_of(events: list[bytes]) -> list[ChatCompletionChunk]:
    assert events[-1] == b"[DONE]"
    return [ChatCompletionChunk.model_validate_json(d) for d in events[:-1]]


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize("seed", range(20))
def test_text_stream_split_anywhere(seed: int) -> None:
    raw = b"".join(TEXT_STREAM)
    whole_tr, whole = run_stream(TEXT_STREAM)
    tr, events = run_stream(TEXT_STREAM, chunks=random_splits(raw, random.Random(seed)))
    strip = [json.loads(e) | {"id": "", "created": 0} for e in events[:-1]]
    assert strip == [json.loads(e) | {"id": "", "created": 0} for e in whole[:-1]]
    chunks = chunks_of(events)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert text_of(chunks) == 'Hello \u00e9\u4e16 "q"'
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.model == MODEL and c.id == chunks[0].id for c in chunks)
    assert len(chunks) == 4  # role, two texts (the empty one is skipped), finish
    assert tr.usage == (14, 6, 20, 2) == whole_tr.usage


def test_text_stream_one_byte_at_a_time_with_client_usage() -> None:
    raw = b"".join(TEXT_STREAM)
    tr, events = run_stream(
        TEXT_STREAM, client_usage=True, chunks=[raw[i : i + 1] for i in range(len(raw))]
    )
    chunks = chunks_of(events)
    assert all(json.loads(e)["usage"] is None for e in events[:-2])
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (
        14,
        6,
        20,
    )
    assert last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cached_tokens == 2
    assert tr.usage == (14, 6, 20, 2)


@pytest.mark.parametrize("seed", range(10))
def test_tool_call_stream(seed: int) -> None:
    raw = b"".join(TOOL_STREAM)
    _, events = run_stream(TOOL_STREAM, chunks=random_splits(raw, random.Random(seed)))
    chunks = chunks_of(events)
    assert text_of(chunks) == "Checking."
    calls: dict[int, dict[str, str]] = {}
    for c in chunks:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            entry = calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
            entry["id"] += tc.id or ""
            if tc.function is not None:
                entry["name"] += tc.function.name or ""
                entry["args"] += tc.function.arguments or ""
    assert calls == {
        0: {"id": "tu1", "name": "get_weather", "args": '{"city": "Paris"}'},
        1: {"id": "tu2", "name": "noop", "args": ""},
    }
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("etype", "status", "otype", "code"),
    [
        ("throttlingException", 429, "rate_limit_error", "rate_limit_exceeded"),
        ("validationException", 400, "invalid_request_error", None),
        ("modelStreamErrorException", 502, "upstream_error", "upstream_error"),
        ("internalServerException", 502, "upstream_error", "upstream_error"),
        ("serviceUnavailableException", 503, "upstream_error", "upstream_unavailable"),
        ("somethingNewException", 502, "upstream_error", "upstream_error"),
    ],
)
def test_exception_mid_stream(etype: str, status: int, otype: str, code: str | None) -> None:
    messages = [*TEXT_STREAM[:2], exc_msg(etype, "it broke"), *TEXT_STREAM[2:]]
    raw = b"".join(messages)
    _, events = run_stream(messages, chunks=random_splits(raw, random.Random(1)))
    assert events[-1] == b"[DONE]"
    err = json.loads(events[-2])["error"]
    assert (err["type"], err["code"]) == (otype, code)
    assert "it broke" in err["message"]
    assert len(events) == 4  # role, one text, the error, [DONE]: nothing after the exception
    expected = provider().error_for(None, etype, "it broke")
    assert expected.status == status


def test_error_message_type() -> None:
    msg = encode_message(
        {":message-type": "error", ":error-code": "InternalFailure", ":error-message": "oops"}, b""
    )
    _, events = run_stream([TEXT_STREAM[0], msg])
    err = json.loads(events[-2])["error"]
    assert err["type"] == "upstream_error" and "oops" in err["message"]


def test_broken_framing_and_truncation() -> None:
    raw = bytearray(b"".join(TEXT_STREAM))
    first = len(TEXT_STREAM[0])
    raw[first + 20] ^= 0xFF  # corrupt the second message
    _, events = run_stream([], chunks=[bytes(raw[:first]), bytes(raw[first:])])
    assert json.loads(events[1])["error"]["code"] == "upstream_protocol_error"
    assert events[-1] == b"[DONE]" and len(events) == 3
    # cut mid-message: an error at the end
    _, events = run_stream([TEXT_STREAM[0], TEXT_STREAM[1][:-3]])
    err = json.loads(events[-2])["error"]
    assert err["code"] == "upstream_protocol_error" and "cut" in err["message"]


def test_invalid_event_payload() -> None:
    _, events = run_stream([TEXT_STREAM[0], ev("contentBlockDelta", {"delta": 5})])
    assert json.loads(events[-2])["error"]["code"] == "upstream_protocol_error"
    bad = encode_message({":event-type": "messageStop", ":message-type": "event"}, b"{not json")
    _, events = run_stream([bad])
    assert json.loads(events[0])["error"]["code"] == "upstream_protocol_error"


def test_events_that_produce_nothing() -> None:
    tr = provider().new_byte_stream(parsed({"model": "m", "messages": USER, "stream": True}), MODEL)
    for m in (
        ev("contentBlockStop", {"contentBlockIndex": 0}),
        ev("contentBlockStart", {"contentBlockIndex": 0, "start": {}}),
        ev(
            "contentBlockDelta",
            {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "x"}}},
        ),
        ev("contentBlockDelta", {"contentBlockIndex": 9, "delta": {"toolUse": {"input": "x"}}}),
        ev("contentBlockDelta", {"contentBlockIndex": 0}),
        ev("metadata", {"metrics": {"latencyMs": 1}}),
        ev("somethingNew", {}),
        b"",
    ):
        assert tr.feed(m) == b""
    assert tr.usage is None
    assert tr.flush() == b"data: [DONE]\n\n"


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("http", "status", "otype", "code"),
    [
        (400, 400, "invalid_request_error", None),
        (401, 502, "upstream_error", "upstream_auth_failed"),
        (403, 502, "upstream_error", "upstream_auth_failed"),
        (404, 404, "invalid_request_error", "model_not_found"),
        (408, 502, "upstream_error", "upstream_error"),
        (409, 409, "invalid_request_error", None),
        (413, 413, "invalid_request_error", "request_too_large"),
        (424, 502, "upstream_error", "upstream_error"),
        (429, 429, "rate_limit_error", "rate_limit_exceeded"),
        (500, 502, "upstream_error", "upstream_error"),
        (503, 503, "upstream_error", "upstream_unavailable"),
        (504, 502, "upstream_error", "upstream_error"),
    ],
)
def test_map_error(http: int, status: int, otype: str, code: str | None) -> None:
    err = provider().map_error(http, b'{"message":"The thing failed."}')
    assert (err.status, err.type, err.code) == (status, otype, code)
    assert "The thing failed." in err.message


def test_map_error_bodies() -> None:
    p = provider(aws_session_token="SECRET-TOKEN")
    assert p.map_error(400, b'{"Message":"capital M"}').message == "capital M"
    assert p.map_error(400, b"plain text").message == "plain text"
    assert p.map_error(500, b"").message.endswith("HTTP 500")
    assert "***" in p.map_error(400, b'{"message":"bad SECRET-TOKEN"}').message
    assert (
        "wJalrX"
        not in p.map_error(
            400, json.dumps({"message": CREDS["aws_secret_access_key"]}).encode()
        ).message
    )
    auth = p.map_error(403, b'{"message":"The security token included in the request is invalid."}')
    assert "rejected the gateway's credentials" in auth.message


# -- the mock upstream ------------------------------------------------------------------------

AUTH = [(b"authorization", b"AWS4-HMAC-SHA256 Credential=AK/x, SignedHeaders=host, Signature=0")]
BASIC: dict[str, Any] = {"messages": [{"role": "user", "content": [{"text": "Hi there"}]}]}


def mock_plan(
    body: dict[str, Any], stream: bool = False, headers: list[tuple[bytes, bytes]] = AUTH
) -> Plan:
    path = f"/model/{ENCODED}/converse" + ("-stream" if stream else "")
    return plan_request(MockState(), "POST", path, "", headers, json.dumps(body).encode())


def mock_messages(p: Plan) -> list[tuple[str | None, str | None, dict[str, Any]]]:
    assert p.frames is not None
    raw = b"".join(data for _, data in p.frames if data is not None)
    return [
        (m.event_type, m.exception_type, json.loads(m.payload))
        for m in EventStreamDecoder().feed(raw)
    ]


def test_mock_answers() -> None:
    p = mock_plan(BASIC)
    assert p.status == 200
    ans = json.loads(p.body)
    assert ans["output"]["message"]["content"][0]["text"].endswith("Hi there")
    assert ans["stopReason"] == "end_turn"
    usage = ans["usage"]
    assert usage["inputTokens"] == 2
    assert usage["totalTokens"] == 2 + usage["outputTokens"] and usage["outputTokens"] > 0
    limited = json.loads(mock_plan(dict(BASIC, inferenceConfig={"maxTokens": 2})).body)
    assert limited["stopReason"] == "max_tokens" and limited["usage"]["outputTokens"] == 2
    stopped = json.loads(mock_plan(dict(BASIC, inferenceConfig={"stopSequences": ["mock"]})).body)
    assert stopped["stopReason"] == "stop_sequence"


def test_mock_refuses_unsigned_and_bad_requests() -> None:
    p = mock_plan(BASIC, headers=[])
    assert (
        p.status == 403
        and (
            b"x-amzn-errortype",
            b"UnrecognizedClientException:http://internal.amazon.com/coral/com.amazon.bedrock/",
        )
        in p.headers
    )
    assert mock_plan({"messages": [], "model": "x"}).status == 400  # unknown field: model
    assert mock_plan({"messages": []}).status == 400
    p = plan_request(MockState(), "POST", "/model/x/invoke", "", AUTH, b"{}")
    assert p.status == 404


def test_mock_stream_events() -> None:
    msgs = mock_messages(mock_plan(dict(BASIC, mock={"chunks": 3}), stream=True))
    assert [m[0] for m in msgs] == [
        "messageStart",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    assert "".join(m[2]["delta"]["text"] for m in msgs[1:4]).endswith("Hi there")


def test_mock_tool_use_and_exception() -> None:
    body = dict(
        BASIC,
        messages=[{"role": "user", "content": [{"text": "please call get_weather"}]}],
        toolConfig={"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {}}}}]},
    )
    ans = json.loads(mock_plan(body).body)
    assert ans["stopReason"] == "tool_use"
    assert ans["output"]["message"]["content"][-1]["toolUse"]["input"] == TOOL_INPUT
    msgs = mock_messages(mock_plan(body, stream=True))
    parts = [
        m[2]["delta"]["toolUse"]["input"]
        for m in msgs
        if m[2].get("contentBlockIndex") == 1 and m[0] == "contentBlockDelta"
    ]
    assert len(parts) > 1 and json.loads("".join(parts)) == TOOL_INPUT
    msgs = mock_messages(
        mock_plan(dict(BASIC, mock={"exception": "throttlingException"}), stream=True)
    )
    assert msgs[-1][1] == "throttlingException"


@pytest.mark.parametrize(
    ("status", "etype"),
    [
        (429, "ThrottlingException"),
        (400, "ValidationException"),
        (503, "ServiceUnavailableException"),
    ],
)
def test_mock_status_control(status: int, etype: str) -> None:
    p = mock_plan(dict(BASIC, mock={"status": status}))
    assert p.status == status
    assert dict(p.headers)[b"x-amzn-errortype"].startswith(etype.encode() + b":")
    assert "message" in json.loads(p.body)
    assert mock_plan(dict(BASIC, mock={"bogus": 1})).status == 400


# -- over a real socket -----------------------------------------------------------------------


async def _post(
    session: aiohttp.ClientSession, url: str, p: BedrockProvider, body: dict[str, Any]
) -> tuple[int, ParsedRequest, bytes, str]:
    req = parsed(body)
    ureq = p.build_request(req, MODEL, "rid-socket")
    target = yarl.URL(url + ureq.path, encoded=True)  # keep %3A as sent (and signed)
    async with session.post(target, data=ureq.body, headers={**p.headers, **ureq.headers}) as resp:
        return resp.status, req, await resp.read(), resp.headers.get("content-type", "")


async def test_against_mock_server() -> None:
    async with await start_server("127.0.0.1", 0) as server, aiohttp.ClientSession() as session:
        root = server.url.removesuffix("/v1")
        p = provider(base_url=root)
        base: dict[str, Any] = {
            "model": "gpt-4o",
            "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "Yo"}],
        }
        # non-streamed
        status, req, body, _ = await _post(session, root, p, base)
        assert status == 200, body
        c = ChatCompletion.model_validate_json(p.transform_response(req, body))
        assert c.choices[0].message.content is not None
        assert c.choices[0].message.content.endswith("Yo")
        assert c.usage is not None and c.usage.prompt_tokens == 2
        log = server.state.log[-1]
        assert log.path == f"/model/{ENCODED}/converse"
        sent = {k.decode().lower(): v.decode() for k, v in log.headers}
        # the signature holds for the request as the server received it
        date = datetime.strptime(sent["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        assert (
            sent["authorization"]
            == sigv4.sign(
                "POST",
                log.path,
                log.query,
                {"host": sent["host"], "content-type": sent["content-type"]},
                log.body,
                service="bedrock",
                region="us-west-2",
                access_key=CREDS["aws_access_key_id"],
                secret_key=CREDS["aws_secret_access_key"],
                now=date,
            )["authorization"]
        )

        # streamed, with a tool call and client usage, fed in small pieces
        tool_body = dict(
            base,
            messages=[{"role": "user", "content": "call get_weather now"}],
            tools=TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
        status, req, body, ctype = await _post(session, root, p, tool_body)
        assert status == 200 and ctype.startswith("application/vnd.amazon.eventstream")
        tr = p.new_byte_stream(req, MODEL)
        out = b"".join(tr.feed(body[i : i + 13]) for i in range(0, len(body), 13)) + tr.flush()
        events = [e.removeprefix(b"data: ") for e in out.split(b"\n\n") if e]
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

        # an exception mid-stream, and an upstream error mapped
        status, req, body, _ = await _post(
            session,
            root,
            p,
            dict(base, stream=True, mock={"exception": "throttlingException"}),
        )
        assert status == 200
        tr = p.new_byte_stream(req, MODEL)
        events = [e for e in (tr.feed(body) + tr.flush()).split(b"\n\n") if e]
        assert (
            json.loads(events[-2].removeprefix(b"data: "))["error"]["code"] == "rate_limit_exceeded"
        )
        status, _, body, _ = await _post(session, root, p, dict(base, mock={"status": 429}))
        assert status == 429
        err = p.map_error(status, body)
        assert (err.status, err.type) == (429, "rate_limit_error")

        # unsigned: the mock refuses it
        async with session.post(root + "/model/m/converse", data=b"{}") as resp:
            assert resp.status == 403


def test_stream_translator_speed() -> None:
    """Not a benchmark gate: a sanity bound (>= 20k events/s) for the per-event path."""
    deltas = [
        ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": f"word{i} "}})
        for i in range(2000)
    ]
    raw = b"".join([TEXT_STREAM[0], *deltas, *TEXT_STREAM[-2:]])
    pieces = [raw[i : i + 4096] for i in range(0, len(raw), 4096)]
    tr = provider().new_byte_stream(parsed({"model": "m", "messages": USER, "stream": True}), MODEL)
    t0 = time.perf_counter()
    for piece in pieces:
        tr.feed(piece)
    tr.flush()
    rate = len(deltas) / (time.perf_counter() - t0)
    assert rate > 20_000, rate


# -- through the gateway ----------------------------------------------------------------------


@pytest.mark.e2e
async def test_through_the_gateway() -> None:
    """The openai SDK → the gateway (its own upstream client and wire) → the mock: the
    signature holds for the bytes the upstream received, streams and errors included."""
    import asyncio

    import openai

    from tests.servers import start_gateway

    async with await start_server("127.0.0.1", 0) as mock:
        root = mock.url.removesuffix("/v1")
        cfg = {
            "providers": {
                "br": {"kind": "bedrock", "base_url": root, **CREDS, "aws_session_token": "T"}
            },
            "models": {"claude": {"targets": [{"provider": "br", "model": MODEL}]}},
        }
        gw = await asyncio.to_thread(start_gateway, cfg)
        try:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
            sdk_tools: Any = TOOLS
            r = await client.chat.completions.create(
                model="claude", messages=[{"role": "user", "content": "Hello bedrock"}]
            )
            assert (r.choices[0].message.content or "").endswith("Hello bedrock")
            stream = await client.chat.completions.create(
                model="claude",
                messages=[{"role": "user", "content": "call get_weather"}],
                tools=sdk_tools,
                stream=True,
                stream_options={"include_usage": True},
            )
            args, finish, usage = "", None, None
            async for ch in stream:
                if ch.choices:
                    finish = ch.choices[0].finish_reason or finish
                    for tc in ch.choices[0].delta.tool_calls or []:
                        args += tc.function.arguments or "" if tc.function else ""
                usage = ch.usage or usage
            assert json.loads(args) == TOOL_INPUT and finish == "tool_calls"
            assert usage is not None and usage.total_tokens > 0
            with pytest.raises(openai.APIError, match="Simulated throttlingException"):
                stream = await client.chat.completions.create(
                    model="claude",
                    messages=[{"role": "user", "content": "x"}],
                    stream=True,
                    extra_body={"mock": {"exception": "throttlingException"}},
                )
                async for _ in stream:
                    pass
            with pytest.raises(openai.RateLimitError):
                await client.chat.completions.create(
                    model="claude",
                    messages=[{"role": "user", "content": "x"}],
                    extra_body={"mock": {"status": 429}},
                )
        finally:
            await asyncio.to_thread(gw.stop)
        assert len(mock.state.log) == 4
        for entry in mock.state.log:
            assert entry.path.startswith(f"/model/{ENCODED}/converse")
            h = {k.decode().lower(): v.decode() for k, v in entry.headers}
            date = datetime.strptime(h["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            assert (
                h["authorization"]
                == sigv4.sign(
                    "POST",
                    entry.path,
                    entry.query,
                    {"host": h["host"], "content-type": h["content-type"]},
                    entry.body,
                    service="bedrock",
                    region="us-west-2",
                    access_key=CREDS["aws_access_key_id"],
                    secret_key=CREDS["aws_secret_access_key"],
                    session_token="T",
                    now=date,
                )["authorization"]
            )
