"""Fake provider servers on 127.0.0.1: each validates requests against the provider's documented
schema (answering 400 in the provider's own error shape when one is wrong) and replies with the
documented response bodies, or with whatever a test scripts: 429 + Retry-After, 500, a stall
past the client's timeout, malformed JSON, 401.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

KEY = "sk-test-SECRET-0123456789"


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict -> JSON; str -> sent verbatim (malformed JSON tests)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


def _jpeg_ok(b64: str) -> tuple[int, int]:
    raw = base64.b64decode(b64, validate=True)
    with Image.open(io.BytesIO(raw)) as img:
        assert img.format == "JPEG", img.format
        return img.size


# -- documented request schemas ----------------------------------------------------------------


def validate_openai(seen: Seen, *, hosted: bool) -> str | None:
    if seen.path != "/v1/chat/completions":
        return f"unknown path {seen.path}"
    if hosted and seen.headers.get("authorization") != f"Bearer {KEY}":
        return "AUTH"
    if not seen.headers.get("content-type", "").startswith("application/json"):
        return "content-type must be application/json"
    body = seen.json
    allowed = {"model", "messages", "max_completion_tokens", "max_tokens", "temperature", "top_p"}
    allowed |= {"n", "seed", "stop", "response_format", "reasoning_effort"}
    if set(body) - allowed:
        return f"unknown parameters: {sorted(set(body) - allowed)}"
    if not isinstance(body.get("model"), str) or not isinstance(body.get("messages"), list):
        return "model and messages are required"
    if hosted and "max_tokens" in body:
        return "max_tokens is deprecated: use max_completion_tokens"
    for msg in body["messages"]:
        if msg.get("role") not in ("system", "developer", "user", "assistant"):
            return f"bad role {msg.get('role')}"
        content = msg.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "text":
                    assert isinstance(part["text"], str)
                elif part.get("type") == "image_url":
                    url = part["image_url"]["url"]
                    if not url.startswith("data:image/jpeg;base64,"):
                        return "image_url.url must be a data URL"
                    if part["image_url"].get("detail", "auto") not in ("auto", "low", "high"):
                        return "bad detail"
                    w, h = _jpeg_ok(url.split(",", 1)[1])
                    if max(w, h) > 2048:
                        return "image over 2048 px was sent"
                else:
                    return f"bad content part {part.get('type')}"
        elif not isinstance(content, str):
            return "content must be a string or a list of parts"
    rf = body.get("response_format")
    if rf is not None:
        js = rf.get("json_schema") or {}
        if rf.get("type") != "json_schema" or "name" not in js or "schema" not in js:
            return "bad response_format"
    return None


def validate_gemini(seen: Seen) -> str | None:
    if not seen.path.startswith("/v1beta/models/") or not seen.path.endswith(":generateContent"):
        return f"unknown path {seen.path}"
    if "key=" in seen.path:
        return "the key must travel in x-goog-api-key, not the URL"
    if seen.headers.get("x-goog-api-key") != KEY:
        return "AUTH"
    body = seen.json
    if set(body) - {"contents", "systemInstruction", "generationConfig", "safetySettings"}:
        return f"unknown fields {sorted(body)}"
    gen = body.get("generationConfig", {})
    allowed = {"maxOutputTokens", "temperature", "topP", "topK", "candidateCount", "seed"}
    allowed |= {"stopSequences", "responseMimeType", "responseSchema", "thinkingConfig"}
    if set(gen) - allowed:
        return f"unknown generationConfig fields {sorted(set(gen) - allowed)}"
    for content in body["contents"]:
        if content.get("role") not in ("user", "model"):
            return "bad role"
        for part in content["parts"]:
            if "inline_data" in part:
                inline = part["inline_data"]
                if inline["mime_type"] not in ("image/jpeg", "image/png", "image/webp"):
                    return "bad mime_type"
                w, h = _jpeg_ok(inline["data"])
                if max(w, h) > 3072:
                    return "image over 3072 px"
            elif not isinstance(part.get("text"), str):
                return "part needs text or inline_data"
    sys_parts = (body.get("systemInstruction") or {"parts": []})["parts"]
    if not all(isinstance(p.get("text"), str) for p in sys_parts):
        return "bad systemInstruction"
    return None


def validate_anthropic(seen: Seen) -> str | None:
    if seen.path != "/v1/messages":
        return f"unknown path {seen.path}"
    if seen.headers.get("x-api-key") != KEY:
        return "AUTH"
    if seen.headers.get("anthropic-version") != "2023-06-01":
        return "anthropic-version header is required"
    body = seen.json
    allowed = {"model", "max_tokens", "messages", "system", "temperature", "top_p", "top_k"}
    allowed |= {"stop_sequences", "output_config", "metadata"}
    if set(body) - allowed:
        return f"unknown fields {sorted(set(body) - allowed)}"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    if "temperature" in body and "top_p" in body:
        return "temperature and top_p cannot both be specified for this model"
    for msg in body["messages"]:
        if msg["role"] not in ("user", "assistant"):
            return "messages: roles must be user or assistant"
        content = msg["content"]
        for block in content if isinstance(content, list) else []:
            if block["type"] == "image":
                src = block["source"]
                if src["type"] != "base64" or src["media_type"] not in (
                    "image/jpeg",
                    "image/png",
                    "image/gif",
                    "image/webp",
                ):
                    return "bad image source"
                if len(src["data"]) > 5 * 1024 * 1024:
                    return "image exceeds 5 MB maximum"
                w, h = _jpeg_ok(src["data"])
                if max(w, h) > 1568 or w * h > 1_150_000 * 1.01:
                    return "image larger than the documented optimum was sent"
            elif block["type"] != "text":
                return "bad block"
    oc = body.get("output_config")
    if oc is not None and (oc.get("format") or {}).get("type") != "json_schema":
        return "bad output_config"
    return None


# -- documented response bodies ------------------------------------------------------------------


def openai_ok(text: str, n: int = 1, usage: tuple[int, int] = (120, 12)) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
            for i in range(n)
        ],
        "usage": {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": sum(usage),
        },
    }


def openai_error(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def gemini_ok(text: str, n: int = 1, usage: tuple[int, int] = (300, 10)) -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {"parts": [{"text": text}], "role": "model"},
                "finishReason": "STOP",
                "index": i,
            }
            for i in range(n)
        ],
        "usageMetadata": {
            "promptTokenCount": usage[0],
            "candidatesTokenCount": usage[1],
            "totalTokenCount": sum(usage),
        },
        "modelVersion": "gemini-2.5-flash",
    }


def gemini_error(code: int, status: str, message: str, delay: str | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if delay:
        err["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
        ]
    return {"error": err}


def anthropic_ok(text: str, usage: tuple[int, int] = (50, 10)) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }


def anthropic_error(type_: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": "req_1"}


# -- the server ------------------------------------------------------------------------------------


class FakeProvider:
    """A threaded HTTP server answering like ``kind`` ("openai", "openai-compatible", "gemini",
    "anthropic"). ``script`` replies are used first, in order; then a default success."""

    def __init__(self, kind: str, text: str = "A brown dog runs across the green grass.") -> None:
        self.kind = kind
        self.text = text
        self.requests: list[Seen] = []
        self.script: deque[Reply] = deque()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                seen = Seen("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, raw)
                with server._lock:
                    server.requests.append(seen)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server.answer(seen)
                    if reply.delay:
                        time.sleep(reply.delay)
                finally:  # before answering, so the client's next request finds it counted
                    with server._lock:
                        server.in_flight -= 1
                try:
                    data = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                    payload = data.encode()
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What --base-url takes for this provider."""
        return f"{self.root}/v1" if self.kind.startswith("openai") else self.root

    def queue(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def answer(self, seen: Seen) -> Reply:
        try:
            problem = self.validate(seen)
        except (ValueError, KeyError, TypeError, AssertionError, OSError) as exc:
            problem = f"invalid request: {type(exc).__name__}: {exc}"
        if problem == "AUTH":
            return self.auth_error()
        if problem:
            return self.bad_request(problem)
        with self._lock:
            if self.script:
                return self.script.popleft()
        return Reply(200, self.success(seen))

    def validate(self, seen: Seen) -> str | None:
        if self.kind == "gemini":
            return validate_gemini(seen)
        if self.kind == "anthropic":
            return validate_anthropic(seen)
        return validate_openai(seen, hosted=self.kind == "openai")

    def success(self, seen: Seen) -> dict[str, Any]:
        body = seen.json
        if self.kind == "gemini":
            n = body.get("generationConfig", {}).get("candidateCount", 1)
            return gemini_ok(self.text, n)
        if self.kind == "anthropic":
            return anthropic_ok(self.text)
        return openai_ok(self.text, body.get("n", 1))

    def bad_request(self, message: str) -> Reply:
        if self.kind == "gemini":
            return Reply(400, gemini_error(400, "INVALID_ARGUMENT", message))
        if self.kind == "anthropic":
            return Reply(400, anthropic_error("invalid_request_error", message))
        return Reply(400, openai_error(message, "invalid_request_error"))

    def auth_error(self) -> Reply:
        if self.kind == "gemini":
            return Reply(403, gemini_error(403, "PERMISSION_DENIED", "API key not valid."))
        if self.kind == "anthropic":
            return Reply(401, anthropic_error("authentication_error", "invalid x-api-key"))
        return Reply(
            401,
            openai_error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
        )

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
