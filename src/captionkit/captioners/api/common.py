"""What every hosted-API captioner shares: options, prompting, the parallel request loop,
usage and cost.

The wire protocol (endpoint, auth, request bodies, parsing, error mapping) belongs to the
vendor's :class:`~captionkit.providers.base.Provider`, shared with the HTTP text LLMs; a
captioner module only names its provider and its option defaults.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar, cast

from pydantic import Field, SecretStr

from captionkit.captioners.base import BackendOptions, Captioner
from captionkit.errors import ConfigError
from captionkit.providers import get_provider
from captionkit.providers.base import CAPTION_SCHEMA, Provider, RequestFailed
from captionkit.providers.images import EncodedImage, encode_image
from captionkit.styles import STYLES, finish, get_style
from captionkit.types import Candidate, CaptionOutput, CaptionRequest, Decoding

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger("captionkit.api")

__all__ = [
    "CAPTION_SCHEMA",
    "APIOptions",
    "EncodedImage",
    "HostedCaptioner",
    "encode_image",
    "instruction_for",
    "split_json",
    "system_for",
]

DEFAULT_SYSTEM_PROMPT = (
    "You write captions for images. Reply with the requested text only: no preamble, no "
    "quotes, no markdown. Describe only what is visible."
)
JSON_INSTRUCTION = (
    ' Reply with JSON: {"caption": the text asked for, "tags": 3 to 10 short lowercase tags '
    "naming what is visible}."
)
#: Typical answer length per style, for cost estimates (billing counts what is produced).
EXPECTED_OUTPUT_TOKENS = {
    "short": 30,
    "alt-text": 35,
    "social": 90,
    "training": 80,
    "detailed": 220,
}


class APIOptions(BackendOptions):
    """Options shared by the hosted backends. Fields marked ``"cli"`` are also flags of
    ``captionkit caption`` (``--api-key``, ``--base-url``, ``--max-cost``); every field is a
    ``-o name=value`` and a ``[backends.NAME]`` config entry."""

    api_key: SecretStr | None = Field(
        None,
        description=(
            "Hosted APIs: the key (default: OPENAI_API_KEY / GEMINI_API_KEY / ANTHROPIC_API_KEY)."
        ),
        json_schema_extra={"cli": True, "cli_panel": "Model"},
    )
    base_url: str | None = Field(
        None,
        description="OpenAI-compatible server URL, e.g. http://127.0.0.1:8000/v1.",
        json_schema_extra={"cli": True, "cli_panel": "Model"},
    )
    timeout: float = Field(60.0, gt=0, description="seconds per request")
    max_retries: int = Field(4, ge=0, le=20, description="retries on 429/5xx/timeouts")
    concurrency: int = Field(4, ge=1, le=64, description="requests in flight at once")
    rpm: float | None = Field(None, gt=0, description="requests-per-minute limit")
    max_image_side: int = Field(2048, ge=64, description="longest side sent, in pixels")
    quality: int = Field(85, ge=30, le=100, description="JPEG quality of the sent image")
    system_prompt: str | None = Field(None, description="replaces the default system prompt")
    json_output: bool = Field(False, description="ask for {caption, tags} structured output")
    max_tokens: int | None = Field(None, ge=1, description="output cap; default >= 1024")
    temperature: float | None = Field(
        None,
        ge=0,
        le=2,
        description="sent whatever --sample says (default: none sent unless sampling)",
    )
    omit_sampling: bool = Field(False, description="send no temperature (models that refuse it)")
    price_per_1k_input: float | None = Field(None, ge=0, description="price of 1000 input tokens")
    price_per_1k_output: float | None = Field(None, ge=0, description="price of 1000 output tokens")
    max_cost: float | None = Field(
        None,
        gt=0,
        description=(
            "Hosted APIs: stop spending past this amount "
            "(set prices with -o price_per_1k_input=...)."
        ),
        json_schema_extra={"cli": True, "cli_panel": "Run"},
    )


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
    """Base of the API backends: each image is one request, a batch runs in parallel.

    A subclass names its vendor (``provider_name``, a key of :mod:`captionkit.providers`) and
    its ``Options``; requests, parsing and errors are the vendor's :class:`Provider`'s.
    """

    extra: ClassVar[str] = "api"
    requires: ClassVar[tuple[str, ...]] = ("httpx", "tenacity")
    default_batch_size: ClassVar[int] = 16
    Options: ClassVar[type[BackendOptions]] = APIOptions
    provider_name: ClassVar[str] = ""
    hosted: ClassVar[bool] = True
    thread_safe: ClassVar[bool] = True  # requests are independent; usage totals take a lock
    #: N candidates: one request where the vendor returns n (OpenAI n, Gemini
    #: candidateCount), else N requests (``Provider.returns_n``).
    multiple_candidates: ClassVar[bool] = True

    def __init__(self, model: str = "", options: BackendOptions | None = None) -> None:
        super().__init__(model, options)
        # Captioner is not generic over its Options yet: the registry built cls.Options.
        self.opts = cast(APIOptions, self.options)
        if not model:
            raise ConfigError(f"name a model: --model {self.provider_name}:MODEL")
        # The key is resolved when the first request is about to be sent, not here: a dry run
        # (which only estimates cost) and a rerun served from the results store need none.
        self.provider: Provider = get_provider(self.provider_name)(
            model,
            base_url=self.opts.base_url,
            api_key=self.opts.api_key,
            timeout=self.opts.timeout,
            max_retries=self.opts.max_retries,
            concurrency=self.opts.concurrency,
            rpm=self.opts.rpm,
            key_source=f"--api-key (or api_key in [backends.{self.name}])",
        )
        self.who = self.provider.who
        self.base_url = self.provider.base_url
        self.client = self.provider.client
        # A batch waits for its slowest request (a retried 429, say), so batches hold several
        # rounds of requests per worker: the stragglers overlap with the rest of the batch.
        self.default_batch_size = max(16, 4 * self.opts.concurrency)  # type: ignore[misc]
        self._lock = threading.Lock()
        self.usage = {"input_tokens": 0, "output_tokens": 0}
        self.failed = 0
        self._reserved = 0.0
        self._noted = False  # the sampling note is logged once per run
        if self.opts.temperature:  # a vendor's range (Anthropic: 0-1), checked before sending
            self.provider.check_decoding(
                Decoding(do_sample=True, temperature=self.opts.temperature)
            )

    def detail(self) -> str | None:
        """The image-fidelity hint sent with each image (OpenAI's ``detail``); None: none."""
        return None

    # -- the engine's side ---------------------------------------------------------------------
    def preprocess(self, image: Image, request: CaptionRequest) -> EncodedImage:
        return encode_image(
            image,
            max_side=self.opts.max_image_side,
            quality=self.opts.quality,
            max_pixels=self.provider.max_pixels,
            max_b64_bytes=self.provider.max_b64_bytes,
        )

    def decoding(self, request: CaptionRequest, n: int | None = None) -> Decoding:
        """The request's decoding as this backend sends it: the ``temperature`` and
        ``max_tokens`` options win; greedy unless sampling or several candidates were asked
        for (``n``, default the request's ``num_captions``: N greedy answers would be one
        caption N times, paid N times, on vendors without ``n`` too); stop strings are the
        text LLMs' and are not sent."""
        dec = request.decoding
        n = request.num_captions if n is None else n
        if self.opts.temperature is not None:
            temperature = self.opts.temperature
        else:
            temperature = dec.temperature if (dec.do_sample or n > 1) else 0.0
        # Reasoning models spend output tokens before answering, and billing counts only what
        # is produced, so the cap is generous; styles.finish() enforces each style's length.
        max_tokens = self.opts.max_tokens or max(dec.max_new_tokens, 1024)
        return dec.replace(
            max_new_tokens=max_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else dec.temperature,
            stop=(),
        )

    def headers(self) -> dict[str, str]:
        """The request headers with the API key; a missing required key stops the run with
        one line (BackendError) before anything is sent."""
        return self.provider.headers()

    def sampling_note(self, request: CaptionRequest) -> str | None:
        """Why candidates are sampled though ``--sample`` was not given (N > 1), for the
        output's ``extra`` and the log; None when the user chose."""
        if request.num_captions <= 1 or request.decoding.do_sample:
            return None
        if self.opts.temperature is not None:
            return None
        return (
            f"{request.num_captions} candidates sampled at temperature "
            f"{request.decoding.temperature:g} (greedy would repeat one caption)"
        )

    def caption_batch(self, inputs: list[Any], request: CaptionRequest) -> list[CaptionOutput]:
        # Settings the vendor rejects (Anthropic temperature > 1, Gemini seed beyond int32):
        # one line now, not a 400 for every image.
        self.provider.check_decoding(self.decoding(request))
        self.headers()  # no key: fail the run here, not once per image in the threads below
        note = self.sampling_note(request)
        if note:
            with self._lock:
                first, self._noted = not self._noted, True
            if first:
                log.info("%s: %s", self.who, note)
        if len(inputs) <= 1:
            return [self._caption_one(x, request) for x in inputs]
        with ThreadPoolExecutor(min(self.opts.concurrency, len(inputs))) as pool:
            return list(pool.map(lambda x: self._caption_one(x, request), inputs))

    def _caption_one(self, image: EncodedImage, request: CaptionRequest) -> CaptionOutput:
        json_out = self.opts.json_output
        system = system_for(request, self.opts.system_prompt)
        instruction = instruction_for(request, json_out)
        n = request.num_captions
        calls = [n] if self.provider.returns_n else [1] * n
        estimate = self._estimate_cost(image.width, image.height, len(system) + len(instruction), n)
        usage = {"input_tokens": 0, "output_tokens": 0}
        retries = 0
        texts: list[str] = []
        failures: list[str] = []
        finish_reason = None
        decoding = self.decoding(request)
        explicit_zero = self.opts.temperature == 0.0
        try:
            self._reserve(estimate)
        except RequestFailed as exc:
            with self._lock:
                self.failed += 1
            return CaptionOutput(candidates=[], extra={"usage": usage}, error=str(exc))
        try:
            for count in calls:
                body = self.provider.image_body(
                    image,
                    system,
                    instruction,
                    decoding,
                    n=count,
                    send_sampling=not self.opts.omit_sampling,
                    json_output=json_out,
                    detail=self.detail(),
                    greedy_temperature=explicit_zero,
                )
                try:
                    completion = self.provider.send(body)
                except RequestFailed as exc:
                    # Billed all the same (a refusal, a truncation): counted, and the
                    # other candidates' calls go on.
                    for k in usage:
                        usage[k] += exc.usage.get(k, 0)
                    failures.append(str(exc))
                    continue
                retries += completion.retries
                for k in usage:
                    usage[k] += completion.usage.get(k, 0)
                texts.extend(completion.texts)
                failures.extend(completion.failures)
                finish_reason = finish_reason or completion.finish_reason
        finally:
            self._settle(estimate, usage)
        if not texts and failures:
            with self._lock:
                self.failed += 1
            extra: dict[str, Any] = {"usage": usage, "retries": retries}
            return CaptionOutput(
                candidates=[], extra=extra, error="; ".join(dict.fromkeys(failures))
            )
        out = self._output(texts, request, usage, retries, finish_reason, json_out)
        if failures and out.candidates:
            out.extra["failed_candidates"] = failures
        note = self.sampling_note(request)
        if note and out.candidates:
            out.extra["sampling"] = note
        return out

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
        calls = 1 if self.provider.returns_n else n
        text_tokens = math.ceil(prompt_chars / 4) + 10  # ~4 characters a token, plus framing
        image_tokens = self.provider.image_tokens(width, height, self.detail())
        return {
            "input_tokens": calls * (image_tokens + text_tokens),
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
            max_pixels = self.provider.max_pixels
            if max_pixels and w * h:
                scale = min(scale, math.sqrt(max_pixels / (w * h)))
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
        self.provider.close()
