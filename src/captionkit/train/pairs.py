"""Writer training pairs: (prompt the writer sees, caption it should write), as JSONL.

Two sources, matching the two places a text LLM writes captions in captionkit:

- ``facts``: the grounded backend's facts of each image (with the template writer's draft,
  exactly as :class:`~captionkit.captioners.grounded.writers.LLMWriter` shows them) -> each
  human reference. A model trained on these is used with ``--writer hf:OUT``.
- ``description``: a describer backend's detailed description of each image -> a teacher's
  caption in a style (the references, or any text LLM / hosted API as the teacher, whose
  prompt is recorded). A model trained on these is used with ``--rewrite hf:OUT``.

Every record carries the instruction / input / output layout *and* the chat ``messages``
the runtime will send at caption time, so training sees the very prompt inference uses.
Splits are by image (a photo's pairs are all train or all eval, decided by a hash of its key
so adding photos never moves old ones), pairs are deduplicated and length-filtered.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from captionkit.errors import ConfigError, InputError

Echo = Callable[[str], Any]
SOURCES = ("facts", "description")


@dataclass
class PairOptions:
    """How pairs are built (the flags of ``captionkit data pairs``)."""

    input: Literal["facts", "description"] = "facts"
    #: ``description``: the describer backend spec (any ``--model``).
    model: str | None = None
    #: ``description``: a text-model spec that writes the target captions; None: references.
    teacher: str | None = None
    #: The teacher's own instruction (default: the rewrite prompt of ``style``).
    teacher_prompt: str | None = None
    style: str = "short"
    eval_share: float = 0.1
    seed: int = 0
    min_words: int = 3
    max_words: int = 40
    #: ``facts``: include the few-shot examples the LLM writer sends by default.
    few_shot: bool = True
    limit: int | None = None
    split: str | None = None
    grounded_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input not in SOURCES:
            raise ConfigError(f"--input must be one of {', '.join(SOURCES)}, not '{self.input}'")
        if not 0.0 <= self.eval_share < 1.0:
            raise ConfigError(f"--eval-share must be in [0, 1), not {self.eval_share}")
        if self.min_words < 0 or self.max_words < max(1, self.min_words):
            raise ConfigError("--max-words must be at least 1 and at least --min-words")
        if self.input == "description" and not self.model:
            raise ConfigError("--input description needs --model SPEC (the describer backend)")


def split_of(key: str, eval_share: float, seed: int = 0) -> str:
    """ "train" or "eval" for an image, from a hash of its key: stable as photos are added."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "big") / 2**64 < eval_share else "train"


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower()).rstrip(" .")


def _messages(turns: Sequence[Any], output: str) -> list[dict[str, str]]:
    return [
        *({"role": t.role, "content": t.content} for t in turns),
        {"role": "assistant", "content": output},
    ]


def facts_prompts(images: list[Path], options: PairOptions, echo: Echo) -> list[dict[str, Any]]:
    """Per image, the LLM writer's prompt pieces built from the grounded facts."""
    from PIL import Image

    from captionkit.captioners.grounded import prompts
    from captionkit.captioners.grounded.writers import TemplateWriter
    from captionkit.captioners.registry import create
    from captionkit.types import CaptionRequest

    captioner: Any = create("grounded", **options.grounded_options)
    template = TemplateWriter(colours=captioner.options.colours)
    style = options.style
    out: list[dict[str, Any]] = []
    batch = 8
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        prepared = []
        for path in chunk:
            with Image.open(path) as im:
                prepared.append(captioner.preprocess(im.convert("RGB"), CaptionRequest()))
        for facts in captioner.facts_batch(prepared):
            draft = template.write(facts, style)[0]
            turns = prompts.chat_messages(facts, style, None, options.few_shot, draft)
            out.append(
                {
                    "instruction": prompts._instruction(style, None),
                    "input": prompts._facts_block(facts, draft),
                    "turns": turns,
                    "draft": draft,
                }
            )
        echo(f"facts: {min(start + batch, len(images))}/{len(images)} images")
    captioner.close()
    return out


def describe(
    images: list[Path], spec: str, request: Any, batch: int = 8
) -> list[tuple[str | None, str | None]]:
    """(description, error) per image from the describer backend ``spec``.

    A plain batched loop over the backend (no results store: pairs are built once), through
    the one image decoder, so a bad photo fails alone. Training sits below the engine and
    the faces, so it drives the captioner itself rather than ``captionkit.caption``.
    """
    from captionkit.captioners.registry import create
    from captionkit.errors import CaptionkitError, ImageDecodeError
    from captionkit.inputs.decode import decode_image
    from captionkit.types import CaptionOutput

    captioner = create(spec)
    found: list[tuple[str | None, str | None]] = []
    try:
        for start in range(0, len(images), batch):
            ready: list[tuple[int, Any]] = []
            chunk: list[tuple[str | None, str | None]] = []
            for i, path in enumerate(images[start : start + batch]):
                try:
                    image = decode_image(path.read_bytes())
                    ready.append((i, captioner.preprocess(image, request)))
                    chunk.append((None, None))
                except (OSError, ImageDecodeError) as exc:
                    chunk.append((None, str(exc)))
            if ready:
                try:
                    outputs = captioner.caption_batch([x for _, x in ready], request)
                except CaptionkitError:
                    raise  # run-wide: a bad key, missing weights
                except Exception as exc:  # this batch's images fail, the others go on
                    reason = f"{type(exc).__name__}: {exc}"
                    outputs = [CaptionOutput.failed(reason) for _ in ready]
                for (i, _), output in zip(ready, outputs, strict=True):
                    best = output.candidates[0].text if output.candidates else None
                    chunk[i] = (best, output.error)
            found.extend(chunk)
    finally:
        captioner.close()
    return found


def description_prompts(
    images: list[Path], options: PairOptions, echo: Echo
) -> list[dict[str, Any]]:
    """Per image, the rewriter's prompt pieces built from the describer's description."""
    from captionkit.captioners.rewrite import DESCRIBE_STYLE, RewriteCaptioner, rewrite_prompt
    from captionkit.types import CaptionRequest

    descriptions = describe(images, str(options.model), CaptionRequest(style=DESCRIBE_STYLE))
    request = CaptionRequest(style=options.style)
    out: list[dict[str, Any]] = []
    for path, (text, error) in zip(images, descriptions, strict=True):
        if not text:
            echo(f"skipped {path.name}: {error or 'no description'}")
            out.append({})
            continue
        user = rewrite_prompt(text, request)
        from captionkit.llm.base import ChatMessage

        turns = [*RewriteCaptioner.preamble(request), ChatMessage("user", user)]
        out.append(
            {
                "instruction": user.split("\n\n", 1)[0],
                "input": text,
                "turns": turns,
                "description": text,
            }
        )
    echo(f"described {len(images)} images with {options.model}")
    return out


def teacher_outputs(prompts_: list[dict[str, Any]], options: PairOptions) -> list[list[str]]:
    """The teacher's caption for each description (one per image)."""
    from captionkit.llm import load_llm
    from captionkit.llm.base import ChatMessage
    from captionkit.types import Decoding

    llm = load_llm(str(options.teacher))
    convs: list[list[Any] | None] = []
    for p in prompts_:
        if not p:
            convs.append(None)
            continue
        turns = list(p["turns"])
        if options.teacher_prompt:
            turns = [
                ChatMessage("system", options.teacher_prompt),
                ChatMessage("user", f"Description: {p['description']}\n\nCaption:"),
            ]
        convs.append(turns)
    todo = [c for c in convs if c is not None]
    answers = iter(llm.chat(todo, Decoding(max_new_tokens=120, temperature=0.0)))
    llm.close()
    return [[next(answers).strip()] if c is not None else [] for c in convs]


def build_pairs(dataset: str, options: PairOptions, echo: Echo = print) -> list[dict[str, Any]]:
    """The pair records of ``dataset`` (any format ``captionkit eval`` reads), filtered."""
    from captionkit.eval.datasets import load_dataset

    data = load_dataset(dataset, options.split).limit(options.limit)
    items = [it for it in data if it.image.is_file()]
    if not items:
        raise InputError(f"{dataset}: no images with references found")
    images = [it.image for it in items]
    if options.input == "facts":
        built = facts_prompts(images, options, echo)
    else:
        built = description_prompts(images, options, echo)
    if options.input == "description" and options.teacher:
        outputs = teacher_outputs(built, options)
        teacher = options.teacher
    else:
        outputs = [list(it.references) for it in items]
        teacher = "references"
    records: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    dropped = {"duplicate": 0, "length": 0}
    for it, pieces, outs in zip(items, built, outputs, strict=True):
        if not pieces:
            continue
        split = split_of(it.key, options.eval_share, options.seed)
        for k, text in enumerate(outs):
            text = " ".join(text.split())
            words = len(text.split())
            if not options.min_words <= words <= options.max_words:
                dropped["length"] += 1
                continue
            key = (_normal(pieces["input"]), _normal(text))
            if key in seen:
                dropped["duplicate"] += 1
                continue
            seen.add(key)
            record = {
                "id": f"{it.key}#{k}",
                "image": it.key,
                "split": split,
                "source": options.input,
                "style": options.style,
                "teacher": teacher,
                "instruction": pieces["instruction"],
                "input": pieces["input"],
                "output": text,
                "messages": _messages(pieces["turns"], text),
            }
            if options.input == "facts":
                record["few_shot"] = options.few_shot
            if options.teacher_prompt:
                record["teacher_prompt"] = options.teacher_prompt
            records.append(record)
    echo(
        f"{len(records)} pairs from {len(items)} images "
        f"({sum(r['split'] == 'eval' for r in records)} eval); dropped "
        f"{dropped['duplicate']} duplicates, {dropped['length']} outside "
        f"{options.min_words}-{options.max_words} words"
    )
    return records


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return out


def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    """Pair records from JSONL: captionkit's own, or any file with ``messages`` or
    instruction/input/output fields (``split`` defaults to a hash of ``image`` or ``id``)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"pairs file not found: {p}")
    records = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{p}:{n}: not JSON ({exc.msg})") from None
        if "messages" not in r:
            if "output" not in r:
                raise InputError(f"{p}:{n}: a pair needs 'messages' or 'output'")
            user = "\n\n".join(x for x in (r.get("instruction"), r.get("input")) if x)
            r["messages"] = [
                {"role": "user", "content": user},
                {"role": "assistant", "content": r["output"]},
            ]
        if r["messages"][-1].get("role") != "assistant":
            raise InputError(f"{p}:{n}: the last message must be the assistant's caption")
        r.setdefault("image", r.get("id", str(n)))
        r.setdefault("split", split_of(str(r["image"]), 0.1))
        records.append(r)
    if not records:
        raise InputError(f"{p}: no pairs")
    return records
