"""The official ``openai`` client against models served by providers that are not
OpenAI-shaped (the mock upstream speaks each provider's wire format)."""

from __future__ import annotations

import json

import openai
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from tests.servers import SECRET, Proc

pytestmark = pytest.mark.e2e

MSG: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello from the sdk"},
]
TOOLS: list[openai.types.chat.ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
CALL: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "please call get_weather"}
]


def client(gw: Proc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("model", ["gpt-test", "gemini-flash", "claude-sonnet", "bedrock-claude"])
def test_chat_stream_and_tools(gateway: Proc, model: str) -> None:
    c = client(gateway)
    raw = c.chat.completions.with_raw_response.create(model=model, messages=MSG)
    resp = raw.parse()
    assert "hello from the sdk" in (resp.choices[0].message.content or "")
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.total_tokens > 0
    assert SECRET not in raw.http_response.text

    chunks = list(
        c.chat.completions.create(
            model=model, messages=MSG, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join((ch.choices[0].delta.content or "") for ch in chunks if ch.choices)
    assert "hello from the sdk" in text
    assert chunks[-1].choices == [] and chunks[-1].usage is not None

    tool = c.chat.completions.create(model=model, messages=CALL, tools=TOOLS)
    calls = tool.choices[0].message.tool_calls
    assert tool.choices[0].finish_reason == "tool_calls"
    assert calls
    call = calls[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    streamed = list(c.chat.completions.create(model=model, messages=CALL, tools=TOOLS, stream=True))
    args = "".join(
        tc.function.arguments or ""
        for ch in streamed
        if ch.choices
        for tc in (ch.choices[0].delta.tool_calls or [])
        if tc.function
    )
    assert json.loads(args) == {"city": "Paris"}


def test_gemini_embeddings_and_rejected_parameter(gateway: Proc) -> None:
    c = client(gateway)
    emb = c.embeddings.create(model="gemini-flash", input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="gemini-flash", messages=MSG, logprobs=True)
    assert e.value.code == "unsupported_parameter"


def test_responses_api_refused_for_non_openai_target(gateway: Proc) -> None:
    c = client(gateway)
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model="gemini-flash", input="hi")
    assert e.value.code == "unsupported_endpoint"


@pytest.mark.parametrize("model", ["gemini-flash", "claude-sonnet", "bedrock-claude"])
def test_upstream_failures_map_cleanly(gateway: Proc, model: str) -> None:
    """A drop mid-stream ends the stream with an error the SDK raises; an overloaded or
    rate-limited provider is a retryable status, in OpenAI's shape, with its message."""
    c = client(gateway)
    stream = c.chat.completions.create(
        model=model, messages=MSG, stream=True, extra_body={"mock": {"chunks": 6, "drop_after": 2}}
    )
    got = []
    with pytest.raises(openai.APIError) as e:
        for ch in stream:
            got.append(ch)
    assert got and "closed the connection" in str(e.value)
    overloaded = 529 if model == "claude-sonnet" else 503
    with pytest.raises(openai.InternalServerError) as ise:
        c.chat.completions.create(
            model=model, messages=MSG, extra_body={"mock": {"status": overloaded}}
        )
    assert ise.value.status_code == 503
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model=model, messages=MSG, extra_body={"mock": {"status": 429}})
