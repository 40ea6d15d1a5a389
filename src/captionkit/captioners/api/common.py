"""What every hosted-API backend shares: options, image encoding, prompting, the parallel
request loop, usage and cost.

A provider module only says how its request body looks (:meth:`HostedCaptioner.build_body`)
and how many tokens an image costs; the HTTP, retry, rate-limit and parsing rules come from
:mod:`captionkit.http` and :mod:`captionkit.llm.openai_compat`, shared with the text LLMs.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, SecretStr

from captionkit.captioners.base import BackendOptions, Captioner
from captionkit.errors import ConfigError
from captionkit.http import APIClient, RetryPolicy, TransportFailure
from captionkit.llm.openai_compat import (
    PROVIDERS,
    Completion,
    Provider,
    RequestFailed,
    Sampling,
    check,
    fatal_quota,
    resolve_key,
    transport_error,
)
from captionkit.styles import STYLES, finish, get_style
from captionkit.types import Candidate, CaptionOutput, CaptionRequest

if TYPE_CHECKING:
    from PIL.Image import Image

DEFAULT_SYSTEM_PROMPT = (
    "You write captions for images. Reply with the requested text only: no preamble, no "
    "quotes, no markdown. Describe only what is visible."
)
JSON_INSTRUCTION = (
    ' Reply with JSON: {"caption": the text asked for, "tags": 3 to 10 short lowercase tags '
    "naming what is visible}."
)
#: JSON Schema of the structured answer (OpenAI and Anthropic take it as is).
CAPTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "caption": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["caption", "tags"],
    "additionalProperties": False,
}
#: Typical answer length per style, for cost estimates (billing counts what is produced).
EXPECTED_OUTPUT_TOKENS = {
    "short": 30,
    "alt-text": 35,
    "social": 90,
    "training": 80,
    "detailed": 220,
}


class APIOptions(BackendOptions):
    """Options shared by the hosted backends (``--api-key``, ``--base-url``, config entries)."""

    api_key: SecretStr | None = None
    base_url: str | None = None
    timeout: float = Field(60.0, gt=0, description="seconds per request")
    max_retries: int = Field(4, ge=0, le=20, description="retries on 429/5xx/timeouts")
    concurrency: int = Field(4, ge=1, le=64, description="requests in flight at once")
    rpm: float | None = Field(None, gt=0, description="requests-per-minute limit")
    max_image_side: int = Field(2048, ge=64, description="longest side sent, in pixels")
    quality: int = Field(85, ge=30, le=100, description="JPEG quality of the sent image")
    system_prompt: str | None = None
    json_output: bool = Field(False, description="ask for {caption, tags} structured output")
    max_tokens: int | None = Field(None, ge=1, description="output cap; default >= 1024")
    temperature: float | None = Field(None, ge=0, le=2)
    omit_sampling: bool = Field(False, description="send no temperature (models that refuse it)")
    price_per_1k_input: float | None = Field(None, ge=0)
    price_per_1k_output: float | None = Field(None, ge=0)
    max_cost: float | None = Field(None, gt=0, description="stop spending past this amount")


@dataclass(frozen=True)
class EncodedImage:
    """An image as sent: base64 JPEG/PNG within the provider's limits."""

    mime: str
    data: str
    width: int
    height: int

    @property
    def data_url(self) -> str:
        return f"data:{self.mime};base64,{self.data}"


def encode_image(
    image: Image,
    *,
    max_side: int,
    quality: int = 85,
    max_pixels: int | None = None,
    max_b64_bytes: int = 5 * 1024 * 1024,
) -> EncodedImage:
    """Resize to the provider's limits and re-encode as JPEG (RGB, transparency on white).

    Sending what the provider would downscale anyway only costs upload time and tokens; a
    body over its byte limit is refused outright, so quality and then size step down.
    """
    from PIL import Image as PILImage

    img = image
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = PILImage.new("RGB", rgba.size, (255, 255, 255))
        img.paste(rgba, mask=rgba.getchannel("A"))
    elif img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    scale = min(1.0, max_side / max(w, h))
    if max_pixels:
        scale = min(scale, math.sqrt(max_pixels / (w * h)))
    while True:
        size = (max(1, int(w * scale)), max(1, int(h * scale)))  # floor: stay within limits
        sized = img if size == img.size else img.resize(size, PILImage.Resampling.LANCZOS)
        for q in (quality, *range(min(quality, 75) - 10, 39, -10)):
            buf = io.BytesIO()
            sized.save(buf, format="JPEG", quality=q, optimize=True)
            data = base64.b64encode(buf.getvalue()).decode("ascii")
            if len(data) <= max_b64_bytes:
                return EncodedImage("image/jpeg", data, *sized.size)
        scale *= 0.7


def instruction_for(request: CaptionRequest, json_output: bool) -> str:
    """The zero-shot instruction: the caller's prompt, else the style's own."""
    text = request.prompt or get_style(request.style).instruction
    return text + JSON_INSTRUCTION if json_output else text


def system_for(request: CaptionRequest, system_prompt: str | None) -> str:
    text = system_prompt or DEFAULT_SYSTEM_PROMPT
    if request.language and request.language.lower() not in ("en", "english"):
        text += f" Write in the language '{request.language}'."
    return text


def split_json(text: str) -> tuple[str, list[str] | None]:
    """(caption, tags) from a structured answer; (text, None) when it is not JSON."""
    candidates = [text.strip()]
    match = re.search(r"\{.*\}", text, re.DOTALL)  # a fenced or prefixed object
    if match:
        candidates.append(match.group(0))
    for blob in candidates:
        try:
            obj = json.loads(blob)
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("caption"), str):
            tags = obj.get("tags")
            return obj["caption"], [str(t) for t in tags] if isinstance(tags, list) else []
    return text, None


class HostedCaptioner(Captioner):
    """Base of the API backends: each image is one request, a batch runs in parallel."""

    extra: ClassVar[str] = "api"
    requires: ClassVar[tuple[str, ...]] = ("httpx", "tenacity")
    default_batch_size: ClassVar[int] = 16
    Options: ClassVar[type[BackendOptions]] = APIOptions
    provider_name: ClassVar[str] = ""
    hosted: ClassVar[bool] = True
    thread_safe: ClassVar[bool] = True  # requests are independent; usage totals take a lock
    #: Whether one request can return several candidates (OpenAI n, Gemini candidateCount).
    supports_n: ClassVar[bool] = True
    #: Base64 bytes allowed per image, and a pixel cap where the provider documents one.
    max_b64_bytes: ClassVar[int] = 15 * 1024 * 1024
    max_pixels: ClassVar[int | None] = None

    def __init__(self, model: str = "", options: BackendOptions | None = None) -> None:
        super().__init__(model, options)
        self.opts: APIOptions = self.options  # type: ignore[assignment]
        self.provider: Provider = PROVIDERS[self.provider_name]
        if not model:
            raise ConfigError(f"name a model: --model {self.provider_name}:MODEL")
        self.who = f"{self.provider_name}:{model}"
        self.base_url = self.provider.base_url(self.opts.base_url)
        if not self.base_url:
            raise ConfigError(
                f"{self.who} needs the server's URL: --base-url http://HOST:PORT/v1 "
                "or OPENAI_BASE_URL"
            )
        # The key is resolved when the first request is about to be sent, not here: a dry run
        # (which only estimates cost) and a rerun served from the results store need none.
        self._headers: dict[str, str] | None = None
        self.client = APIClient(
            timeout=self.opts.timeout,
            retry=RetryPolicy(max_retries=self.opts.max_retries),
            rpm=self.opts.rpm,
            concurrency=self.opts.concurrency,
        )
        # A batch waits for its slowest request (a retried 429, say), so batches hold several
        # rounds of requests per worker: the stragglers overlap with the rest of the batch.
        self.default_batch_size = max(16, 4 * self.opts.concurrency)  # type: ignore[misc]
        self._lock = threading.Lock()
        self.usage = {"input_tokens": 0, "output_tokens": 0}
        self.failed = 0
        self._reserved = 0.0

    # -- what a provider module supplies ------------------------------------------------------
    def build_body(
        self, image: EncodedImage, system: str, instruction: str, sampling: Sampling, json_out: bool
    ) -> dict[str, Any]:
        raise NotImplementedError

    def image_tokens(self, width: int, height: int) -> int:
        """Input tokens one image costs after the provider's own resizing (documented rule)."""
        return math.ceil(width * height / 750)

    # -- the engine's side ---------------------------------------------------------------------
    def preprocess(self, image: Image, request: CaptionRequest) -> EncodedImage:
        return encode_image(
            image,
            max_side=self.opts.max_image_side,
            quality=self.opts.quality,
            max_pixels=self.max_pixels,
            max_b64_bytes=self.max_b64_bytes,
        )

    def sampling(self, request: CaptionRequest, n: int) -> Sampling:
        dec = request.decoding
        if self.opts.omit_sampling:
            temperature = None
        elif self.opts.temperature is not None:
            temperature = self.opts.temperature
        else:  # greedy unless sampling was asked for or several different candidates are
            temperature = dec.temperature if (dec.do_sample or n > 1) else 0.0
        # Reasoning models spend output tokens before answering, and billing counts only what
        # is produced, so the cap is generous; styles.finish() enforces each style's length.
        max_tokens = self.opts.max_tokens or max(dec.max_new_tokens, 1024)
        top_p = dec.top_p if dec.top_p < 1.0 and not self.opts.omit_sampling else None
        return Sampling(max_tokens, temperature, top_p, (), dec.seed, n)

    def headers(self) -> dict[str, str]:
        """The request headers with the API key; a missing required key stops the run with
        one line (BackendError) before anything is sent."""
        with self._lock:
            if self._headers is None:
                key = resolve_key(
                    self.opts.api_key,
                    self.provider.env_vars,
                    self.who,
                    required=self.provider.key_required,
                )
                self._headers = self.provider.headers(key)
            return self._headers

    def caption_batch(self, inputs: list[Any], request: CaptionRequest) -> list[CaptionOutput]:
        self.headers()  # no key: fail the run here, not once per image in the threads below
        if len(inputs) <= 1:
            return [self._caption_one(x, request) for x in inputs]
        with ThreadPoolExecutor(min(self.opts.concurrency, len(inputs))) as pool:
            return list(pool.map(lambda x: self._caption_one(x, request), inputs))

    def _post(self, body: dict[str, Any]) -> Completion:
        url = self.provider.endpoint(self.base_url or "", self.model)
        try:
            resp = self.client.post_json(url, body, headers=self.headers(), final=fatal_quota)
        except TransportFailure as exc:
            raise transport_error(exc, self.who) from None
        completion = self.provider.parse(check(self.provider, resp, self.who))
        completion.usage["retries"] = resp.retries
        return completion

    def _caption_one(self, image: EncodedImage, request: CaptionRequest) -> CaptionOutput:
        json_out = self.opts.json_output
        system = system_for(request, self.opts.system_prompt)
        instruction = instruction_for(request, json_out)
        n = max(1, request.num_captions)
        calls = [n] if self.supports_n else [1] * n
        estimate = self._estimate_cost(image.width, image.height, len(system) + len(instruction), n)
        usage = {"input_tokens": 0, "output_tokens": 0}
        retries = 0
        texts: list[str] = []
        finish_reason = None
        try:
            self._reserve(estimate)
            try:
                for count in calls:
                    body = self.build_body(
                        image, system, instruction, self.sampling(request, count), json_out
                    )
                    completion = self._post(body)
                    retries += completion.usage.pop("retries", 0)
                    for k in usage:
                        usage[k] += completion.usage.get(k, 0)
                    texts.extend(completion.texts)
                    finish_reason = finish_reason or completion.finish_reason
            finally:
                self._settle(estimate, usage)
        except RequestFailed as exc:
            with self._lock:
                self.failed += 1
            return CaptionOutput(
                candidates=[], extra={"usage": usage, "retries": retries}, error=str(exc)
            )
        return self._output(texts, request, usage, retries, finish_reason, json_out)

    def _output(
        self,
        texts: list[str],
        request: CaptionRequest,
        usage: dict[str, int],
        retries: int,
        finish_reason: str | None,
        json_out: bool,
    ) -> CaptionOutput:
        extra: dict[str, Any] = {"usage": usage}
        if retries:
            extra["retries"] = retries
        if finish_reason:
            extra["finish_reason"] = finish_reason
        candidates = []
        for raw in texts:
            text = raw
            if json_out:
                text, tags = split_json(raw)
                if tags is None:
                    extra["json_error"] = "the answer was not the requested JSON"
                elif "tags" not in extra:
                    extra["tags"] = tags
            text = finish(text, request.style) if request.style in STYLES else text.strip()
            if text:
                candidates.append(Candidate(text))
        if not candidates:
            return CaptionOutput(candidates=[], extra=extra, error="the model returned no text")
        return CaptionOutput(candidates=candidates, extra=extra)

    # -- usage and cost --------------------------------------------------------------------------
    def _price(self, usage: dict[str, int]) -> float | None:
        pin, pout = self.opts.price_per_1k_input, self.opts.price_per_1k_output
        if pin is None and pout is None:
            return None
        return (usage["input_tokens"] * (pin or 0) + usage["output_tokens"] * (pout or 0)) / 1000

    def _estimate_cost(self, width: int, height: int, prompt_chars: int, n: int) -> float:
        return self._price(self._estimate_usage(width, height, prompt_chars, n, "short")) or 0.0

    def _estimate_usage(
        self, width: int, height: int, prompt_chars: int, n: int, style: str
    ) -> dict[str, int]:
        calls = 1 if self.supports_n else n
        text_tokens = math.ceil(prompt_chars / 4) + 10  # ~4 characters a token, plus framing
        return {
            "input_tokens": calls * (self.image_tokens(width, height) + text_tokens),
            "output_tokens": n * EXPECTED_OUTPUT_TOKENS.get(style, 80),
        }

    def _reserve(self, estimate: float) -> None:
        """Refuse a request that would take spending past ``max_cost`` (estimates reserved
        while requests are in flight, so parallel workers cannot overshoot together)."""
        limit = self.opts.max_cost
        if not limit:
            return
        with self._lock:
            spent = self._price(self.usage) or 0.0
            if spent + self._reserved + estimate > limit:
                raise RequestFailed(f"max_cost {limit:g} reached (spent {spent:.4f})")
            self._reserved += estimate

    def _settle(self, estimate: float, usage: dict[str, int]) -> None:
        with self._lock:
            if self.opts.max_cost:
                self._reserved = max(0.0, self._reserved - estimate)
            for k in self.usage:
                self.usage[k] += usage.get(k, 0)

    def estimate(
        self, sizes: list[tuple[int, int]], request: CaptionRequest | None = None
    ) -> dict[str, Any]:
        """What captioning images of ``sizes`` (after preprocessing) would cost, for
        ``--dry-run`` and ``--max-cost``: tokens by the provider's documented image rule and
        a typical answer length per style; ``cost`` is None when no prices are configured."""
        request = request or CaptionRequest()
        json_out = self.opts.json_output
        chars = len(system_for(request, self.opts.system_prompt))
        chars += len(instruction_for(request, json_out))
        total = {"input_tokens": 0, "output_tokens": 0}
        n = max(1, request.num_captions)
        for w, h in sizes:
            scale = min(1.0, self.opts.max_image_side / max(w, h, 1))
            if self.max_pixels and w * h:
                scale = min(scale, math.sqrt(self.max_pixels / (w * h)))
            est = self._estimate_usage(int(w * scale), int(h * scale), chars, n, request.style)
            for k in total:
                total[k] += est[k]
        return {"images": len(sizes), **total, "cost": self._price(total)}

    def stats(self) -> dict[str, Any]:
        """Totals of this run for the summary: requests, retries, failures, tokens, cost."""
        with self._lock:
            usage = dict(self.usage)
            failed = self.failed
        return {
            "requests": self.client.requests,
            "retries": self.client.retries,
            "failed": failed,
            **usage,
            "cost": self._price(usage),
        }

    def fingerprint(self) -> str:
        """Only what changes the text: never the key, limits or prices."""
        keep = {"base_url", "max_image_side", "quality", "system_prompt", "json_output"}
        keep |= {"max_tokens", "temperature", "omit_sampling", "detail"}
        data = self.opts.model_dump(include=keep, exclude_none=True)
        return json.dumps(data, sort_keys=True)

    def close(self) -> None:
        self.client.close()
