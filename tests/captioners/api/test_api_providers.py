"""The hosted backends against fake provider servers that check the documented request shapes."""

from __future__ import annotations

import base64
import io
import json
import logging

import pytest
from PIL import Image
from provider_fakes import (
    KEY,
    Reply,
    anthropic_error,
    gemini_error,
    openai_error,
    openai_ok,
)

from captionkit.captioners import registry
from captionkit.errors import BackendError, ConfigError
from captionkit.types import CaptionRequest, Decoding

SPECS = {
    "openai": "openai:gpt-4o-mini",
    "openai-compatible": "openai-compatible:qwen2-vl",
    "gemini": "gemini:gemini-2.5-flash",
    "anthropic": "anthropic:claude-haiku-4-5",
}


def make(server, **options):
    options.setdefault("api_key", KEY)
    options.setdefault("max_retries", 2)
    cap = registry.create(SPECS[server.kind], base_url=server.base_url, **options)
    cap.waits = []
    cap.client.sleep = cap.waits.append  # record backoff waits instead of sleeping
    return cap


def small(color=(200, 30, 30), size=(64, 48)) -> Image.Image:
    return Image.new("RGB", size, color)


def run(cap, images, request=None):
    request = request or CaptionRequest(style="alt-text")
    return cap.caption_batch([cap.preprocess(im, request) for im in images], request)


@pytest.mark.parametrize("kind", list(SPECS))
def test_caption_batch_sends_documented_request(fake_server, kind):
    server = fake_server(kind)
    keyless = {"api_key": None} if kind == "openai-compatible" else {}  # a local server
    with make(server, **keyless) as cap:
        outs = run(cap, [small(), small((0, 0, 255))])
    assert [o.error for o in outs] == [None, None]
    assert all(o.candidates[0].text == "A brown dog runs across the green grass." for o in outs)
    assert all(o.extra["usage"]["input_tokens"] > 0 for o in outs)
    assert len(server.requests) == 2
    body = server.requests[0].json
    text = json.dumps(body)
    assert "under 125 characters" in text  # the alt-text style's zero-shot instruction
    assert "Reply with the requested text only" in text  # the system prompt
    if kind == "anthropic":
        assert body["messages"][0]["content"][0]["type"] == "image"  # image before text
        assert body["max_tokens"] >= 60
    if kind == "gemini":
        assert body["contents"][0]["parts"][0]["inline_data"]["mime_type"] == "image/jpeg"
        assert "x-goog-api-key" in server.requests[0].headers
    if kind == "openai":
        assert "max_completion_tokens" in body and "max_tokens" not in body
    if kind == "openai-compatible":
        assert "max_tokens" in body
        assert "authorization" not in server.requests[0].headers  # no key configured


@pytest.mark.parametrize("kind", list(SPECS))
def test_large_image_resized_and_reencoded(fake_server, photo, kind):
    server = fake_server(kind)
    with make(server) as cap:
        out = run(cap, [photo.convert("RGBA")])[0]
    assert out.error is None
    body = server.requests[0].json
    blob = json.dumps(body)
    b64 = blob.split("base64,")[1] if kind.startswith("openai") else None
    if kind == "gemini":
        b64 = body["contents"][0]["parts"][0]["inline_data"]["data"]
    if kind == "anthropic":
        b64 = body["messages"][0]["content"][0]["source"]["data"]
    b64 = b64.split('"')[0]
    size = Image.open(io.BytesIO(base64.b64decode(b64))).size
    limit = {"openai": 2048, "openai-compatible": 2048, "gemini": 3072, "anthropic": 1568}[kind]
    assert max(size) <= limit
    assert abs(size[0] / size[1] - 1.5) < 0.01  # aspect kept
    if kind == "anthropic":
        assert size[0] * size[1] <= 1_150_000


@pytest.mark.parametrize("kind", list(SPECS))
def test_429_with_retry_after_is_retried_and_honoured(fake_server, kind):
    server = fake_server(kind)
    if kind == "gemini":
        server.queue(Reply(429, gemini_error(429, "RESOURCE_EXHAUSTED", "quota", delay="3s")))
    elif kind == "anthropic":
        server.queue(
            Reply(429, anthropic_error("rate_limit_error", "slow down"), {"retry-after": "3"})
        )
    else:
        server.queue(
            Reply(
                429,
                openai_error("Rate limit reached", "requests", "rate_limit_exceeded"),
                {"retry-after": "3"},
            )
        )
    with make(server) as cap:
        out = run(cap, [small()])[0]
        stats = cap.stats()
    assert out.error is None and out.extra["retries"] == 1
    assert len(cap.waits) == 1 and 3.0 <= cap.waits[0] < 3.5  # Retry-After, plus a little jitter
    assert stats["retries"] == 1 and stats["requests"] == 2


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_5xx_backoff_then_give_up_fails_that_image_only(fake_server, kind):
    server = fake_server(kind)
    err = (
        anthropic_error("overloaded_error", "Overloaded")
        if kind == "anthropic"
        else openai_error("The server had an error", "server_error")
    )
    status = 529 if kind == "anthropic" else 500
    server.queue(*[Reply(status, err)] * 3)  # first image: 3 attempts, all failing
    with make(server, concurrency=1) as cap:
        outs = run(cap, [small(), small()])
        stats = cap.stats()
    assert outs[0].error.startswith(f"HTTP {status} after 2 retries")
    assert "Overloaded" in outs[0].error or "server had an error" in outs[0].error
    assert outs[1].error is None  # the next image is unaffected
    # exponential backoff with jitter: second wait longer than the first
    assert len(cap.waits) == 2 and 0.5 <= cap.waits[0] < cap.waits[1] <= 3.0 + 1.0
    assert stats["failed"] == 1 and stats["retries"] == 2


def test_400_bad_image_fails_only_that_image_with_provider_message(fake_server):
    server = fake_server("openai")
    server.queue(
        Reply(
            400,
            openai_error(
                "You uploaded an unsupported image.",
                "invalid_request_error",
                "invalid_image_format",
            ),
        )
    )
    with make(server, concurrency=1) as cap:
        outs = run(cap, [small(), small()])
    assert outs[0].error == "HTTP 400: You uploaded an unsupported image."
    assert outs[1].error is None
    assert cap.waits == []  # a 400 is never retried
    assert len(server.requests) == 2


def test_timeout_is_retried_then_fails_image(fake_server):
    server = fake_server("anthropic")
    server.queue(Reply(200, {"never": "read"}, delay=1.5), Reply(200, {"x": 1}, delay=1.5))
    with make(server, timeout=0.3, max_retries=1) as cap:
        out = run(cap, [small()])[0]
    assert "timed out after 0.3 s" in out.error and "2 attempts" in out.error
    assert len(cap.waits) == 1


def test_malformed_json_fails_image(fake_server):
    server = fake_server("gemini")
    server.queue(Reply(200, '{"candidates": [ {"content": '))
    with make(server) as cap:
        outs = run(cap, [small()])
    assert outs[0].error == "malformed JSON in the response (HTTP 200)"


@pytest.mark.parametrize("kind", list(SPECS))
def test_auth_error_raises_backend_error_naming_env_var(fake_server, kind, caplog):
    server = fake_server(kind)
    if kind == "openai-compatible":  # local servers need no key; give one the server rejects
        server.queue(Reply(401, openai_error("Invalid API key", "invalid_request_error")))
    with make(server, api_key="wrong-key") as cap, pytest.raises(BackendError) as err:
        run(cap, [small()])
    msg = str(err.value)
    assert "HTTP 40" in msg and "\n" not in msg
    env = {
        "openai": "OPENAI_API_KEY",
        "openai-compatible": "OPENAI_COMPATIBLE_API_KEY",
        "gemini": "GEMINI_API_KEY",
        "anthropic": "ANTHROPIC_API_KEY",
    }[kind]
    assert env in msg
    assert "wrong-key" not in msg and "wrong-key" not in caplog.text


def test_insufficient_quota_429_is_fatal_not_retried(fake_server):
    server = fake_server("openai")
    server.queue(
        Reply(
            429,
            openai_error(
                "You exceeded your current quota.", "insufficient_quota", "insufficient_quota"
            ),
        )
    )
    with make(server) as cap, pytest.raises(BackendError, match="exceeded your current quota"):
        run(cap, [small()])


def test_missing_key_names_env_var(monkeypatch):
    # Building needs no key (a dry run estimates without one); the first batch asks for it.
    cap = registry.create("gemini:gemini-2.5-flash")
    with pytest.raises(BackendError, match="set GEMINI_API_KEY or GOOGLE_API_KEY"):
        run(cap, [small()])
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    assert registry.create("gemini:gemini-2.5-flash").headers()


def test_env_key_used_and_explicit_key_wins(fake_server, monkeypatch):
    server = fake_server("anthropic")
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    cap = registry.create(SPECS["anthropic"], base_url=server.base_url)
    assert run(cap, [small()])[0].error is None
    cap2 = registry.create(SPECS["anthropic"], base_url=server.base_url, api_key="other")
    with pytest.raises(BackendError):
        run(cap2, [small()])


def test_openai_compatible_needs_base_url():
    with pytest.raises(ConfigError, match="--base-url"):
        registry.create("openai-compatible:llava")


def test_unknown_option_is_a_config_error():
    with pytest.raises(ConfigError, match="api_kye"):
        registry.create("openai:gpt-4o-mini", api_kye=KEY)


def test_keys_never_in_logs_results_or_fingerprint(fake_server, caplog):
    caplog.set_level(logging.DEBUG)
    server = fake_server("gemini")
    server.queue(Reply(500, gemini_error(500, "INTERNAL", "oops")))
    with make(server) as cap:
        outs = run(cap, [small()])
        blob = json.dumps([o.extra for o in outs]) + cap.fingerprint()
        blob += cap.options.model_dump_json() + repr(cap.options) + json.dumps(cap.stats())
    assert outs[0].error is None
    assert KEY not in blob and KEY not in caplog.text
    assert "retry 1/2" in caplog.text  # the retry was logged, without the key


def test_json_output_tags_and_schema(fake_server):
    for kind in SPECS:
        server = fake_server(kind, text='{"caption": "A red square on white.", "tags": ["red"]}')
        with make(server, json_output=True) as cap:
            out = run(cap, [small()])[0]
        assert out.candidates[0].text == "A red square on white."
        assert out.extra["tags"] == ["red"]
        body = server.requests[0].json
        if kind.startswith("openai"):
            assert body["response_format"]["json_schema"]["strict"] is True
        elif kind == "gemini":
            assert body["generationConfig"]["responseMimeType"] == "application/json"
            assert body["generationConfig"]["responseSchema"]["type"] == "OBJECT"
        else:
            assert body["output_config"]["format"]["schema"]["required"] == ["caption", "tags"]


def test_num_captions_uses_n_or_repeats(fake_server):
    request = CaptionRequest(style="short", num_captions=3)
    server = fake_server("openai")
    with make(server) as cap:
        run(cap, [small()], request)
    assert server.requests[0].json["n"] == 3 and server.requests[0].json["temperature"] == 1.0
    server = fake_server("anthropic")
    with make(server) as cap:
        out = run(cap, [small()], request)[0]
    assert len(server.requests) == 3  # Messages has no n: one request per candidate
    assert out.extra["usage"]["output_tokens"] == 30


def test_prompt_override_language_and_greedy(fake_server):
    server = fake_server("openai")
    request = CaptionRequest(
        prompt="Name the colour.", language="fr", decoding=Decoding(max_new_tokens=20, seed=7)
    )
    with make(server, omit_sampling=False) as cap:
        run(cap, [small()], request)
    body = server.requests[0].json
    assert body["messages"][1]["content"][0]["text"] == "Name the colour."
    assert "'fr'" in body["messages"][0]["content"]
    # greedy: no temperature on the wire (#14: reasoning models reject any), seed still sent
    assert "temperature" not in body and body["seed"] == 7


def test_style_finish_applied(fake_server):
    server = fake_server("openai", text="Here is the caption: image of a very " + "long " * 40)
    with make(server) as cap:
        out = run(cap, [small()])[0]
    assert len(out.candidates[0].text) <= 125
    assert not out.candidates[0].text.lower().startswith(("here is", "image of"))


def test_usage_cost_and_max_cost(fake_server):
    server = fake_server("openai")
    with make(server, price_per_1k_input=1.0, price_per_1k_output=2.0, concurrency=1) as cap:
        run(cap, [small(), small()])
        stats = cap.stats()
    assert stats["input_tokens"] == 240 and stats["output_tokens"] == 24
    assert stats["cost"] == pytest.approx(0.24 + 0.048)
    est = cap.estimate([(64, 48)] * 10, CaptionRequest(style="alt-text"))
    assert est["images"] == 10 and est["input_tokens"] > 0 and est["cost"] > 0
    # a budget that allows about one request: the rest fail without being sent
    server2 = fake_server("openai")
    with make(
        server2, price_per_1k_input=1.0, price_per_1k_output=2.0, max_cost=0.4, concurrency=1
    ) as cap:
        outs = run(cap, [small()] * 4)
    assert outs[0].error is None
    assert any(o.error and "max_cost" in o.error for o in outs)
    assert len(server2.requests) < 4


def test_concurrency_and_rate_limit(fake_server):
    server = fake_server("openai")
    for _ in range(8):
        server.queue(Reply(200, openai_ok("ok"), delay=0.2))
    with make(server, concurrency=3) as cap:
        outs = run(cap, [small()] * 8)
    assert all(o.error is None for o in outs)
    assert server.max_in_flight == 3
    server2 = fake_server("openai")
    with make(server2, rpm=600) as cap:  # one start every 0.1 s
        run(cap, [small()] * 4)
    assert len(cap.waits) >= 3 and 0.3 <= sum(cap.waits) <= 0.6 + 1e-6  # ~0.1+0.2+0.3 s


def test_fingerprint_ignores_key_and_limits():
    a = registry.create("openai:gpt-4o-mini", api_key="k1", concurrency=2)
    b = registry.create("openai:gpt-4o-mini", api_key="k2", concurrency=8, rpm=10)
    c = registry.create("openai:gpt-4o-mini", api_key="k1", detail="low")
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


@pytest.mark.parametrize("kind", list(SPECS))
def test_capabilities_are_declared_not_probed(kind):
    cls = registry.get_backend(kind)
    assert cls.hosted and cls.thread_safe and cls.multiple_candidates and cls.accepts_prompt
    assert not hasattr(cls, "supports_n")  # one attribute: multiple_candidates


@pytest.mark.parametrize("kind", list(SPECS))
def test_flagged_options_are_marked_for_the_cli(kind):
    fields = registry.get_backend(kind).Options.model_fields
    marked = {
        name: f.description
        for name, f in fields.items()
        if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("cli")
    }
    assert set(marked) == {"api_key", "base_url", "max_cost"}
    assert "OPENAI_API_KEY" in marked["api_key"] and "/v1" in marked["base_url"]
    assert "price_per_1k_input" in marked["max_cost"]
