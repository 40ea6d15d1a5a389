"""Request bodies and headers are byte-for-byte what they were before the provider layer.

``golden_bodies.json`` was written by this file's ``capture()`` from the code of commit
91f13e5, before the providers/ refactor (``python tests/providers/test_golden_bodies.py``
rewrites it): the image captioners and the text LLMs of every vendor, across the settings
that change what is sent (sampling, N candidates, JSON output, omitted sampling, options
overrides, stops).

Regenerated deliberately for #14 (sampling parameters only when asked for): every greedy body
lost ``temperature: 0.0`` (``*/default``, ``*/json``, ``text/*/stop``) and greedy bodies lost
``top_p`` (``*/topp_greedy``: greedy has nothing to cut); ``-o temperature=0`` still sends
``temperature: 0.0`` (``image/*/topp_greedy``); Anthropic's N candidates (``image/anthropic/n3``)
are sampled at temperature 1.0 instead of three identical greedy requests. Headers and URLs
are unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from captionkit.http import APIClient, APIResponse

GOLDEN = Path(__file__).with_name("golden_bodies.json")
KEY = "sk-golden"
KINDS = ("openai", "openai-compatible", "gemini", "anthropic")

OK = {
    "openai": {"choices": [{"index": 0, "message": {"content": "A dog."}}], "usage": {}},
    "gemini": {"candidates": [{"content": {"parts": [{"text": "A dog."}]}}]},
    "anthropic": {"content": [{"type": "text", "text": "A dog."}], "stop_reason": "end_turn"},
}


def _image_cases() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, backend options, request fields)."""
    return [
        ("default", {}, {"style": "alt-text"}),
        ("n3", {}, {"style": "short", "num_captions": 3}),
        ("json", {"json_output": True}, {"style": "short"}),
        (
            "sampled",
            {},
            {
                "prompt": "Name the colour.",
                "language": "fr",
                "decoding": {
                    "max_new_tokens": 20,
                    "seed": 7,
                    "do_sample": True,
                    "temperature": 0.7,
                    "top_p": 0.9,
                    "stop": ["\n"],
                },
            },
        ),
        (
            "omit",
            {"omit_sampling": True},
            {"decoding": {"do_sample": True, "temperature": 0.5, "top_p": 0.8}},
        ),
        ("overrides", {"temperature": 0.3, "max_tokens": 200, "system_prompt": "Be brief."}, {}),
        ("topp_greedy", {"temperature": 0.0}, {"decoding": {"top_p": 0.5, "do_sample": True}}),
    ]


def _text_cases() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("stop", {"max_new_tokens": 50, "stop": ["\n"]}),
        ("sampled", {"temperature": 0.7, "top_p": 0.9, "seed": 3}),
        ("topp_greedy", {"temperature": 0.0, "top_p": 0.5}),
    ]


class _Recorder:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.seen: list[dict[str, Any]] = []

    def post_json(self, url: str, body: Any, *, headers: Any = None, final: Any = None) -> Any:
        self.seen.append(
            {
                "url": url,
                "headers": dict(headers or {}),
                "body": json.dumps(body, sort_keys=False),
            }
        )
        vendor = "openai" if self.kind.startswith("openai") else self.kind
        return APIResponse(200, json.dumps(OK[vendor]))


def _bound(rec: _Recorder) -> Any:
    def post_json(client: APIClient, url: str, body: Any, **kw: Any) -> APIResponse:
        return rec.post_json(url, body, **kw)

    return post_json


def capture(monkeypatch: Any) -> dict[str, Any]:
    from PIL import Image

    from captionkit.captioners import registry
    from captionkit.llm.base import ChatMessage, GenerationConfig
    from captionkit.llm.loader import load_llm
    from captionkit.types import CaptionRequest, Decoding

    out: dict[str, Any] = {}
    image = Image.new("RGB", (16, 12), (200, 30, 30))
    for kind in KINDS:
        for name, options, req in _image_cases():
            rec = _Recorder(kind)
            monkeypatch.setattr(APIClient, "post_json", _bound(rec))
            opts = dict(options)
            if kind.startswith("openai") and name == "overrides":
                opts["detail"] = "low"
            cap = registry.create(
                f"{kind}:model-x", api_key=KEY, base_url="http://golden.test/v1", **opts
            )
            fields = dict(req)
            if "decoding" in fields:
                fields["decoding"] = Decoding(**fields["decoding"])
            request = CaptionRequest(**fields)
            cap.caption_batch([cap.preprocess(image, request)], request)
            cap.close()
            out[f"image/{kind}/{name}"] = rec.seen
        conversation = [
            ChatMessage("system", "Rewrite."),
            ChatMessage("user", "A dog on grass."),
            ChatMessage("assistant", "A dog."),
            ChatMessage("user", "Again, shorter."),
        ]
        for name, config in _text_cases():
            rec = _Recorder(kind)
            monkeypatch.setattr(APIClient, "post_json", _bound(rec))
            llm = load_llm(f"{kind}:model-x", api_key=KEY, base_url="http://golden.test/v1")
            llm.chat([conversation], GenerationConfig(**config))
            llm.close()
            out[f"text/{kind}/{name}"] = rec.seen
    return out


def test_bodies_and_headers_unchanged(monkeypatch):
    golden = json.loads(GOLDEN.read_text())
    now = capture(monkeypatch)
    assert sorted(now) == sorted(golden)
    for key, calls in golden.items():
        assert now[key] == calls, key


if __name__ == "__main__":
    mp = pytest.MonkeyPatch()
    GOLDEN.write_text(json.dumps(capture(mp), indent=1, sort_keys=True) + "\n")
    mp.undo()
    print(f"wrote {GOLDEN}")
