"""OpenAI Chat Completions on MockTransport: what is sent, what is read back, how errors map."""

from __future__ import annotations

import pytest
from provider_wire import IMAGE, KEY, Wire, make

from captionkit.errors import BackendError
from captionkit.llm.base import ChatMessage
from captionkit.providers.base import RequestFailed
from captionkit.types import Decoding


def ok(text="A dog.", n=1, usage=(120, 12), finish="stop"):
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": f"{text} {i}", "refusal": None},
                "finish_reason": finish,
            }
            for i in range(n)
        ],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]},
    }


def error(message, type_, code=None):
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def test_text_request_body_and_headers():
    wire = Wire(ok())
    p = make("openai", wire)
    conv = [ChatMessage("system", "Rewrite."), ChatMessage("user", "A dog on grass.")]
    p.send(p.text_body(conv, Decoding(max_new_tokens=50, stop=("\n",), seed=3)))
    req = wire.requests[0]
    assert str(req.url) == "https://api.openai.com/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["content-type"] == "application/json"
    assert wire.body == {
        "model": "m1",
        "messages": [
            {"role": "system", "content": "Rewrite."},
            {"role": "user", "content": "A dog on grass."},
        ],
        "max_completion_tokens": 50,
        "seed": 3,
        "stop": ["\n"],
    }


def test_image_request_body_with_json_schema_n_and_detail():
    wire = Wire(ok(n=3))
    p = make("openai", wire)
    dec = Decoding(max_new_tokens=1024, do_sample=True, temperature=0.7, top_p=0.9)
    body = p.image_body(IMAGE, "Sys.", "Say it.", dec, n=3, json_output=True, detail="low")
    p.send(body)
    sent = wire.body
    assert sent["messages"][0] == {"role": "system", "content": "Sys."}
    assert sent["messages"][1]["content"] == [
        {"type": "text", "text": "Say it."},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD", "detail": "low"}},
    ]
    assert sent["response_format"]["json_schema"]["strict"] is True
    assert sent["response_format"]["json_schema"]["schema"]["required"] == ["caption", "tags"]
    assert (sent["n"], sent["temperature"], sent["top_p"]) == (3, 0.7, 0.9)
    assert sent["max_completion_tokens"] == 1024 and "max_tokens" not in sent
    # auto is the default and omitted; sampling omitted entirely when asked
    body = p.image_body(IMAGE, "S", "I", dec, detail="auto", send_sampling=False)
    assert "detail" not in body["messages"][1]["content"][1]["image_url"]
    assert "temperature" not in body and "top_p" not in body


def test_answer_texts_usage_and_finish_reason():
    wire = Wire(ok("Two cats.", n=2, usage=(300, 25), finish="stop"))
    p = make("openai", wire)
    done = p.send(p.text_body([ChatMessage("user", "hi")], Decoding()))
    assert done.texts == ["Two cats. 0", "Two cats. 1"]
    assert done.usage == {"input_tokens": 300, "output_tokens": 25}
    assert done.finish_reason == "stop" and done.retries == 0


def test_refusal_fails_the_request():
    answer = ok()
    answer["choices"][0]["message"] = {"role": "assistant", "content": None, "refusal": "No."}
    p = make("openai", Wire(answer))
    with pytest.raises(RequestFailed, match=r"the model refused: No\."):
        p.send(p.text_body([ChatMessage("user", "hi")], Decoding()))


@pytest.mark.parametrize("status", [401, 403])
def test_invalid_key_stops_the_run(status):
    wire = Wire(ok()).queue((status, error("Incorrect API key provided", "invalid_request_error",
                                           "invalid_api_key"), {}))  # fmt: skip
    p = make("openai", wire, api_key="sk-wrong-key")
    with pytest.raises(BackendError) as err:
        p.send(p.text_body([ChatMessage("user", "hi")], Decoding()))
    assert f"openai:m1: HTTP {status}: Incorrect API key provided" in str(err.value)
    assert "OPENAI_API_KEY" in str(err.value) and "sk-wrong-key" not in str(err.value)
    assert len(wire.requests) == 1  # never retried


def test_429_retry_after_is_honoured():
    limited = error("Rate limit reached", "requests", "rate_limit_exceeded")
    wire = Wire(ok()).queue((429, limited, {"retry-after": "3"}))
    p = make("openai", wire)
    done = p.send(p.text_body([ChatMessage("user", "hi")], Decoding()))
    assert done.texts == ["A dog. 0"] and done.retries == 1
    assert len(p.waits) == 1 and 3.0 <= p.waits[0] < 3.5


def test_500_retried_then_fails_the_request():
    boom = error("The server had an error", "server_error")
    wire = Wire(ok()).queue(*[(500, boom, {})] * 3)
    p = make("openai", wire)
    with pytest.raises(RequestFailed, match="HTTP 500 after 2 retries: The server had an error"):
        p.send(p.text_body([ChatMessage("user", "hi")], Decoding()))
    assert len(wire.requests) == 3 and len(p.waits) == 2


def test_image_tokens_follow_the_tiling_rule():
    p = make("openai", Wire(ok()))
    assert p.image_tokens(64, 48, "low") == 85
    assert p.image_tokens(1024, 1024) == 85 + 170 * 4  # 768x768 -> 2x2 tiles
    assert p.image_tokens(4096, 2048) == 85 + 170 * 6  # 2048x1024 -> 1536x768 -> 3x2
