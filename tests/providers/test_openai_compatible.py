"""OpenAI-compatible servers (vLLM, Ollama, llama.cpp, LM Studio) on MockTransport."""

from __future__ import annotations

import httpx
import pytest
from provider_wire import IMAGE, Wire, make

from captionkit.errors import BackendError, ConfigError
from captionkit.llm.base import ChatMessage
from captionkit.providers import get_provider
from captionkit.providers.base import RequestFailed
from captionkit.types import Decoding

OK = {
    "choices": [{"index": 0, "message": {"content": [{"type": "text", "text": "A cat."}]},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 7, "completion_tokens": 3},
}  # fmt: skip


def test_text_request_goes_to_the_base_url_without_a_key():
    wire = Wire(OK)
    p = make("openai-compatible", wire, api_key=None)
    done = p.send(p.text_body([ChatMessage("user", "hi")], Decoding(max_new_tokens=20)))
    req = wire.requests[0]
    assert str(req.url) == "http://llm.test:8000/v1/chat/completions"
    assert "authorization" not in req.headers  # local servers take no key
    assert wire.body == {
        "model": "m1",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 20,  # the name these servers know (not max_completion_tokens)
    }
    assert done.texts == ["A cat."]  # content parts joined
    assert done.usage == {"input_tokens": 7, "output_tokens": 3}


def test_image_request_and_optional_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-must-not-leak")
    wire = Wire(OK)
    p = make("openai-compatible", wire, api_key=None)
    p.send(p.image_body(IMAGE, "S", "I", Decoding(), n=2))
    assert "authorization" not in wire.requests[0].headers  # OPENAI_API_KEY never sent here
    assert wire.body["n"] == 2 and wire.body["max_tokens"] == 60
    assert wire.body["messages"][1]["content"][1]["image_url"] == {
        "url": "data:image/jpeg;base64,QUJD"
    }
    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", "local-key")
    wire2 = Wire(OK)
    p2 = make("openai-compatible", wire2, api_key=None)
    p2.send(p2.image_body(IMAGE, "S", "I", Decoding()))
    assert wire2.requests[0].headers["authorization"] == "Bearer local-key"


def test_base_url_is_required_or_read_from_the_environment(monkeypatch):
    cls = get_provider("openai-compatible")
    with pytest.raises(ConfigError, match=r"--base-url.*OPENAI_BASE_URL"):
        cls("m1")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:2/v1")
    assert cls("m1").base_url == "http://127.0.0.1:2/v1"
    assert cls("m1", base_url="http://h/v1").base_url == "http://h/v1"


def test_bare_string_and_fastapi_errors_keep_the_server_message():
    wire = Wire(OK).queue((400, {"error": "context too long"}, {}), (422, {"detail": "bad"}, {}))
    p = make("openai-compatible", wire)
    with pytest.raises(RequestFailed, match="HTTP 400: context too long"):
        p.send(p.text_body([ChatMessage("user", "hi")], Decoding()))
    with pytest.raises(RequestFailed, match="HTTP 422: bad"):
        p.send(p.text_body([ChatMessage("user", "hi")], Decoding()))


def test_rejected_key_stops_the_run():
    wire = Wire(OK).queue((401, {"error": {"message": "Invalid API key"}}, {}))
    p = make("openai-compatible", wire, api_key="wrong")
    with pytest.raises(BackendError, match=r"HTTP 401: Invalid API key.*OPENAI_COMPATIBLE_API_KEY"):
        p.send(p.text_body([ChatMessage("user", "hi")], Decoding()))


def test_server_not_running_stops_the_run():
    wire = Wire(OK).queue(*[httpx.ConnectError("refused")] * 5)
    p = make("openai-compatible", wire, max_retries=4)
    with pytest.raises(BackendError, match=r"cannot connect.*3 attempts.*server running"):
        p.send(p.text_body([ChatMessage("user", "hi")], Decoding()))
    assert len(wire.requests) == 3  # a refused connection gets two more tries, not four


def test_429_retry_after_then_500_fails_request():
    wire = Wire(OK).queue((429, {"error": "busy"}, {"retry-after": "2"}))
    p = make("openai-compatible", wire)
    assert p.send(p.text_body([ChatMessage("user", "hi")], Decoding())).retries == 1
    assert 2.0 <= p.waits[0] < 2.5
    wire.queue(*[(503, "<html>Bad gateway</html>", {})] * 3)
    with pytest.raises(RequestFailed, match="HTTP 503 after 2 retries: <html>Bad gateway</html>"):
        p.send(p.text_body([ChatMessage("user", "hi")], Decoding()))
