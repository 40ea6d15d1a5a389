"""hf: throughput at real model sizes: captionkit's engine vs the transformers pipeline loop.

    python benchmarks/hf_throughput.py --device cpu  --images 24
    python benchmarks/hf_throughput.py --device cuda                 # ~8 minutes on one GPU

Models are built here from configs of the published architectures, at their real sizes with
random weights (the compute per image is the trained model's): ViT-GPT2 (ViT-B/16-224 +
GPT-2 124M), BLIP-base (ViT-B/16-384 + BERT-base decoder), GIT-base, and an Idefics3 sized
like SmolVLM-256M (SigLIP-B/16-512 + a 135M Llama). Nothing is downloaded: tokenizers are
word-level ones padded to each model's real vocabulary size. Every contender generates
exactly ``--max-new-tokens`` tokens (min = max), so random weights cost what captions do.

Contenders, on the same JPEG files (the dev photos repeated; each copy has a few bytes after
its JPEG end so content hashes differ and the store never answers from a cache):

1. ``loop``: the transformers pipeline called one image at a time (what seed scripts do);
2. ``batched``: the same with ``batch_size=N``;
3. ``captionkit``: the engine end to end from files: read, hash, store lookup, decode,
   preprocess in worker threads, generate, commit to a SQLite store, write a JSONL sink.

transformers 5 removed ``pipeline("image-to-text")``: for the three captioners the loop and
batched contenders are that pipeline's code path written out (load the file with PIL, run the
image processor on the calling thread, ``generate``, decode), which is what it did with
``batch_size`` (a DataLoader without workers). The chat VLM uses the real
``pipeline("image-text-to-text")``. Printed: img/s, ratios, and on CUDA the sampled GPU busy
fraction and peak memory.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "flickr8k-dev" / "images"
MODELS = ("vit-gpt2", "blip", "git", "smolvlm")


# -- real-size random-weight checkpoints --------------------------------------------------
def make_tokenizer(vocab_size: int, specials: tuple[str, ...] = (), template: str | None = None):
    """A word-level fast tokenizer with exactly ``vocab_size`` entries (the model's real LM
    head size), so every id a random model generates decodes to a word."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    base = ["<pad>", "<s>", "</s>", "<unk>", *specials]
    words = [f"w{i}" for i in range(vocab_size - len(base))]
    vocab = {tok: i for i, tok in enumerate(base + words)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=list(specials) or None,
        **({"extra_special_tokens": {"image_token": "<image>"}} if "<image>" in specials else {}),
    )
    if template:
        tok.chat_template = template
    return tok


def _steer(model: Any, tok: Any, tokens: int) -> None:
    """Fixed length for every contender (the model's own generation config): no special
    tokens, no early EOS."""
    gc = model.generation_config
    gc.min_new_tokens = gc.max_new_tokens = tokens
    gc.suppress_tokens = [i for i in tok.all_special_ids if i != tok.eos_token_id]
    gc.pad_token_id = tok.pad_token_id
    gc.eos_token_id = tok.eos_token_id


def build_vit_gpt2(out: Path, tokens: int, _: Any) -> str:
    """nlpconnect/vit-gpt2-image-captioning's shapes: ViT-B/16 224 + GPT-2 124M."""
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    tok = make_tokenizer(50257)
    dec = GPT2Config(
        vocab_size=50257,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        is_decoder=True,
        add_cross_attention=True,
    )
    config = VisionEncoderDecoderConfig(encoder=ViTConfig().to_dict(), decoder=dec.to_dict())
    config.decoder_start_token_id = tok.bos_token_id
    config.pad_token_id = tok.pad_token_id
    config.eos_token_id = tok.eos_token_id
    model = VisionEncoderDecoderModel(config=config)
    model.generation_config.decoder_start_token_id = tok.bos_token_id
    _steer(model, tok, tokens)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    ViTImageProcessor(
        size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(out)
    return "captioner"


def build_blip(out: Path, tokens: int, _: Any) -> str:
    """Salesforce/blip-image-captioning-base's shapes: ViT-B/16 at 384 px + BERT-base."""
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    tok = make_tokenizer(30524, specials=("[DEC]",))
    config = BlipConfig(
        vision_config={"image_size": 384},
        text_config={
            "vocab_size": 30524,
            "bos_token_id": tok.convert_tokens_to_ids("[DEC]"),
            "pad_token_id": tok.pad_token_id,
            "sep_token_id": tok.eos_token_id,
            "eos_token_id": tok.eos_token_id,
        },
    )
    model = BlipForConditionalGeneration(config)
    _steer(model, tok, tokens)
    model.save_pretrained(out)
    BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 384, "width": 384}), tokenizer=tok
    ).save_pretrained(out)
    return "captioner"


def build_git(out: Path, tokens: int, _: Any) -> str:
    """microsoft/git-base's shapes: CLIP ViT-B/16 224 + a 6-layer BERT-size decoder."""
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    tok = make_tokenizer(30522)
    config = GitConfig(
        vocab_size=30522,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = GitForCausalLM(config)
    _steer(model, tok, tokens)
    model.save_pretrained(out)
    GitProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
        ),
        tokenizer=tok,
    ).save_pretrained(out)
    return "captioner"


SMOL_TEMPLATE = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def build_smolvlm(out: Path, tokens: int, args: Any) -> str:
    """HuggingFaceTB/SmolVLM-256M-Instruct's shapes: SigLIP-B/16 at 512 px, pixel shuffle 4
    (64 tokens a tile), SmolLM2-135M; images split in 512 px tiles up to ``longest_edge``."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
    )

    grid = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    specials = ("<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>")
    tok = make_tokenizer(49280, specials=(*specials, "<|im_start|>", *grid), template=SMOL_TEMPLATE)
    text = LlamaConfig(
        vocab_size=49280,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    vision = Idefics3VisionConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=512,
        patch_size=16,
    )
    config = Idefics3Config(
        vision_config=vision,
        text_config=text,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=4,
        tie_word_embeddings=True,
    )
    model = Idefics3ForConditionalGeneration(config)
    _steer(model, tok, tokens)
    model.save_pretrained(out)
    edge = args.vlm_longest_edge
    Idefics3Processor(
        image_processor=Idefics3ImageProcessor(
            size={"longest_edge": edge},
            max_image_size={"longest_edge": 512},
            do_image_splitting=edge > 512,
        ),
        tokenizer=tok,
        image_seq_len=64,
        chat_template=SMOL_TEMPLATE,
    ).save_pretrained(out)
    return "chat"


BUILDERS: dict[str, Callable[[Path, int, Any], str]] = {
    "vit-gpt2": build_vit_gpt2,
    "blip": build_blip,
    "git": build_git,
    "smolvlm": build_smolvlm,
}


# -- files ---------------------------------------------------------------------------------
def make_files(photos: Path, n: int, out: Path) -> list[Path]:
    """``n`` JPEG files: the photos repeated, each copy with its number after the JPEG end
    (decoders ignore it; its content hash is its own)."""
    sources = sorted(photos.glob("*.jpg"))
    if not sources:
        sys.exit(f"no JPEG photos in {photos}")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        src = sources[i % len(sources)]
        dst = out / f"{i:06d}_{src.name}"
        dst.write_bytes(src.read_bytes() + f"copy{i}".encode())
        files.append(dst)
    return files


# -- GPU sampling --------------------------------------------------------------------------
@dataclass
class GpuSampler:
    """GPU busy fraction (the driver's utilisation %, sampled every 100 ms) while running."""

    device: str
    samples: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _read(self) -> float | None:
        import torch

        try:
            return float(torch.cuda.utilization(torch.device(self.device)))
        except Exception:  # no pynvml: ask nvidia-smi
            index = self.device.partition(":")[2] or "0"
            try:
                out = subprocess.run(
                    ["nvidia-smi", "-i", index, "--query-gpu=utilization.gpu",
                     "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=5, check=True,
                )  # fmt: skip
                return float(out.stdout.strip().splitlines()[0])
            except Exception:
                return None

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            value = self._read()
            if value is not None:
                self.samples.append(value)

    def __enter__(self) -> GpuSampler:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def busy(self) -> float | None:
        return sum(self.samples) / len(self.samples) / 100 if self.samples else None


def peak_gib(device: str) -> float | None:
    import torch

    if not device.startswith("cuda"):
        return None
    return torch.cuda.max_memory_allocated() / 2**30


# -- contenders ----------------------------------------------------------------------------
def _dtype(device: str) -> Any:
    from captionkit.devices import resolve_dtype

    return resolve_dtype("auto", device)


def _gen(tokens: int) -> dict[str, Any]:
    return {"max_new_tokens": tokens, "min_new_tokens": tokens, "do_sample": False}


class PipelineCaptioner:
    """transformers' image-to-text pipeline code path (removed in transformers 5), written
    out: PIL load, image processor on the calling thread, generate, decode."""

    def __init__(self, path: Path, device: str, tokens: int) -> None:
        import transformers

        self.device, self.dtype, self.gen = device, _dtype(device), _gen(tokens)
        config = transformers.AutoConfig.from_pretrained(path)
        cls = (
            transformers.VisionEncoderDecoderModel
            if config.model_type == "vision-encoder-decoder"
            else transformers.AutoModelForImageTextToText
        )
        self.model = cls.from_pretrained(path, dtype=self.dtype).to(device).eval()
        self.image_processor = transformers.AutoImageProcessor.from_pretrained(path)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)

    def __call__(self, files: list[Path], batch_size: int = 1) -> list[str]:
        import torch
        from PIL import Image

        texts: list[str] = []
        for i in range(0, len(files), batch_size):
            pixels = [
                self.image_processor(images=Image.open(f).convert("RGB"), return_tensors="pt")[
                    "pixel_values"
                ]
                for f in files[i : i + batch_size]
            ]
            batch = torch.cat(pixels).to(self.device, dtype=self.dtype)
            with torch.inference_mode():
                out = self.model.generate(pixel_values=batch, **self.gen)
            texts.extend(self.tokenizer.batch_decode(out, skip_special_tokens=True))
        return texts


class ChatPipeline:
    """transformers' ``pipeline("image-text-to-text")`` with the style's instruction."""

    def __init__(self, path: Path, device: str, tokens: int, instruction: str) -> None:
        from transformers import pipeline

        self.pipe = pipeline(
            "image-text-to-text", model=str(path), device=device, dtype=_dtype(device)
        )
        self.pipe.tokenizer.padding_side = "left"
        self.gen, self.instruction = _gen(tokens), instruction

    def __call__(self, files: list[Path], batch_size: int = 1) -> list[str]:
        messages = [
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "url": str(f)},
                        {"type": "text", "text": self.instruction},
                    ],
                }
            ]
            for f in files
        ]
        out = self.pipe(
            text=messages,
            batch_size=batch_size,
            generate_kwargs=self.gen,
            return_full_text=False,
        )
        return [o[0]["generated_text"] if isinstance(o, list) else o["generated_text"] for o in out]


def run_engine(
    captioner: Any, files: list[Path], work: Path, batch_size: int | None, workers: int
) -> tuple[int, Any]:
    """captionkit end to end from files, with a store and a JSONL sink (fresh each call)."""
    from captionkit.engine.runner import Runner, RunOptions
    from captionkit.engine.sinks import StreamSink
    from captionkit.engine.store import ResultStore
    from captionkit.inputs.sources import iter_sources
    from captionkit.types import CaptionRequest, Decoding

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    request = CaptionRequest(decoding=Decoding(max_new_tokens=captioner.options.min_new_tokens))
    store = ResultStore(work / "results.sqlite")
    runner = Runner(
        captioner,
        request,
        store=store,
        sinks=[StreamSink("jsonl", work / "captions.jsonl")],
        options=RunOptions(batch_size=batch_size, workers=workers),
    )
    summary = runner.run(iter_sources([str(f) for f in files]))
    store.close() if hasattr(store, "close") else None
    if summary.captioned != len(files):
        raise SystemExit(f"captionkit captioned {summary.captioned}/{len(files)}: "
                         f"{summary.failures[:3]}")  # fmt: skip
    return runner.batch_size, summary


@dataclass
class Row:
    model: str
    contender: str
    images: int
    seconds: float
    batch: str
    busy: float | None = None
    peak: float | None = None

    @property
    def rate(self) -> float:
        return self.images / self.seconds


def timed(device: str, fn: Callable[[], Any]) -> tuple[float, GpuSampler, float | None]:
    import torch

    with GpuSampler(device) as sampler:
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return seconds, sampler, peak_gib(device)


def bench_model(name: str, args: argparse.Namespace, files: list[Path], work: Path) -> list[Row]:
    import torch

    from captionkit.captioners.registry import create
    from captionkit.styles import get_style
    from captionkit.types import CaptionRequest

    path = work / name
    t0 = time.perf_counter()
    with torch.device("cpu"):
        torch.manual_seed(0)
        kind = BUILDERS[name](path, args.max_new_tokens, args)
    print(f"# {name}: built in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    loop_files = files[: args.loop_images or len(files)]
    rows: list[Row] = []
    if kind == "chat":
        instruction = get_style(CaptionRequest().style).instruction
        pipe: Any = ChatPipeline(path, args.device, args.max_new_tokens, instruction)
    else:
        pipe = PipelineCaptioner(path, args.device, args.max_new_tokens)
    captioner = create(
        f"hf:{path}", device=args.device, min_new_tokens=args.max_new_tokens, raw=True
    )
    captioner.loaded  # noqa: B018  (weights load outside the timing, as for the pipeline)
    n = args.batch_size
    cuda = args.device.startswith("cuda")
    engine_bs = args.engine_batch_size or (None if cuda else n)  # cuda: automatic
    pipe(files[:2], batch_size=2)  # warm-up: kernels, allocator, lazy imports
    run_engine(captioner, files[:4], work / "warm", engine_bs, args.workers)
    used: list[int] = []
    contenders: list[tuple[str, int, str, Callable[[], Any]]] = [
        ("pipeline loop", len(loop_files), "1", lambda: pipe(loop_files, batch_size=1)),
        ("pipeline batched", len(files), str(n), lambda: pipe(files, batch_size=n)),
        (
            "captionkit engine",
            len(files),
            "",
            lambda: used.append(
                run_engine(captioner, files, work / "run", engine_bs, args.workers)[0]
            ),
        ),
    ]
    best: dict[str, Row] = {}
    # Rounds interleave the contenders and keep each one's best time: on a shared machine
    # the slow outliers are other people's work, not the contender's.
    for _ in range(args.rounds):
        for label, count, batch, fn in contenders:
            s, smp, pk = timed(args.device, fn)
            if label not in best or s < best[label].seconds:
                best[label] = Row(name, label, count, s, batch, smp.busy, pk)
    fit = captioner._fit.limit if captioner._fit is not None else None
    best["captionkit engine"].batch = f"{used[0]}" + (
        f" (fits {fit})" if fit and fit < used[0] else ""
    )
    rows.extend(best.values())
    contenders.clear()  # drops the pipeline's model with the closures holding it
    captioner.close()
    shutil.rmtree(path, ignore_errors=True)
    return rows


def machine(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(torch.device(device))}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    threads = torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({threads} threads)"


def print_table(rows: list[Row], device: str) -> None:
    cuda = device.startswith("cuda")
    head = "| model | contender | images | batch | img/s | × loop | × batched |"
    head += " GPU busy | peak GiB |" if cuda else ""
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    by_model: dict[str, dict[str, Row]] = {}
    for r in rows:
        by_model.setdefault(r.model, {})[r.contender] = r
    for r in rows:
        base = by_model[r.model]
        loop = base["pipeline loop"].rate
        batched = base["pipeline batched"].rate
        line = (
            f"| {r.model} | {r.contender} | {r.images} | {r.batch} | {r.rate:.2f} | "
            f"{r.rate / loop:.2f} | {r.rate / batched:.2f} |"
        )
        if cuda:
            busy = f"{100 * r.busy:.0f}%" if r.busy is not None else "n/a"
            peak = f"{r.peak:.1f}" if r.peak is not None else "n/a"
            line += f" {busy} | {peak} |"
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--images", type=int, default=None, help="cpu: 24, cuda: 2000")
    parser.add_argument(
        "--loop-images", type=int, default=None, help="images for the one-at-a-time loop "
        "(its rate per image needs fewer; cuda default 200)",
    )  # fmt: skip
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch-size", type=int, default=None, help="pipeline N (cpu 8, cuda 64)")
    parser.add_argument(
        "--engine-batch-size", type=int, default=None,
        help="captionkit's --batch-size (cpu: N; cuda: automatic)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=None, help="decode workers (cores, <=8)")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument(
        "--rounds", type=int, default=1, help="interleaved rounds; each contender's best kept"
    )
    parser.add_argument(
        "--vlm-longest-edge", type=int, default=None,
        help="SmolVLM image side before 512 px tiling (cuda: 2048 as published; cpu: 512)",
    )  # fmt: skip
    parser.add_argument("--photos", type=Path, default=PHOTOS)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()

    import os

    cuda = args.device.startswith("cuda")
    args.images = args.images or (2000 if cuda else 24)
    args.loop_images = args.loop_images or (min(200, args.images) if cuda else args.images)
    args.batch_size = args.batch_size or (64 if cuda else 8)
    args.workers = args.workers or min(8, os.cpu_count() or 1)
    args.vlm_longest_edge = args.vlm_longest_edge or (2048 if cuda else 512)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    from captionkit.devices import resolve_device

    resolve_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="ck-hf-bench-"))
    try:
        files = make_files(args.photos, args.images, work / "photos")
        rows: list[Row] = []
        for name in args.models.split(","):
            done = bench_model(name.strip(), args, files, work)
            rows.extend(done)
            for r in done:  # as they come: a long run interrupted still shows its figures
                line = f"# {r.model} {r.contender}: {r.rate:.3f} img/s ({r.images} images"
                print(f"{line}, batch {r.batch})", file=sys.stderr, flush=True)
        print(f"\nmachine: {machine(args.device)}; date: {time.strftime('%Y-%m-%d')}")
        print(
            f"images: {args.images} JPEG (dev photos repeated; loop: {args.loop_images}); "
            f"{args.max_new_tokens} tokens each (min = max); pipeline N = {args.batch_size}; "
            f"decode workers: {args.workers}; SmolVLM longest edge {args.vlm_longest_edge}; "
            f"best of {args.rounds} interleaved round(s)\n"
        )
        print_table(rows, args.device)
        if args.json:
            args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
