"""Gemini generateContent on MockTransport: what is sent, what is read back, how errors map."""

from __future__ import annotations

import pytest
from provider_wire import IMAGE, KEY, Wire, make

from captionkit.errors import BackendError
from captionkit.llm.base import ChatMessage
from captionkit.providers.base import RequestFailed
from captionkit.types import Decoding


def ok(text="A dog.", n=1, usage=(300, 10), thoughts=0):
    meta = {"promptTokenCount": usage[0], "candidatesTokenCount": usage[1]}
    if thoughts:
        meta["thoughtsTokenCount"] = thoughts
    return {
        "candidates": [
            {
                "content": {
                    "parts": [{"text": "thinking...", "thought": True}, {"text": f"{text} {i}"}],
                    "role": "model",
                },
                "finishReason": "STOP",
                "index": i,
            }
            for i in range(n)
        ],
        "usageMetadata": meta,
    }


def error(code, status, message, details=None):
    err = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return {"error": err}


def test_text_request_body_and_headers():
    wire = Wire(ok())
    p = make("gemini", wire)
    conv = [
        ChatMessage("system", "Rewrite."),
        ChatMessage("user", "A dog."),
        ChatMessage("assistant", "A dog!"),
        ChatMessage("user", "Shorter."),
    ]
    p.send(p.text_body(conv, Decoding(max_new_tokens=50, stop=("\n",), top_p=0.5, seed=1)))
    req = wire.requests[0]
    assert str(req.url) == (
        "https://generativelanguage.googleapis.com/v1beta/models/m1:generateContent"
    )
    assert req.headers["x-goog-api-key"] == KEY and "key=" not in str(req.url)
    assert wire.body == {
        "contents": [
            {"role": "user", "parts": [{"text": "A dog."}]},
            {"role": "model", "parts": [{"text": "A dog!"}]},
            {"role": "user", "parts": [{"text": "Shorter."}]},
        ],
        "systemInstruction": {"parts": [{"text": "Rewrite."}]},
        "generationConfig": {
            "maxOutputTokens": 50,
            "seed": 1,
            "stopSequences": ["\n"],
        },
    }


def test_image_request_body_with_schema_and_candidate_count():
    wire = Wire(ok(n=2))
    p = make("gemini", wire, base_url="https://proxy.test/")
    dec = Decoding(max_new_tokens=1024, do_sample=True, temperature=0.8)
    p.send(p.image_body(IMAGE, "Sys.", "Say it.", dec, n=2, json_output=True))
    assert str(wire.requests[0].url) == "https://proxy.test/v1beta/models/m1:generateContent"
    assert wire.body["systemInstruction"] == {"parts": [{"text": "Sys."}]}
    assert wire.body["contents"] == [
        {
            "role": "user",
            "parts": [
                {"inline_data": {"mime_type": "image/jpeg", "data": "QUJD"}},
                {"text": "Say it."},
            ],
        }
    ]
    gen = wire.body["generationConfig"]
    assert (gen["candidateCount"], gen["temperature"], gen["maxOutputTokens"]) == (2, 0.8, 1024)
    assert gen["responseMimeType"] == "application/json"
    assert gen["responseSchema"]["type"] == "OBJECT"


def test_answer_skips_thoughts_and_bills_them():
    p = make("gemini", Wire(ok("Two cats.", n=2, usage=(258, 9), thoughts=40)))
    done = p.send(p.text_body([ChatMessage("user", "hi")], Decoding()))
    assert done.texts == ["Two cats. 0", "Two cats. 1"]
    assert done.usage == {"input_tokens": 258, "output_tokens": 49}
    assert done.finish_reason == "STOP"


def test_blocked_prompt_and_safety_stop_fail_the_request():
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {}}
    p = make("gemini", Wire(blocked))
    with pytest.raises(RequestFailed, match="blocked by the provider: SAFETY"):
        p.send(p.text_body([ChatMessage("user", "hi")], Decoding()))
    unsafe = {"candidates": [{"content": {"parts": []}, "finishReason": "SAFETY"}]}
    p = make("gemini", Wire(unsafe))
    with pytest.raises(RequestFailed, match="no text: finishReason SAFETY"):
        p.send(p.text_body([ChatMessage("user", "hi")], Decoding()))


def test_invalid_key_400_stops_the_run():
    """Gemini answers a bad key with 400 INVALID_ARGUMENT (reason API_KEY_INVALID), not 401:
    it must stop the run, not fail every image one by one."""
    bad_key = error(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            }
        ],
    )
    wire = Wire(ok()).queue((400, bad_key, {}))
    p = make("gemini", wire, api_key="wrong-key")
    with pytest.raises(BackendError) as err:
        p.send(p.text_body([ChatMessage("user", "hi")], Decoding()))
    assert "HTTP 400: API key not valid" in str(err.value)
    assert "GEMINI_API_KEY or GOOGLE_API_KEY" in str(err.value)
    assert "wrong-key" not in str(err.value)
    # an ordinary 400 (a bad image) still fails only its request
    wire.queue((400, error(400, "INVALID_ARGUMENT", "Unable to process input image."), {}))
    with pytest.raises(RequestFailed, match="HTTP 400: Unable to process input image"):
        p.send(p.image_body(IMAGE, "S", "I", Decoding()))


def test_403_permission_denied_stops_the_run():
    wire = Wire(ok()).queue((403, error(403, "PERMISSION_DENIED", "Method doesn't allow"), {}))
    p = make("gemini", wire)
    with pytest.raises(BackendError, match=r"HTTP 403: Method doesn't allow.*GEMINI_API_KEY"):
        p.send(p.text_body([ChatMessage("user", "hi")], Decoding()))


def test_429_retry_delay_in_the_body_is_honoured():
    retry = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}]
    wire = Wire(ok()).queue((429, error(429, "RESOURCE_EXHAUSTED", "quota", retry), {}))
    p = make("gemini", wire)
    assert p.send(p.text_body([ChatMessage("user", "hi")], Decoding())).retries == 1
    assert len(p.waits) == 1 and 3.0 <= p.waits[0] < 3.5


def test_500_retried_then_fails_the_request():
    wire = Wire(ok()).queue(*[(500, error(500, "INTERNAL", "oops"), {})] * 3)
    p = make("gemini", wire)
    with pytest.raises(RequestFailed, match="HTTP 500 after 2 retries: oops"):
        p.send(p.text_body([ChatMessage("user", "hi")], Decoding()))


def test_image_tokens():
    p = make("gemini", Wire(ok()))
    assert p.image_tokens(384, 300) == 258
    assert p.image_tokens(1536, 800) == 258 * 2 * 2
