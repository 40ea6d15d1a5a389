"""What every vendor shares: the registry, error mapping, Decoding in, and a new vendor being
one class that both the image captioners and the text LLMs can use."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint
from typing import Any, ClassVar

import httpx
import pytest
from PIL import Image
from provider_wire import IMAGE, KEY, Wire, make

import captionkit.providers as providers
from captionkit.errors import BackendError, ConfigError
from captionkit.http import APIClient
from captionkit.llm.base import ChatMessage
from captionkit.providers import get_provider, provider_names
from captionkit.providers.base import Completion, Provider, RequestFailed, as_decoding
from captionkit.types import CaptionRequest, Decoding

KINDS = ["openai", "openai-compatible", "gemini", "anthropic"]
OK: dict[str, Any] = {
    "openai": {"choices": [{"index": 0, "message": {"content": "x"}}]},
    "openai-compatible": {"choices": [{"index": 0, "message": {"content": "x"}}]},
    "gemini": {"candidates": [{"content": {"parts": [{"text": "x"}]}}]},
    "anthropic": {"content": [{"type": "text", "text": "x"}]},
}
HI = [ChatMessage("user", "hi")]


def test_registry_names_and_unknown():
    assert provider_names()[:4] == KINDS
    assert get_provider("gemini").name == "gemini"
    with pytest.raises(ConfigError, match="unknown provider 'mistral'; known: openai"):
        get_provider("mistral")


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_model_404_stops_the_run(kind):
    wire = Wire(OK[kind]).queue((404, {"error": {"message": "model m1 not found"}}, {}))
    p = make(kind, wire)
    with pytest.raises(BackendError, match=r"HTTP 404: model m1 not found.*model name"):
        p.send(p.text_body(HI, Decoding()))


@pytest.mark.parametrize("kind", KINDS)
def test_malformed_json_fails_the_request(kind):
    p = make(kind, Wire(OK[kind]).queue((200, '{"choices": [', {})))
    with pytest.raises(RequestFailed, match=r"malformed JSON in the response \(HTTP 200\)"):
        p.send(p.text_body(HI, Decoding()))


@pytest.mark.parametrize("kind", KINDS)
def test_timeouts_retried_then_fail_the_request(kind):
    wire = Wire(OK[kind]).queue(*[httpx.ReadTimeout("slow")] * 3)
    p = make(kind, wire)
    with pytest.raises(RequestFailed, match=r"timed out after 60 s.*3 attempts"):
        p.send(p.image_body(IMAGE, "S", "I", Decoding()))
    wire.queue(httpx.ReadTimeout("slow"))
    assert p.send(p.image_body(IMAGE, "S", "I", Decoding())).retries == 1


def test_exhausted_quota_429_stops_at_once():
    quota = {"error": {"message": "You exceeded your current quota.", "code": "insufficient_quota"}}
    wire = Wire(OK["openai"]).queue((429, quota, {"retry-after": "1"}))
    p = make("openai", wire)
    with pytest.raises(BackendError, match="HTTP 429: You exceeded your current quota"):
        p.send(p.text_body(HI, Decoding()))
    assert len(wire.requests) == 1 and p.waits == []


def test_missing_key_is_one_line_before_anything_is_sent():
    wire = Wire(OK["anthropic"])
    p = make("anthropic", wire, api_key=None)
    with pytest.raises(BackendError, match="anthropic:m1: no API key; set ANTHROPIC_API_KEY"):
        p.send(p.text_body(HI, Decoding()))
    assert wire.requests == []


def test_key_is_resolved_once_from_the_environment(monkeypatch):
    monkeypatch.setenv("GOOGLE_API_KEY", "from-env")
    p = make("gemini", Wire(OK["gemini"]), api_key=None)
    assert p.headers() == {"x-goog-api-key": "from-env"}
    monkeypatch.setenv("GEMINI_API_KEY", "later")
    assert p.headers() == {"x-goog-api-key": "from-env"}
    assert KEY not in repr(make("gemini", Wire({}), api_key=KEY))


@dataclass(frozen=True)
class LegacyConfig:  # the fields of llm.base.GenerationConfig before its Decoding migration
    max_new_tokens: int = 80
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


def test_as_decoding_reads_decoding_or_the_legacy_config():
    dec = Decoding(max_new_tokens=9, do_sample=True, temperature=0.5)
    assert as_decoding(dec) is dec
    greedy = as_decoding(LegacyConfig(max_new_tokens=50, top_p=0.5, stop=("\n",), seed=2))
    assert greedy == Decoding(max_new_tokens=50, top_p=0.5, stop=("\n",), seed=2)
    sampled = as_decoding(LegacyConfig(temperature=0.7))
    assert sampled.do_sample and sampled.temperature == 0.7


# -- a new vendor is one class -------------------------------------------------------------------


class EchoProvider(Provider):
    """A made-up vendor: POST {base}/generate, {"prompt", "images", "limit"} -> {"text"}."""

    name: ClassVar[str] = "echo"
    env_vars: ClassVar[tuple[str, ...]] = ("ECHO_KEY",)
    default_base_url: ClassVar[str | None] = "https://echo.test"
    returns_n: ClassVar[bool] = False

    def endpoint(self) -> str:
        return f"{self.base_url}/generate"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-echo-key": key}

    def apply_decoding(self, body, decoding, *, n=1, send_sampling=True):
        body["limit"] = decoding.max_new_tokens
        return body

    def text_body(self, messages, decoding, *, n=1, send_sampling=True):
        prompt = "\n".join(m.content for m in messages)
        return self.apply_decoding({"prompt": prompt, "images": []}, decoding)

    def image_body(self, image, system, instruction, decoding, **kw):
        return self.apply_decoding({"prompt": instruction, "images": [image.data]}, decoding)

    def parse(self, data):
        return Completion([data["text"]], {"input_tokens": 1, "output_tokens": 2})


@pytest.fixture
def echo_vendor(monkeypatch):
    """Registered the way a plug-in package would be: an entry point in the group."""
    ep = EntryPoint("echo", f"{__name__}:EchoProvider", providers.ENTRY_POINT_GROUP)
    monkeypatch.setattr(providers, "entry_points", lambda group: [ep] if group == ep.group else [])
    monkeypatch.setenv("ECHO_KEY", KEY)
    wire = Wire({"text": "A small red square."})
    real_init = APIClient.__init__

    def init(self, **kwargs):
        real_init(self, **{**kwargs, "transport": httpx.MockTransport(wire.handler)})

    monkeypatch.setattr(APIClient, "__init__", init)
    return wire


def test_new_vendor_serves_captioners_and_text_llms(echo_vendor):
    from captionkit.captioners.api.common import HostedCaptioner
    from captionkit.llm.openai_compat import HTTPTextLLM

    assert "echo" in provider_names() and get_provider("echo") is EchoProvider

    class EchoCaptioner(HostedCaptioner):
        name = "echo"
        provider_name = "echo"

    class EchoLLM(HTTPTextLLM):
        provider_name = "echo"

    cap = EchoCaptioner("e1")
    request = CaptionRequest(style="short", num_captions=2)
    out = cap.caption_batch([cap.preprocess(Image.new("RGB", (8, 8)), request)], request)[0]
    assert [c.text for c in out.candidates] == ["A small red square."] * 2
    assert len(echo_vendor.requests) == 2  # returns_n False: two requests
    assert echo_vendor.requests[0].headers["x-echo-key"] == KEY
    assert echo_vendor.body["limit"] == 1024 and len(echo_vendor.body["images"]) == 1
    llm = EchoLLM("e1")
    assert llm.chat([HI], Decoding(max_new_tokens=7)) == ["A small red square."]
    assert echo_vendor.body == {"prompt": "hi", "images": [], "limit": 7}
    assert llm.label == "echo:e1" and llm.usage == {"input_tokens": 1, "output_tokens": 2}
