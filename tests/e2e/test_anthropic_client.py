"""The official ``anthropic`` client against the gateway's Messages API (``/v1/messages``):
translated to an OpenAI-kind target and back, and passed through to an Anthropic target."""

from __future__ import annotations

import anthropic
import pytest
from anthropic.types import MessageParam, TextBlock, ToolParam, ToolUseBlock

from tests.servers import SECRET, Proc

pytestmark = pytest.mark.e2e

MSGS: list[MessageParam] = [{"role": "user", "content": "hello from the anthropic sdk"}]
TOOLS: list[ToolParam] = [
    {
        "name": "get_weather",
        "description": "Weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
CALL: list[MessageParam] = [{"role": "user", "content": "please call get_weather"}]


def client(gw: Proc) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)


@pytest.mark.parametrize("model", ["gpt-test", "claude-sonnet", "gemini-flash", "bedrock-claude"])
def test_messages_non_stream_and_stream(gateway: Proc, model: str) -> None:
    c = client(gateway)
    msg = c.messages.create(model=model, max_tokens=256, system="Be brief.", messages=MSGS)
    text = "".join(b.text for b in msg.content if isinstance(b, TextBlock))
    assert "hello from the anthropic sdk" in text
    assert msg.stop_reason == "end_turn"
    assert msg.usage.output_tokens > 0

    with c.messages.stream(model=model, max_tokens=256, messages=MSGS) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "hello from the anthropic sdk" in streamed
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("model", ["gpt-test", "claude-sonnet"])
@pytest.mark.parametrize("stream", [False, True])
def test_messages_tools(gateway: Proc, model: str, stream: bool) -> None:
    """Tool use and the tool result turn, on a translated (OpenAI-kind) target and on a
    passed-through (Anthropic-kind) one."""
    c = client(gateway)
    final: anthropic.types.Message
    if stream:
        with c.messages.stream(model=model, max_tokens=256, messages=CALL, tools=TOOLS) as s:
            final = s.get_final_message()
    else:
        final = c.messages.create(model=model, max_tokens=256, messages=CALL, tools=TOOLS)
    uses = [b for b in final.content if isinstance(b, ToolUseBlock)]
    assert uses and uses[0].name == "get_weather" and uses[0].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"
    follow: list[MessageParam] = [
        *CALL,
        {"role": "assistant", "content": final.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny"}],
        },
    ]
    again = c.messages.create(model=model, max_tokens=256, messages=follow, tools=TOOLS)
    assert again.content


def test_messages_errors_in_anthropic_shape(gateway: Proc) -> None:
    c = client(gateway)
    with pytest.raises(anthropic.NotFoundError) as nf:
        c.messages.create(model="no-such-model", max_tokens=10, messages=MSGS)
    assert nf.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError):
        c.messages.create(model="gpt-test", max_tokens=0, messages=MSGS)
    with pytest.raises(anthropic.RateLimitError):
        c.messages.create(
            model="gpt-test", max_tokens=10, messages=MSGS, extra_body={"mock": {"status": 429}}
        )
    with pytest.raises(anthropic.InternalServerError) as e:
        c.messages.create(model="dead", max_tokens=10, messages=MSGS)
    assert SECRET not in str(e.value.body)


@pytest.mark.parametrize("model", ["gpt-test", "claude-sonnet"])
def test_count_tokens(gateway: Proc, model: str) -> None:
    c = client(gateway)
    counted = c.messages.count_tokens(model=model, messages=MSGS)
    assert counted.input_tokens > 0
