"""The HTTP text LLMs (rewriters) against the same fake provider servers."""

from __future__ import annotations

import pytest
from provider_fakes import KEY, Reply, openai_error

from captionkit.errors import BackendError, ConfigError
from captionkit.llm.base import ChatMessage, GenerationConfig
from captionkit.llm.openai_compat import (
    AnthropicLLM,
    GeminiLLM,
    OpenAICompatibleLLM,
    OpenAILLM,
    RequestFailed,
)
from captionkit.types import Decoding

CLASSES = {
    "openai": OpenAILLM,
    "openai-compatible": OpenAICompatibleLLM,
    "gemini": GeminiLLM,
    "anthropic": AnthropicLLM,
}
CONV = [ChatMessage("system", "Rewrite."), ChatMessage("user", "A dog on grass.\n\nCaption:")]


@pytest.mark.parametrize("kind", list(CLASSES))
def test_chat_shapes_and_usage(fake_server, kind):
    server = fake_server(kind, text="  A happy dog. #dogs  ")
    llm = CLASSES[kind]("m1", base_url=server.base_url, api_key=KEY)
    llm.client.sleep = lambda s: None
    answers = llm.chat([CONV, CONV, CONV], GenerationConfig(max_new_tokens=50, stop=("\n",)))
    llm.close()
    assert answers == ["A happy dog. #dogs"] * 3
    assert llm.usage["input_tokens"] > 0 and llm.usage["output_tokens"] > 0
    body = server.requests[0].json
    if kind == "gemini":
        assert body["systemInstruction"]["parts"][0]["text"] == "Rewrite."
        assert body["generationConfig"]["stopSequences"] == ["\n"]
        assert body["generationConfig"]["maxOutputTokens"] == 50
    elif kind == "anthropic":
        assert body["system"] == "Rewrite." and body["messages"][0]["role"] == "user"
        assert body["stop_sequences"] == ["\n"] and body["max_tokens"] == 50
    else:
        assert body["messages"][0] == {"role": "system", "content": "Rewrite."}
        assert body["stop"] == ["\n"] and "temperature" not in body  # greedy: none sent
    assert llm.label == f"{kind}:m1"


def test_openai_compatible_requires_base_url_and_no_key(monkeypatch):
    with pytest.raises(ConfigError, match="--base-url"):
        OpenAICompatibleLLM("smol")
    assert OpenAICompatibleLLM("smol", base_url="http://127.0.0.1:1/v1").label
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:2/v1")
    assert OpenAICompatibleLLM("smol").base_url == "http://127.0.0.1:2/v1"
    assert OpenAICompatibleLLM("smol", base_url="http://h/v1").base_url == "http://h/v1"


def test_hosted_needs_key(monkeypatch):
    with pytest.raises(BackendError, match="ANTHROPIC_API_KEY"):
        AnthropicLLM("claude-haiku-4-5")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert OpenAILLM("gpt-4o-mini").base_url == "https://api.openai.com/v1"


def test_errors(fake_server):
    server = fake_server("openai-compatible")
    llm = OpenAICompatibleLLM("m", base_url=server.base_url, max_retries=1)
    llm.client.sleep = lambda s: None
    server.queue(Reply(400, openai_error("context too long", "invalid_request_error")))
    with pytest.raises(RequestFailed, match="HTTP 400: context too long"):
        llm.chat([CONV], GenerationConfig())
    server.queue(
        Reply(500, {"error": "boom"}), Reply(200, openai_error("x", "y") | {"choices": []})
    )
    with pytest.raises(RequestFailed, match="no choices"):
        llm.chat([CONV], GenerationConfig())
    server.queue(Reply(401, openai_error("bad key", "invalid_request_error")))
    with pytest.raises(BackendError, match="bad key"):
        llm.chat([CONV], GenerationConfig())
    llm.close()
    down = OpenAICompatibleLLM("m", base_url="http://127.0.0.1:9/v1", max_retries=1, timeout=2)
    down.client.sleep = lambda s: None
    with pytest.raises(BackendError, match=r"cannot connect.*2 attempts.*server running"):
        down.chat([CONV], GenerationConfig())


def test_exhausted_quota_stops_without_retries(fake_server):
    """As for the captioners: a 429 for no credit is final, not retried four times."""
    server = fake_server("openai")
    quota = openai_error(
        "You exceeded your current quota.", "insufficient_quota", "insufficient_quota"
    )
    server.queue(Reply(429, quota, {"retry-after": "1"}))
    llm = OpenAILLM("gpt-4o-mini", base_url=server.base_url, api_key=KEY)
    waits: list[float] = []
    llm.client.sleep = waits.append
    with pytest.raises(BackendError, match="exceeded your current quota"):
        llm.chat([CONV], GenerationConfig())
    assert waits == [] and len(server.requests) == 1
    llm.close()


def test_chat_takes_decoding_too(fake_server):
    server = fake_server("anthropic")
    llm = AnthropicLLM("claude-haiku-4-5", base_url=server.base_url, api_key=KEY)
    assert llm.chat([CONV], Decoding(max_new_tokens=30, do_sample=True, temperature=0.4))
    body = server.requests[0].json
    assert (body["max_tokens"], body["temperature"]) == (30, 0.4)
    llm.close()
