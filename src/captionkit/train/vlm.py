"""``captionkit train vlm``: vision encoder + projector + causal LM, saved as a LLaVA checkpoint.

The joined model *is* a transformers ``LlavaForConditionalGeneration`` from the start (the
chosen vision and text configs inside a ``LlavaConfig``), so the folder it is saved to loads
with ``--model hf:OUT`` through the existing hf backend, and with transformers or vLLM,
without any captionkit code. Stage 1 trains the projector only (encoder and LM frozen);
stage 2 adds LoRA on the LM (merged back before saving) and optionally the last N vision
layers. Training uses the prompt the hf backend sends at caption time: the style's
instruction beside the image in a user turn; the loss covers only the caption tokens.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from captionkit.errors import ConfigError, ModelLoadError, require

Echo = Callable[[str], Any]
IMAGE_TOKEN = "<image>"
#: ChatML with image placeholders, for LMs that speak ChatML (SmolLM2, Qwen).
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'text' %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: For other LMs: a plain "User:/Assistant:" layout.
PLAIN_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'text' %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


@dataclass
class VLMConfig:
    """One ``captionkit train vlm`` run."""

    data: str
    output: str
    vision: str | None = None
    llm: str | None = None
    #: Continue from a LLaVA folder (a stage-1 run) instead of joining --vision and --llm.
    init: str | None = None
    stage: str = "both"
    projector: str = "mlp"
    epochs: int = 2
    batch_size: int = 8
    lr: float = 1e-3
    lr_lora: float = 2e-4
    rank: int = 8
    alpha: int = 16
    vision_layers: int = 0
    val_split: float = 0.1
    style: str = "short"
    max_new_tokens: int = 30
    eval_images: int = 20
    max_steps: int | None = None
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.stage not in ("1", "2", "both"):
            raise ConfigError(f"--stage must be 1, 2 or both, not '{self.stage}'")
        if self.projector not in ("linear", "mlp"):
            raise ConfigError(f"--projector must be linear or mlp, not '{self.projector}'")
        if not self.init and not (self.vision and self.llm):
            raise ConfigError("train vlm needs --vision SPEC and --llm SPEC (or --init LLAVA_DIR)")
        if self.stage == "2" and not self.init:
            raise ConfigError(
                "--stage 2 continues a stage-1 run: pass --init DIR (or --stage both)"
            )


def _hf_target(spec: str) -> str:
    from captionkit.llm.loader import resolve_checkpoint

    return resolve_checkpoint(spec[3:] if spec.startswith("hf:") else spec)


def load_vision(spec: str) -> tuple[Any, Any]:
    """A vision tower and its image processor from any HF vision checkpoint: a plain vision
    model (ViT, DeiT, Swin...), a CLIP/SigLIP checkpoint (its vision half), or a
    ``captionkit train`` encoder-decoder run (its encoder)."""
    import transformers as _transformers

    transformers: Any = _transformers  # stubs lag the classes used here

    path = _hf_target(spec)
    try:
        config = transformers.AutoConfig.from_pretrained(path)
        processor = transformers.AutoImageProcessor.from_pretrained(path)
        if config.model_type == "vision-encoder-decoder":
            full = transformers.VisionEncoderDecoderModel.from_pretrained(path)
            return full.encoder, processor
        if hasattr(config, "vision_config"):  # CLIP, SigLIP: keep the vision half
            cls = transformers.AutoModel._model_mapping[type(config.vision_config)]
            return cls.from_pretrained(path), processor
        return transformers.AutoModel.from_pretrained(path), processor
    except (OSError, ValueError, KeyError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelLoadError(f"cannot load vision model '{spec}' ({reason})") from None


def join(config: VLMConfig) -> tuple[Any, Any]:
    """A new LLaVA model (vision tower + fresh projector + LM, weights copied in) and its
    processor, with ``<image>`` added to the tokenizer and a chat template that places it."""
    import torch
    import transformers as _transformers

    transformers: Any = _transformers  # stubs lag the classes used here

    vision, image_processor = load_vision(str(config.vision))
    lm_path = _hf_target(str(config.llm))
    tok = transformers.AutoTokenizer.from_pretrained(lm_path)
    lm = transformers.AutoModelForCausalLM.from_pretrained(lm_path, dtype=torch.float32)
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_tokens([IMAGE_TOKEN], special_tokens=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    lm.resize_token_embeddings(len(tok), mean_resizing=False)
    vc = vision.config
    with torch.no_grad():
        size = getattr(vc, "image_size", 224)
        size = size if isinstance(size, int) else size[0]
        probe = vision(
            torch.zeros(1, getattr(vc, "num_channels", 3), size, size), output_hidden_states=True
        )
    tokens = probe.hidden_states[-1].shape[1]
    patch = vc.patch_size if isinstance(vc.patch_size, int) else vc.patch_size[0]
    extra = tokens - (size // patch) ** 2
    strategy = "default" if extra == 1 else "full"
    if extra not in (0, 1):
        raise ConfigError(
            f"vision model '{config.vision}' is not a plain patch ViT ({tokens} tokens); "
            "LLaVA needs one"
        )
    llava_config = transformers.LlavaConfig(
        vision_config=vc,
        text_config=lm.config,
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=-2 if vc.num_hidden_layers > 2 else -1,
        vision_feature_select_strategy=strategy,
        projector_hidden_act="linear" if config.projector == "linear" else "gelu",
    )
    model = transformers.LlavaForConditionalGeneration(llava_config)
    model.model.vision_tower.load_state_dict(vision.state_dict())
    model.model.language_model.load_state_dict(lm.model.state_dict())
    model.lm_head.load_state_dict(lm.lm_head.state_dict())
    model.config.text_config.vocab_size = len(tok)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    template = CHATML_TEMPLATE if "<|im_start|>" in tok.get_vocab() else PLAIN_TEMPLATE
    tok.chat_template = template
    processor = transformers.LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy=strategy,
        chat_template=template,
        num_additional_image_tokens=extra,
        image_token=IMAGE_TOKEN,
    )
    return model, processor


def load_llava(path: str) -> tuple[Any, Any]:
    import transformers as _transformers

    transformers: Any = _transformers  # stubs lag the classes used here

    try:
        model = transformers.LlavaForConditionalGeneration.from_pretrained(path)
        processor = transformers.AutoProcessor.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelLoadError(f"cannot load the LLaVA checkpoint '{path}' ({reason})") from None
    return model, processor


def set_stage1(model: Any) -> None:
    """Projector only: the vision tower and the LM stay exactly as they were."""
    for name, p in model.named_parameters():
        p.requires_grad = "multi_modal_projector" in name


def with_stage2(model: Any, config: VLMConfig) -> Any:
    """LoRA on the LM's attention (+ the projector, + the last N vision layers)."""
    import peft
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as TARGETS

    names = TARGETS.get(model.config.text_config.model_type, ["q_proj", "v_proj"])
    pattern = rf".*language_model.*\.({'|'.join(names)})$"
    lora = peft.LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=0.0,
        target_modules=pattern,
        modules_to_save=["multi_modal_projector"],
    )
    wrapped = peft.get_peft_model(model, lora)
    if config.vision_layers:
        layers = _vision_layers(model)
        for layer in layers[-config.vision_layers :]:
            for p in layer.parameters():
                p.requires_grad = True
    return wrapped


def _vision_layers(model: Any) -> list[Any]:
    tower = model.model.vision_tower
    for path in ("encoder.layer", "encoder.layers", "vision_model.encoder.layers"):
        obj = tower
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return list(obj)
    raise ConfigError("--vision-layers: this vision model's layers were not found")


def _prompt(processor: Any, style: str) -> str:
    from captionkit.styles import get_style

    turn = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": get_style(style).instruction}],
        }
    ]
    return processor.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)


def _batch(
    processor: Any, images: list[Any], prompt: str, answers: list[str] | None
) -> dict[str, Any]:
    tok = processor.tokenizer
    texts = (
        [prompt + a + (tok.eos_token or "") for a in answers] if answers else [prompt] * len(images)
    )
    side = tok.padding_side
    tok.padding_side = "right" if answers else "left"
    enc = processor(images=images, text=texts, return_tensors="pt", padding=True)
    tok.padding_side = side
    if answers:
        plen = processor(images=images[:1], text=[prompt], return_tensors="pt")["input_ids"].shape[
            1
        ]
        labels = enc["input_ids"].clone()
        labels[:, :plen] = -100
        labels[enc["attention_mask"] == 0] = -100
        enc["labels"] = labels
    return dict(enc)


def _open(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def evaluate(
    model: Any, processor: Any, items: list[Any], config: VLMConfig, device: str
) -> dict[str, float]:
    """Greedy captions of the eval images, with captionkit's CIDEr-D and BLEU-4."""
    import torch

    from captionkit.eval.bleu import bleu
    from captionkit.eval.cider import cider_d

    items = items[: config.eval_images]
    if not items:
        return {}
    prompt = _prompt(processor, config.style)
    cands: dict[str, str] = {}
    model.eval()
    for s in range(0, len(items), config.batch_size):
        chunk = items[s : s + config.batch_size]
        enc = {
            k: v.to(device)
            for k, v in _batch(processor, [_open(it.image) for it in chunk], prompt, None).items()
        }
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=config.max_new_tokens, do_sample=False)
        texts = processor.tokenizer.batch_decode(
            out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
        )
        for it, text in zip(chunk, texts, strict=True):
            cands[it.key] = " ".join(text.split()) or "."
    model.train()
    refs = {it.key: it.references for it in items}
    return {"cider_d": cider_d(cands, refs)[0], "bleu4": bleu(cands, refs)[0][3]}


def _train_stage(
    model: Any, processor: Any, train: list[Any], val: list[Any], config: VLMConfig,
    device: str, stage: str, lr: float, echo: Echo, metrics: list[dict[str, Any]],
) -> None:  # fmt: skip
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=lr)
    prompt = _prompt(processor, config.style)
    pairs = [(it.image, ref) for it in train for ref in it.references]
    for epoch in range(config.epochs):
        random.Random(config.seed * 100 + epoch).shuffle(pairs)
        t0, losses = time.perf_counter(), []
        model.train()
        for step, s in enumerate(range(0, len(pairs), config.batch_size), 1):
            chunk = pairs[s : s + config.batch_size]
            enc = _batch(processor, [_open(p) for p, _ in chunk], prompt, [r for _, r in chunk])
            loss = model(**{k: v.to(device) for k, v in enc.items()}).loss
            loss.backward()
            optim.step()
            optim.zero_grad()
            losses.append(loss.item())
            if config.max_steps and step >= config.max_steps:
                break
        seconds = time.perf_counter() - t0
        row: dict[str, Any] = {
            "stage": stage,
            "epoch": epoch + 1,
            "train_loss": round(sum(losses) / len(losses), 4),
            "samples_per_s": round(len(losses) * config.batch_size / seconds, 2),
        }
        row.update(
            {k: round(v, 4) for k, v in evaluate(model, processor, val, config, device).items()}
        )
        metrics.append(row)
        echo(
            f"stage {stage} epoch {epoch + 1}/{config.epochs}: "
            + ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("stage", "epoch"))
        )


def run(config: VLMConfig, echo: Echo = print) -> Path:
    """Join (or load) the model, train the stages asked for, save a LLaVA folder."""
    torch = require("torch", "train", "VLM training")
    require("peft", "train", "VLM training")
    from captionkit.devices import resolve_device
    from captionkit.eval.datasets import load_dataset
    from captionkit.train.pairs import split_of

    out = Path(config.output).expanduser()
    device = resolve_device(config.device, extra="train", feature="VLM training")
    torch.manual_seed(config.seed)
    data = [it for it in load_dataset(config.data) if it.image.is_file()]
    train = [it for it in data if split_of(it.key, config.val_split, config.seed) == "train"]
    val = [it for it in data if split_of(it.key, config.val_split, config.seed) == "eval"]
    if not train:
        raise ConfigError(f"{config.data}: no training images")
    model, processor = load_llava(config.init) if config.init else join(config)
    model.to(device)
    metrics: list[dict[str, Any]] = []
    if config.stage in ("1", "both"):
        set_stage1(model)
        _train_stage(model, processor, train, val, config, device, "1", config.lr, echo, metrics)
    if config.stage in ("2", "both"):
        for p in model.parameters():
            p.requires_grad = False
        wrapped = with_stage2(model, config)
        _train_stage(
            wrapped, processor, train, val, config, device, "2", config.lr_lora, echo, metrics
        )
        model = wrapped.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    (out / "vlm-config.json").write_text(json.dumps(asdict(config), indent=1), encoding="utf-8")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    return out
