"""Anthropic Messages on MockTransport: what is sent, what is read back, how errors map."""

from __future__ import annotations

import pytest
from provider_wire import IMAGE, KEY, Wire, make

from captionkit.errors import BackendError
from captionkit.llm.base import ChatMessage
from captionkit.providers.base import RequestFailed
from captionkit.types import Decoding


def ok(text="A dog.", usage=None, stop="end_turn"):
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop,
        "usage": usage or {"input_tokens": 50, "output_tokens": 10},
    }


def error(type_, message):
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": "r1"}


def test_text_request_body_and_headers():
    wire = Wire(ok())
    p = make("anthropic", wire)
    conv = [ChatMessage("system", "Rewrite."), ChatMessage("user", "A dog on grass.")]
    p.send(p.text_body(conv, Decoding(max_new_tokens=50, stop=("\n",), seed=5)))
    req = wire.requests[0]
    assert str(req.url) == "https://api.anthropic.com/v1/messages"
    assert req.headers["x-api-key"] == KEY
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in req.headers
    assert wire.body == {
        "model": "m1",
        "messages": [{"role": "user", "content": "A dog on grass."}],
        "system": "Rewrite.",
        "max_tokens": 50,
        "stop_sequences": ["\n"],
    }  # no seed: Messages has none


def test_image_request_body_image_first_and_one_of_temperature_or_top_p():
    wire = Wire(ok())
    p = make("anthropic", wire)
    dec = Decoding(max_new_tokens=1024, do_sample=True, temperature=0.6, top_p=0.9)
    p.send(p.image_body(IMAGE, "Sys.", "Say it.", dec, n=3, json_output=True))
    body = wire.body
    assert body["system"] == "Sys."
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"},
                },
                {"type": "text", "text": "Say it."},
            ],
        }
    ]
    assert body["output_config"]["format"]["schema"]["required"] == ["caption", "tags"]
    assert body["temperature"] == 0.6 and "top_p" not in body and "n" not in body
    sampled_top_p = p.image_body(IMAGE, "S", "I", Decoding(do_sample=True, top_p=0.5))
    assert sampled_top_p["temperature"] == 1.0 and "top_p" not in sampled_top_p
    # greedy sends neither: nothing to cut, and newer models refuse what was not asked for
    greedy = p.image_body(IMAGE, "S", "I", Decoding(top_p=0.5))
    assert "temperature" not in greedy and "top_p" not in greedy


def test_answer_usage_counts_cache_tokens():
    usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 5,
        "output_tokens": 7,
    }
    p = make("anthropic", Wire(ok("A cat.", usage=usage, stop="end_turn")))
    done = p.send(p.text_body([ChatMessage("user", "hi")], Decoding()))
    assert done.texts == ["A cat."]
    assert done.usage == {"input_tokens": 115, "output_tokens": 7}
    assert done.finish_reason == "end_turn"
    assert not p.returns_n  # N candidates are N requests


def test_refusal_fails_the_request():
    answer = ok("", stop="refusal")
    answer["content"] = []
    p = make("anthropic", Wire(answer))
    with pytest.raises(RequestFailed, match="the model refused"):
        p.send(p.text_body([ChatMessage("user", "hi")], Decoding()))


@pytest.mark.parametrize(
    ("status", "kind"), [(401, "authentication_error"), (403, "permission_error")]
)
def test_invalid_key_stops_the_run(status, kind):
    wire = Wire(ok()).queue((status, error(kind, "invalid x-api-key"), {}))
    p = make("anthropic", wire, api_key="wrong-key")
    with pytest.raises(BackendError) as err:
        p.send(p.text_body([ChatMessage("user", "hi")], Decoding()))
    assert f"HTTP {status}: invalid x-api-key (check ANTHROPIC_API_KEY)" in str(err.value)
    assert "wrong-key" not in str(err.value)


def test_429_retry_after_is_honoured():
    wire = Wire(ok()).queue((429, error("rate_limit_error", "slow down"), {"retry-after": "3"}))
    p = make("anthropic", wire)
    assert p.send(p.text_body([ChatMessage("user", "hi")], Decoding())).retries == 1
    assert len(p.waits) == 1 and 3.0 <= p.waits[0] < 3.5


def test_529_overloaded_retried_then_fails_the_request():
    wire = Wire(ok()).queue(*[(529, error("overloaded_error", "Overloaded"), {})] * 3)
    p = make("anthropic", wire)
    with pytest.raises(RequestFailed, match="HTTP 529 after 2 retries: Overloaded"):
        p.send(p.text_body([ChatMessage("user", "hi")], Decoding()))
    assert len(p.waits) == 2 and p.waits[0] < p.waits[1]  # exponential backoff
