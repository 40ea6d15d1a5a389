"""Issue #14: the vendors' own rules, on MockTransport answers shaped exactly as documented.

Each test names where its answer comes from. Bodies quoted from vendor answers were read in
the public record: OpenAI's error object (``{"error": {"message", "type", "param", "code"}}``,
platform.openai.com/docs/guides/error-codes) as users pasted it from the API in GitHub issues;
Anthropic's error shapes from docs.anthropic.com/en/api/errors; Gemini's ``google.rpc.Status``
with ``QuotaFailure``/``RetryInfo``/``ErrorInfo`` details (ai.google.dev/gemini-api/docs/
troubleshooting, googleapis/google/rpc/error_details.proto) and the ``FinishReason``/
``BlockedReason`` enums of google-genai ``types.py``.
"""

from __future__ import annotations

import json
import re
import threading

import httpx
import pytest
from provider_wire import IMAGE, Wire, make

from captionkit.errors import BackendError, ConfigError
from captionkit.http import APIClient, RetryPolicy
from captionkit.llm.base import ChatMessage
from captionkit.providers import get_provider
from captionkit.providers.base import RequestFailed
from captionkit.types import Decoding

HI = [ChatMessage("user", "hi")]
SAMPLED = Decoding(max_new_tokens=60, do_sample=True, temperature=0.7, top_p=0.9, stop=("\n",))


def openai_ok(*choices, usage=(100, 20)):
    """A chat.completion object (OpenAI API reference, "The chat completion object")."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text, "refusal": refusal},
                "finish_reason": finish,
            }
            for i, (text, finish, refusal) in enumerate(choices)
        ],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]},
    }


def openai_error(message, code, param=None, type_="invalid_request_error"):
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def anthropic_ok(text, stop="end_turn", usage=(50, 10)):
    """A Messages response (docs.anthropic.com/en/api/messages, stop_reason values:
    end_turn, max_tokens, stop_sequence, tool_use, pause_turn, refusal)."""
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": text}] if text else [],
        "stop_reason": stop,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }


def anthropic_error(type_, message):
    """docs.anthropic.com/en/api/errors: ``{"type": "error", "error": {"type", "message"}}``."""
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": "req_1"}


def gemini_ok(*cands, usage=(300, 10, 0), feedback=None):
    """GenerateContentResponse (google-genai types: Candidate.finish_reason, usageMetadata
    promptTokenCount/candidatesTokenCount/thoughtsTokenCount, promptFeedback.blockReason)."""
    body = {
        "candidates": [
            {
                "content": {"parts": [{"text": t}] if t else [], "role": "model"},
                "finishReason": f,
                "index": i,
            }
            for i, (t, f) in enumerate(cands)
        ],
        "usageMetadata": {
            "promptTokenCount": usage[0],
            "candidatesTokenCount": usage[1],
            "thoughtsTokenCount": usage[2],
        },
    }
    if feedback:
        body["promptFeedback"] = feedback
    return body


# -- 1. sampling parameters only when asked for; a model's known constraints ---------------------
@pytest.mark.parametrize("kind", ["openai", "openai-compatible", "gemini", "anthropic"])
def test_greedy_sends_no_temperature_or_top_p(kind):
    """Greedy (no --sample) sends no sampling parameter at all: reasoning models (OpenAI
    reasoning guide: "temperature, top_p ... are not supported") and recent Claude models
    reject them."""
    wire = Wire({})
    p = make(kind, wire)
    for body in (
        p.text_body(HI, Decoding(top_p=0.5)),
        p.image_body(IMAGE, "S", "I", Decoding(top_p=0.5)),
    ):
        flat = json.dumps(body)
        assert "temperature" not in flat and "top_p" not in flat and "topP" not in flat


@pytest.mark.parametrize(
    ("model", "effort"),
    [
        ("o3", "low"),
        ("o4-mini", "low"),
        ("o1", "low"),
        ("gpt-5", "minimal"),
        ("gpt-5-mini", "minimal"),
        ("gpt-5.1", "low"),
        ("openai/o3-mini", "low"),
    ],
)
def test_openai_reasoning_models_get_no_sampling_or_stop_and_low_effort(model, effort):
    """OpenAI reasoning models (o1/o3/o4-mini/gpt-5) answer temperature, top_p and stop with
    400 ``unsupported_parameter`` (crewAI#2738: "Unsupported parameter: 'stop' is not
    supported with this model."; lobehub#7747 for top_p), and their reasoning tokens count
    against ``max_completion_tokens`` (OpenAI reasoning guide): none of those parameters is
    sent, the cap stays ``max_completion_tokens`` and ``reasoning_effort`` is low."""
    wire = Wire(openai_ok(("A dog.", "stop", None)))
    p = get_provider("openai")(model, api_key="k", client=make("openai", wire).client)
    p.send(p.text_body(HI, SAMPLED))
    body = wire.body
    assert "temperature" not in body and "top_p" not in body and "stop" not in body
    assert body["max_completion_tokens"] == 60 and body["reasoning_effort"] == effort
    # a chat model keeps them, and gets no reasoning_effort
    chat = get_provider("openai")("gpt-5-chat-latest", api_key="k", client=p.client)
    body = chat.text_body(HI, SAMPLED)
    assert body["temperature"] == 0.7 and body["stop"] == ["\n"]
    assert "reasoning_effort" not in body


@pytest.mark.parametrize(
    ("answer", "param"),
    [
        # pal-mcp-server#78, pasted from the API: o3 and a temperature other than 1
        (
            openai_error(
                "Unsupported value: 'temperature' does not support 0.7 with this model. "
                "Only the default (1) value is supported.",
                "unsupported_value",
                "temperature",
            ),
            "temperature",
        ),
        # eva-agent#83 / livekit agents#1470: o3-mini and any temperature
        (
            openai_error(
                "Unsupported parameter: 'temperature' is not supported with this model.",
                "unsupported_parameter",
                "temperature",
            ),
            "temperature",
        ),
    ],
)
def test_openai_400_unsupported_parameter_retried_once_and_remembered(answer, param):
    """An unknown model name (a new release, a proxy alias) that rejects a parameter is
    retried once without it, and the parameter is not sent again this run."""
    wire = Wire(openai_ok(("A dog.", "stop", None))).queue((400, answer, {}))
    p = make("openai", wire)
    assert p.send(p.text_body(HI, SAMPLED)).texts == ["A dog."]
    assert param in json.loads(wire.requests[0].content)
    assert param not in json.loads(wire.requests[1].content)
    p.send(p.text_body(HI, SAMPLED))  # the next request: no second 400
    assert len(wire.requests) == 3 and param not in wire.body
    assert wire.body["top_p"] == 0.9  # only the named one is dropped


def test_stop_rejected_by_o4_mini_is_dropped_and_cut_locally():
    """Issue item 2: the writer always sends ``stop``, which o3/o4-mini reject with 400
    ``unsupported_parameter`` param ``stop`` (griptape#1915 / dify#18971, pasted from the API).
    The text LLM retries without it and cuts the answer at the stop string itself."""
    from captionkit.llm.openai_compat import OpenAILLM

    stop_error = openai_error(
        "Unsupported parameter: 'stop' is not supported with this model.",
        "unsupported_parameter",
        "stop",
    )
    wire = Wire(openai_ok(("A dog on grass.\nAnd more.", "stop", None))).queue(
        (400, stop_error, {})
    )
    client = make("openai", wire).client
    llm = OpenAILLM("my-alias", api_key="k", client=client)
    config = Decoding(max_new_tokens=60, stop=("\n",))
    assert llm.chat([HI], config) == ["A dog on grass."]
    assert [("stop" in json.loads(r.content)) for r in wire.requests] == [True, False]
    assert llm.chat([HI], config) == ["A dog on grass."]
    assert len(wire.requests) == 3  # remembered: no second 400


def test_unsupported_parameter_is_learned_once_across_threads():
    """Captioners send from a thread pool: every thread's request ends up without the
    rejected parameter, and none fails."""
    rejected = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if "temperature" in body:
            rejected.append(1)
            answer = openai_error(
                "Unsupported parameter: 'temperature' is not supported with this model.",
                "unsupported_parameter",
                "temperature",
            )
            return httpx.Response(400, json=answer)
        return httpx.Response(200, json=openai_ok(("A dog.", "stop", None)))

    client = APIClient(retry=RetryPolicy(max_retries=0), transport=httpx.MockTransport(handler))
    p = get_provider("openai")("new-model", api_key="k", client=client, concurrency=8)
    results: list[object] = []

    def one() -> None:
        results.append(p.send(p.text_body(HI, SAMPLED)).texts)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [["A dog."]] * 16
    assert "temperature" in p.unsupported and len(rejected) <= 16
    p.send(p.text_body(HI, SAMPLED))
    assert len(rejected) <= 16  # nothing new rejected after learning


def test_anthropic_400_naming_top_p_retried_without_it():
    """Claude Sonnet/Haiku 4.5 and Opus 4.1 answer 400 invalid_request_error "`temperature`
    and `top_p` cannot both be specified for this model. Please use only one." (quoted from
    the API in litellm#15097, gptme#1110); a range error is not a parameter to drop."""
    answer = anthropic_error(
        "invalid_request_error",
        "`temperature` and `top_p` cannot both be specified for this model. Please use only one.",
    )
    wire = Wire(anthropic_ok("A dog.")).queue((400, answer, {}))
    p = make("anthropic", wire)
    body = p.text_body(HI, Decoding(do_sample=True, temperature=0.5, top_p=0.9))
    body["top_p"] = 0.9  # as an older build sent both
    assert p.send(body).texts == ["A dog."]
    assert "top_p" not in wire.body and wire.body["temperature"] == 0.5
    ranged = anthropic_error("invalid_request_error", "temperature: range: 0..1")
    wire.queue((400, ranged, {}))
    with pytest.raises(RequestFailed, match="range"):
        p.send(p.text_body(HI, Decoding(do_sample=True, temperature=0.5)))


def test_gemini_thinking_budget_rejected_is_dropped():
    """Gemini 2.5 Pro cannot turn thinking off: a 0 budget is a 400 INVALID_ARGUMENT ("Budget
    0 is invalid. This model only works in thinking mode.", ai.google.dev thinking docs:
    2.5 Pro's budget is 128-32768)."""
    answer = {
        "error": {
            "code": 400,
            "status": "INVALID_ARGUMENT",
            "message": "Budget 0 is invalid. This model only works in thinking mode.",
        }
    }
    wire = Wire(gemini_ok(("A dog.", "STOP"))).queue((400, answer, {}))
    p = get_provider("gemini")("gemini-2.5-flash", api_key="k", client=make("gemini", wire).client)
    assert p.text_body(HI, Decoding())["generationConfig"]["thinkingConfig"] == {
        "thinkingBudget": 0
    }
    assert p.send(p.text_body(HI, Decoding())).texts == ["A dog."]
    assert "thinkingConfig" not in wire.body["generationConfig"]


# -- 4. thinking budget; an answer cut by the cap is a failure ----------------------------------
@pytest.mark.parametrize(
    ("model", "thinking"),
    [
        ("gemini-2.5-flash", {"thinkingBudget": 0}),
        ("gemini-2.5-flash-lite", {"thinkingBudget": 0}),
        ("models/gemini-2.5-pro", {"thinkingBudget": 128}),
        ("gemini-3-pro-preview", {"thinkingLevel": "low"}),
        ("gemini-2.0-flash", None),
        ("gemini-2.5-flash-image", None),
    ],
)
def test_gemini_thinking_set_low_where_supported(model, thinking):
    """ai.google.dev/gemini-api/docs/thinking: thinkingBudget 0 turns thinking off on 2.5 Flash
    and Flash-Lite, 2.5 Pro's minimum is 128, Gemini 3 takes thinkingLevel; thought tokens
    count against maxOutputTokens."""
    p = get_provider("gemini")(model, api_key="k")
    gen = p.image_body(IMAGE, "S", "I", Decoding())["generationConfig"]
    assert gen.get("thinkingConfig") == thinking


@pytest.mark.parametrize(
    ("kind", "answer"),
    [
        # OpenAI: finish_reason "length" and content "" when reasoning ate the cap
        ("openai", openai_ok(("", "length", None), usage=(100, 60))),
        ("anthropic", anthropic_ok("", stop="max_tokens", usage=(50, 60))),
        ("gemini", gemini_ok(("", "MAX_TOKENS"), usage=(300, 0, 60))),
    ],
)
def test_empty_answer_cut_by_the_cap_fails_with_the_reason(kind, answer):
    """Issue item 4: reasoning/thinking tokens fill the cap and no text is left; that is a
    failure naming the cap, never an empty caption, and its tokens are still billed."""
    p = make(kind, Wire(answer))
    with pytest.raises(RequestFailed, match="cut off by the output cap of 60 tokens") as err:
        p.send(p.text_body(HI, Decoding(max_new_tokens=60)))
    assert "no text" in str(err.value)
    assert sum(err.value.usage.values()) > 0


# -- 5. range checks --------------------------------------------------------------------------
def test_range_checks_are_one_line_config_errors_before_any_request():
    """Anthropic temperature is 0-1 (Messages API reference: "Ranges from 0.0 to 1.0"), OpenAI
    and Gemini 0-2, Gemini seed an int32 (GenerationConfig.seed: int32)."""
    wire = Wire({})
    anthropic = make("anthropic", wire)
    with pytest.raises(
        ConfigError, match=r"--temperature 1.5 is out of range: anthropic accepts 0 to 1"
    ):
        anthropic.check_decoding(Decoding(do_sample=True, temperature=1.5))
    openai = make("openai", wire)
    openai.check_decoding(Decoding(do_sample=True, temperature=1.5))
    with pytest.raises(ConfigError, match="accepts 0 to 2"):
        openai.check_decoding(Decoding(do_sample=True, temperature=2.5))
    gemini = make("gemini", wire)
    gemini.check_decoding(Decoding(seed=2**31 - 1))
    with pytest.raises(ConfigError, match=r"--seed 2147483648 is out of range"):
        gemini.check_decoding(Decoding(seed=2**31))
    assert wire.requests == []


def test_text_llm_checks_ranges_before_any_request():
    from captionkit.llm.openai_compat import AnthropicLLM

    wire = Wire(anthropic_ok("A dog."))
    llm = AnthropicLLM("claude-x", api_key="k", client=make("anthropic", wire).client)
    with pytest.raises(ConfigError, match="anthropic accepts 0 to 1"):
        llm.chat([HI, HI], Decoding(do_sample=True, temperature=1.2))
    assert wire.requests == []


# -- 6, 7. errors that stop the run --------------------------------------------------------------
def test_gemini_api_key_invalid_400_stops_the_run():
    """Gemini's answer to a bad key, as documented in the troubleshooting guide and returned
    by generativelanguage.googleapis.com: HTTP 400, status INVALID_ARGUMENT, an ErrorInfo
    detail with reason API_KEY_INVALID (not 401)."""
    bad_key = {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            ],
        }
    }
    wire = Wire({}).queue((400, bad_key, {}))
    p = make("gemini", wire)
    with pytest.raises(BackendError, match="HTTP 400: API key not valid"):
        p.send(p.image_body(IMAGE, "S", "I", Decoding()))
    assert len(wire.requests) == 1


@pytest.mark.parametrize(
    ("status", "answer", "cause"),
    [
        # docs.anthropic.com/en/api/errors: 402 billing_error
        (
            402,
            anthropic_error("billing_error", "Your credit balance is too low."),
            "billing problem (billing_error)",
        ),
        # the Console's own wording, answered as a 400 invalid_request_error
        (
            400,
            anthropic_error(
                "invalid_request_error",
                "Your credit balance is too low to "
                "access the Anthropic API. Please go to Plans & Billing to "
                "upgrade or purchase credits.",
            ),
            "credit balance too low",
        ),
    ],
)
def test_anthropic_billing_stops_the_run(status, answer, cause):
    wire = Wire({}).queue((status, answer, {}))
    p = make("anthropic", wire)
    with pytest.raises(BackendError, match=re.escape(f"anthropic:m1: {cause}: HTTP {status}")):
        p.send(p.text_body(HI, Decoding()))
    assert len(wire.requests) == 1


def test_openai_insufficient_quota_on_the_text_llm_path_is_not_retried():
    """OpenAI error codes guide: 429 "You exceeded your current quota, please check your plan
    and billing details", code insufficient_quota: waiting does not cure it."""
    from captionkit.llm.openai_compat import OpenAILLM

    quota = openai_error(
        "You exceeded your current quota, please check your plan and billing details.",
        "insufficient_quota",
        type_="insufficient_quota",
    )
    wire = Wire({}).queue((429, quota, {"retry-after": "1"}))
    llm = OpenAILLM("gpt-4o-mini", api_key="k", client=make("openai", wire).client)
    with pytest.raises(BackendError, match=r"out of quota or credit \(insufficient_quota\)"):
        llm.chat([HI], Decoding())
    assert len(wire.requests) == 1


def test_gemini_per_day_quota_stops_the_run_without_waiting():
    """The free tier's daily cap as the API returns it (google-gemini/gemini-cli#8437): 429
    RESOURCE_EXHAUSTED with a QuotaFailure naming ``GenerateRequestsPerDayPerProjectPerModel-
    FreeTier`` and a RetryInfo of 37 s that no wait can honour; a per-minute quota is still
    waited for."""

    def quota(quota_id):
        return {
            "error": {
                "code": 429,
                "status": "RESOURCE_EXHAUSTED",
                "message": "You exceeded your current quota, please check your plan and billing "
                "details.",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [
                            {
                                "quotaMetric": "generativelanguage.googleapis.com/"
                                "generate_content_free_tier_requests",
                                "quotaId": quota_id,
                                "quotaDimensions": {
                                    "location": "global",
                                    "model": "gemini-2.5-flash",
                                },
                            }
                        ],
                    },
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"},
                ],
            }
        }

    wire = Wire(gemini_ok(("A dog.", "STOP")))
    wire.queue((429, quota("GenerateRequestsPerDayPerProjectPerModel-FreeTier"), {}))
    p = make("gemini", wire)
    with pytest.raises(BackendError, match=r"daily quota exhausted \(GenerateRequestsPerDay"):
        p.send(p.text_body(HI, Decoding()))
    assert len(wire.requests) == 1 and p.waits == []
    wire.queue((429, quota("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"), {}))
    assert p.send(p.text_body(HI, Decoding())).texts == ["A dog."]
    assert 37 <= p.waits[0] < 38


# -- 9, 10, 11. answers that must not pass as captions ---------------------------------------------
@pytest.mark.parametrize(
    ("kind", "answer", "reason"),
    [
        ("openai", openai_ok(("A dog runs across", "length", None)), "finish reason length"),
        ("openai", openai_ok(("A dog", "content_filter", None)), "finish reason content_filter"),
        (
            "anthropic",
            anthropic_ok("A dog runs across", stop="max_tokens"),
            "finish reason max_tokens",
        ),
        ("anthropic", anthropic_ok("A dog", stop="refusal"), "refused"),
        ("gemini", gemini_ok(("A dog runs across", "MAX_TOKENS")), "finish reason MAX_TOKENS"),
        ("gemini", gemini_ok(("A dog", "SAFETY")), "finish reason SAFETY"),
        ("gemini", gemini_ok(("Lyrics: la la", "RECITATION")), "finish reason RECITATION"),
    ],
)
def test_truncated_or_blocked_partial_text_fails_with_reason_and_usage(kind, answer, reason):
    """Issue items 9 and 10: finish reasons as the vendors document them (OpenAI
    finish_reason length/content_filter; Anthropic stop_reason max_tokens/refusal; Gemini
    FinishReason MAX_TOKENS/SAFETY/RECITATION). Partial text is not a caption; the usage is
    read before judging, so the failure still carries what was billed."""
    p = make(kind, Wire(answer))
    with pytest.raises(RequestFailed, match=reason) as err:
        p.send(p.image_body(IMAGE, "S", "I", Decoding()))
    assert err.value.usage["input_tokens"] > 0 and err.value.usage["output_tokens"] > 0


def test_gemini_blocked_prompt_carries_its_usage():
    """promptFeedback.blockReason (BlockedReason: SAFETY, OTHER, BLOCKLIST, PROHIBITED_CONTENT,
    IMAGE_SAFETY) with no candidates: the prompt tokens are billed."""
    answer = gemini_ok(usage=(258, 0, 0), feedback={"blockReason": "PROHIBITED_CONTENT"})
    p = make("gemini", Wire(answer))
    with pytest.raises(RequestFailed, match="blocked by the provider: PROHIBITED_CONTENT") as err:
        p.send(p.image_body(IMAGE, "S", "I", Decoding()))
    assert err.value.usage == {"input_tokens": 258, "output_tokens": 0}


@pytest.mark.parametrize(
    ("kind", "answer"),
    [
        (
            "openai",
            openai_ok(
                ("A dog.", "stop", None),
                (None, "stop", "I can't help with that."),
                ("A brown dog.", "stop", None),
            ),
        ),
        ("gemini", gemini_ok(("A dog.", "STOP"), ("", "SAFETY"), ("A brown dog.", "STOP"))),
    ],
)
def test_one_refused_candidate_keeps_the_good_ones(kind, answer):
    """Issue item 11: with n / candidateCount 3, one refused (OpenAI ``message.refusal``) or
    blocked (Gemini finishReason SAFETY) candidate no longer discards the other two."""
    p = make(kind, Wire(answer))
    done = p.send(p.image_body(IMAGE, "S", "I", Decoding(do_sample=True), n=3))
    assert [t.strip().rstrip(" 0123456789") for t in done.texts] == ["A dog.", "A brown dog."]
    assert len(done.failures) == 1
    assert "refused" in done.failures[0] or "SAFETY" in done.failures[0]


def test_max_tokens_rejected_by_a_proxied_reasoning_model_becomes_max_completion_tokens():
    """o3 behind an OpenAI-compatible proxy: 400 "Unsupported parameter: 'max_tokens' is not
    supported with this model. Use 'max_completion_tokens' instead." (code
    unsupported_parameter, param max_tokens; quoted in memochou1993/gpt-ai-assistant#361)."""
    answer = openai_error(
        "Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead.",
        "unsupported_parameter",
        "max_tokens",
    )
    wire = Wire(openai_ok(("A dog.", "stop", None))).queue((400, answer, {}))
    p = make("openai-compatible", wire)
    assert p.send(p.text_body(HI, Decoding(max_new_tokens=40))).texts == ["A dog."]
    assert "max_tokens" not in wire.body and wire.body["max_completion_tokens"] == 40
