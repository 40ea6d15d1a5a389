"""Issue #14 through the hosted captioners and text LLMs, against the fake servers on 127.0.0.1
answering as the vendors document (docs.anthropic.com/en/api/messages and /errors; OpenAI's
chat completion object; the request-level details are in tests/providers/test_vendor_semantics.py).
"""

from __future__ import annotations

import pytest
from PIL import Image
from provider_fakes import KEY, Reply

from captionkit.captioners import registry
from captionkit.errors import BackendError, ConfigError
from captionkit.types import CaptionRequest, Decoding


def make(server, spec, **options):
    options.setdefault("api_key", KEY)
    options.setdefault("max_retries", 1)
    cap = registry.create(spec, base_url=server.base_url, **options)
    cap.client.sleep = lambda s: None
    return cap


def run(cap, request):
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    return cap.caption_batch([cap.preprocess(image, request)], request)[0]


def claude(text, stop="end_turn", usage=(50, 10)):
    """A Messages response; ``stop_reason`` one of end_turn, max_tokens, stop_sequence,
    tool_use, pause_turn, refusal (Messages API reference)."""
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": text}] if text else [],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }


def test_anthropic_n_candidates_are_sampled_not_n_identical_greedy_requests(fake_server):
    """Issue item 3: Messages has no ``n``, so N candidates are N requests; greedy they would
    be one caption N times at N times the price. They are sampled at the request's
    temperature (1.0 by default, inside Claude's 0-1), and the output says so."""
    server = fake_server("anthropic")
    server.queue(
        Reply(200, claude("A red square.")),
        Reply(200, claude("A crimson tile.")),
        Reply(200, claude("A red box.")),
    )
    with make(server, "anthropic:claude-haiku-4-5") as cap:
        out = run(cap, CaptionRequest(style="short", num_captions=3))
    temps = [r.json.get("temperature") for r in server.requests]
    assert temps == [1.0, 1.0, 1.0]
    assert [c.text for c in out.candidates] == ["A red square.", "A crimson tile.", "A red box."]
    assert "3 candidates sampled at temperature 1" in out.extra["sampling"]


def test_anthropic_temperature_range_is_checked_before_any_request(fake_server):
    """Issue item 5: Claude's temperature is 0-1; 1.5 is one ConfigError line, not a 400 for
    every image."""
    server = fake_server("anthropic")
    with pytest.raises(ConfigError, match="anthropic accepts 0 to 1"):
        make(server, "anthropic:claude-haiku-4-5", temperature=1.5)
    with (
        make(server, "anthropic:claude-haiku-4-5") as cap,
        pytest.raises(ConfigError, match=r"--temperature 1.5 is out of range"),
    ):
        run(cap, CaptionRequest(decoding=Decoding(do_sample=True, temperature=1.5)))
    assert server.requests == []


def test_refused_and_truncated_answers_fail_but_their_usage_counts(fake_server):
    """Issue items 9 and 10: "A dog runs across" cut at max_tokens is not a caption, a
    refusal is not either; both were billed, so --max-cost and the summary count them."""
    server = fake_server("anthropic")
    server.queue(
        Reply(200, claude("A dog runs across", stop="max_tokens", usage=(1500, 1024))),
        Reply(200, claude("", stop="refusal", usage=(1500, 3))),
    )
    with make(server, "anthropic:claude-haiku-4-5") as cap:
        cut = run(cap, CaptionRequest())
        refused = run(cap, CaptionRequest())
        stats = cap.stats()
    assert cut.candidates == [] and "cut off by the output cap of 1024 tokens" in cut.error
    assert "'A dog runs across'" in cut.error
    assert refused.candidates == [] and "refused" in refused.error
    assert cut.extra["usage"] == {"input_tokens": 1500, "output_tokens": 1024}
    assert stats["input_tokens"] == 3000 and stats["output_tokens"] == 1027
    assert stats["failed"] == 2


def test_max_cost_counts_a_refused_answer(fake_server):
    """A refusal billed at 100,000 input tokens moves the spend toward --max-cost like a caption."""
    server = fake_server("anthropic")
    server.queue(Reply(200, claude("", stop="refusal", usage=(100_000, 0))))
    prices = {"price_per_1k_input": 1.0, "price_per_1k_output": 1.0, "max_cost": 100.01}
    with make(server, "anthropic:claude-haiku-4-5", **prices) as cap:
        assert "refused" in run(cap, CaptionRequest()).error
        assert cap.stats()["cost"] == pytest.approx(100.0)
        assert "max_cost 100.01 reached" in run(cap, CaptionRequest()).error
    assert len(server.requests) == 1


def test_one_refused_anthropic_candidate_keeps_the_others(fake_server):
    """Issue item 11 on a vendor without ``n``: the refused call's reason is kept in
    ``extra``, the other candidates are the output."""
    server = fake_server("anthropic")
    server.queue(
        Reply(200, claude("A red square.")),
        Reply(200, claude("", stop="refusal")),
        Reply(200, claude("A red box.")),
    )
    with make(server, "anthropic:claude-haiku-4-5") as cap:
        out = run(cap, CaptionRequest(num_captions=3))
    assert out.error is None
    assert [c.text for c in out.candidates] == ["A red square.", "A red box."]
    assert "refused" in out.extra["failed_candidates"][0]


def test_billing_error_stops_the_run(fake_server):
    """docs.anthropic.com/en/api/errors: 402 billing_error. Not one image's failure."""
    server = fake_server("anthropic")
    body = {
        "type": "error",
        "error": {"type": "billing_error", "message": "Your credit balance is too low."},
    }
    server.queue(Reply(402, body))
    with (
        make(server, "anthropic:claude-haiku-4-5") as cap,
        pytest.raises(BackendError, match=r"billing problem \(billing_error\): HTTP 402"),
    ):
        run(cap, CaptionRequest())
    assert len(server.requests) == 1


def test_missing_key_names_every_source_tried(monkeypatch):
    """Issue item 12: the error says where a key may come from: the flag, the backend's
    config table, the environment variables."""
    cap = registry.create("anthropic:claude-haiku-4-5")
    with pytest.raises(BackendError) as err:
        cap.headers()
    msg = str(err.value)
    assert "--api-key" in msg and "[backends.anthropic]" in msg and "ANTHROPIC_API_KEY" in msg


def test_text_llm_key_reaches_it_and_its_error_names_the_sources(fake_server, monkeypatch):
    """Issue item 12, the text LLM side: an explicit key (what the grounded writer and
    --rewrite pass from --api-key or a config table) is sent; without one, the environment
    variable is; without both, the error names the caller's source and the variables."""
    from captionkit.llm.openai_compat import AnthropicLLM

    with pytest.raises(BackendError) as err:
        AnthropicLLM("claude-haiku-4-5", key_source="--api-key (grounded writer)")
    assert "--api-key (grounded writer)" in str(err.value)
    assert "ANTHROPIC_API_KEY" in str(err.value)
    server = fake_server("anthropic")
    llm = AnthropicLLM("claude-haiku-4-5", base_url=server.root, api_key=KEY)
    from captionkit.llm.base import ChatMessage

    assert llm.chat([[ChatMessage("user", "hi")]], Decoding())[0]
    assert server.requests[0].headers["x-api-key"] == KEY
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    assert AnthropicLLM("claude-haiku-4-5", base_url=server.root).provider.headers()


def test_hosted_llm_options_carry_the_key_to_hosted_specs_only():
    """What the grounded writer and --rewrite hand to ``load_llm``: the key and where it came
    from for a hosted spec; nothing key-related for a local model (which takes none)."""
    from captionkit.llm.openai_compat import hosted_llm_options

    given = {"api_key": "k", "base_url": None}
    assert hosted_llm_options("anthropic:claude-x", given, key_source="--api-key") == {
        "api_key": "k",
        "key_source": "--api-key",
    }
    assert hosted_llm_options("gguf:/m.gguf", given, key_source="--api-key") == {}
