"""Multi-stage runs: a stages file chains several captioning runs over the same images.

    [[stage]]                                   # describe with a VLM
    name = "describe"
    model = "hf:Qwen/Qwen2-VL-2B-Instruct"
    style = "detailed"

    [[stage]]                                   # shorten with a text LLM
    name = "short"
    llm = "smollm2"
    prompt = "Shorten to one sentence of at most 15 words: {caption}"

Each stage is a full engine run over the inputs (prepare | caption | finish), with its own model,
style and prompt; a stage's prompt may use ``{caption}`` (the previous stage's text) and
``{tags}`` (the tags of an earlier tagger stage, or of a stage of style ``tags``) beside the
usual ``{name}``, ``{directory}``, ``{column:NAME}``. Every stage keeps its results in the
results store under a key that includes the previous stage's output, so a run stopped between
(or inside) stages resumes where it was: finished stages come back from the store without
their model computing anything. Each image's stage outputs are kept in
``extra["stages"][name]``; only the last stage's caption goes to the sidecars and streams.

A text stage (``llm = ...``: ``smollm2``, ``gguf:PATH``, ``hf:ORG/NAME``,
``openai-compatible:NAME``...) sees no pixels: its prompt carries the earlier stage's text.
Without a prompt it rewrites ``{caption}`` into the stage's style, as ``--rewrite`` does.

Floor 7: a face of run assembly (:mod:`captionkit.session`) and the streaming driver.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from captionkit import session
from captionkit.captioners.base import Captioner
from captionkit.engine.sinks import Sink
from captionkit.errors import CaptionkitError, ConfigError
from captionkit.inputs.sources import Source
from captionkit.prompts import (
    Earlier,
    PromptSet,
    load_prompt_file,
    make_renderer,
    prompt_set,
    tags_text,
)
from captionkit.types import Candidate, CaptionOutput, CaptionRequest, CaptionResult

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    from captionkit.engine.progress import Progress
    from captionkit.llm.base import TextLLM

__all__ = ["Stage", "StageSpec", "caption_stages", "execute", "load_stages", "plan"]


class StageSpec(BaseModel):
    """One ``[[stage]]`` table of a stages file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    #: A captioner spec (``hf:...``, ``grounded``, ``tagger:...``, ``openai:...``).
    model: str | None = None
    #: A text LLM spec: the stage reads the earlier stage's text, not the image.
    llm: str | None = None
    style: str | None = None
    prompt: str | None = None
    prompt_file: str | None = None
    #: Backend options (a model stage) or text-LLM options (``base_url``, ``api_key``...).
    options: dict[str, Any] = Field(default_factory=dict)
    num_captions: int | None = Field(default=None, ge=1)
    max_new_tokens: int | None = Field(default=None, ge=1)


class _StagesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: list[StageSpec] = Field(min_length=1)


def load_stages(source: str | Path | Sequence[Mapping[str, Any] | StageSpec]) -> list[StageSpec]:
    """A stages file (TOML, ``[[stage]]`` tables) or a list of stage tables, checked: unknown
    keys, a stage with neither or both of ``model``/``llm``, repeated names are one line.
    A ``prompt_file`` is relative to the stages file's folder."""
    where = "stages"
    base = Path.cwd()
    if isinstance(source, str | Path):
        path = Path(source).expanduser()
        where, base = f"stages file {path}", path.parent
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{where}: no such file") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    else:
        data = {"stage": [s.model_dump() if isinstance(s, StageSpec) else dict(s) for s in source]}
    try:
        stages = _StagesFile.model_validate(data).stage
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = list(first["loc"])
        at = ""
        if len(loc) >= 2 and loc[0] == "stage" and isinstance(loc[1], int):
            entry = data.get("stage", [])[loc[1]] if isinstance(data.get("stage"), list) else {}
            label = entry.get("name") if isinstance(entry, dict) else None
            at = f"stage {loc[1] + 1}" + (f" ('{label}')" if label else "")
            loc = loc[2:]
        key = ".".join(str(p) for p in loc)
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        known = ", ".join(StageSpec.model_fields) if msg == "unknown key" else ""
        hint = f" (keys: {known})" if known else ""
        if not data.get("stage") and first["type"] in ("missing", "too_short"):
            raise ConfigError(f"{where}: no [[stage]] tables") from None
        parts = [p for p in (where, at, f"'{key}'" if key else "") if p]
        raise ConfigError(f"{': '.join(parts)}: {msg}{hint}") from None
    seen: set[str] = set()
    out = []
    for spec in stages:
        if spec.name in seen:
            raise ConfigError(f"{where}: two stages are named '{spec.name}'")
        seen.add(spec.name)
        if (spec.model is None) == (spec.llm is None):
            raise ConfigError(f"{where}: stage '{spec.name}': give one of model = ... or llm = ...")
        if spec.prompt is not None and spec.prompt_file is not None:
            raise ConfigError(f"{where}: stage '{spec.name}': give prompt or prompt_file, not both")
        if spec.prompt_file is not None and not Path(spec.prompt_file).expanduser().is_absolute():
            spec = spec.model_copy(update={"prompt_file": str(base / spec.prompt_file)})
        out.append(spec)
    return out


# -- planning: one RunSpec per stage, every check before any model loads ---------------------


@dataclass
class Stage:
    """One stage, assembled: its spec, its run and its prompts."""

    spec: StageSpec
    run: session.RunSpec
    prompts: PromptSet | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def makes_tags(self) -> bool:
        model = (self.spec.model or "").split(":", 1)[0]
        return model == "tagger" or self.run.request.style == "tags"


#: Values that name one model and prompt: a stages file gives them per stage.
_PER_STAGE = ("model", "prompt", "prompt_file", "rewrite")


def plan(
    stages: str | Path | Sequence[Mapping[str, Any] | StageSpec],
    inputs: Sequence[str] = (),
    *,
    config: str | Path | None = None,
    backend_flags: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    **explicit: Any,
) -> list[Stage]:
    """Every stage's run, from the stages file and the run's own values (``explicit``, as
    :func:`captionkit.session.build_run` takes them). ``--model``, ``--prompt``, ``--rewrite``
    and ``-o`` belong to a stage, so they are refused here with the place to put them."""
    for key in _PER_STAGE:
        if explicit.get(key) is not None:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"{flag} is set per stage with --stages: put it in the stages file")
    if options:
        raise ConfigError("-o options are set per stage with --stages: use the stage's options")
    specs = load_stages(stages)
    planned: list[Stage] = []
    for spec in specs:
        values = {k: v for k, v in explicit.items() if k not in _PER_STAGE}
        if spec.style is not None:
            values["style"] = spec.style
        # Several captions are written by the last stage only (-n applies to it).
        last = spec is specs[-1]
        values["num_captions"] = spec.num_captions or (explicit.get("num_captions") if last else 1)
        if spec.max_new_tokens is not None:
            values["max_new_tokens"] = spec.max_new_tokens
        try:
            run = session.build_run(
                inputs,
                config=config,
                backend_flags=backend_flags if spec.model else None,
                options=spec.options if spec.model else None,
                model=spec.model,
                **values,
            )
        except CaptionkitError as exc:  # the same kind of error, saying which stage
            exc.args = (f"stage '{spec.name}': {exc}",)
            raise
        prompts = _stage_prompts(spec)
        if spec.llm is not None:
            prompts = prompts or _rewrite_prompts(run.request)
            run = run.model_copy(
                update={"backend": f"llm:{spec.llm}", "backend_name": TextStage.name, "options": {}}
            )
        if prompts is not None:
            prompts.check_stage(
                stage=spec.name,
                earlier=[s.name for s in planned],
                tags=any(s.makes_tags for s in planned),
            )
            if spec.llm is not None and not prompts.variables & {"caption", "tags"}:
                raise ConfigError(
                    f"stage '{spec.name}': a text stage sees no image: its prompt needs "
                    "{caption} or {tags}"
                )
            request = _with_prompt(run.request, prompts.request_prompt)
            run = run.model_copy(update={"request": request, "prompts": prompts})
        stage = Stage(spec, run, prompts)
        _check_backend(stage)
        planned.append(stage)
    return planned


def _stage_prompts(spec: StageSpec) -> PromptSet | None:
    if spec.prompt_file is not None:
        return load_prompt_file(spec.prompt_file)
    if spec.prompt is not None:
        return prompt_set(spec.prompt, origin=f"stage '{spec.name}': prompt")
    return None


def _rewrite_prompts(request: CaptionRequest) -> PromptSet:
    """A text stage with no prompt rewrites ``{caption}`` into its style (``--rewrite``'s)."""
    from captionkit.captioners.rewrite import rewrite_prompt

    text = rewrite_prompt("\0", request).replace("{", "{{").replace("}", "}}")
    return prompt_set(text.replace("\0", "{caption}"), origin="rewrite")


def _with_prompt(request: CaptionRequest, prompt: str) -> CaptionRequest:
    import dataclasses

    return dataclasses.replace(request, prompt=prompt)


def _check_backend(stage: Stage) -> None:
    """What the backend declares it cannot do, refused before any model loads."""
    if stage.spec.model is None:
        return
    from captionkit.captioners import registry
    from captionkit.engine.stages import check_request

    try:
        check_request(registry.get_backend(stage.run.backend_name), stage.run.request)
    except ConfigError as exc:
        raise ConfigError(f"stage '{stage.name}': {exc}") from None


# -- text stages -----------------------------------------------------------------------------


class TextStage(Captioner):
    """A stage whose model is a text LLM: each image's input is its rendered prompt."""

    name: ClassVar[str] = "llm"
    description: ClassVar[str] = "a text LLM stage of a stages file (reads {caption}/{tags})"
    default_batch_size: ClassVar[int] = 8

    def __init__(self, llm: TextLLM, *, rewrite: bool = False) -> None:
        super().__init__(llm.label)
        self.llm = llm
        #: The stage had no prompt: send ``--rewrite``'s system turn and worked example too.
        self.rewrite = rewrite

    @property
    def model_label(self) -> str:
        return self.llm.label

    def preprocess(self, image: Any, request: CaptionRequest) -> Any:
        return request.prompt or ""

    def caption_batch(self, inputs: list[Any], request: CaptionRequest) -> list[CaptionOutput]:
        from captionkit.captioners.rewrite import RewriteCaptioner
        from captionkit.llm.base import ChatMessage, text_decoding
        from captionkit.styles import STYLES, finish

        n = max(1, request.num_captions)
        dec = request.decoding
        if n > 1 and not dec.do_sample:
            dec = dec.replace(do_sample=True, temperature=0.7)
        config = text_decoding(dec, max_new_tokens=max(dec.max_new_tokens, 100))
        preamble = RewriteCaptioner.preamble(request) if self.rewrite else []
        if self.rewrite and len(preamble) > 1:  # the example was built for the style's prompt
            preamble = preamble[:1]
        chats = [[*preamble, ChatMessage("user", str(p))] for p in inputs for _ in range(n)]
        answers = self.llm.chat(chats, config) if chats else []
        outputs = []
        for i in range(len(inputs)):
            texts: list[str] = []
            for answer in answers[i * n : (i + 1) * n]:
                text = finish(answer, request.style) if request.style in STYLES else answer.strip()
                if text and text not in texts:
                    texts.append(text)
            if texts:
                outputs.append(CaptionOutput([Candidate(t) for t in texts]))
            else:
                outputs.append(CaptionOutput.failed("the text model gave an empty answer"))
        return outputs

    def fingerprint(self) -> str:
        return json.dumps({"llm": self.llm.label, "rewrite": self.rewrite}, sort_keys=True)

    def close(self) -> None:
        self.llm.close()


def load_stage(stage: Stage) -> Captioner:
    """The stage's model, loaded."""
    if stage.spec.llm is None:
        return session.load(stage.run)
    from captionkit.llm import load_llm
    from captionkit.llm.openai_compat import hosted_llm_options

    spec = stage.spec.llm
    opts = hosted_llm_options(spec, stage.spec.options, key_source=f"stage '{stage.name}' options")
    rewrite = stage.spec.prompt is None and stage.spec.prompt_file is None
    return TextStage(load_llm(spec, **opts), rewrite=rewrite)


# -- running ---------------------------------------------------------------------------------


@dataclass
class _Made:
    """What one earlier stage made for one image."""

    text: str | None
    tags: str | None
    error: str | None


@dataclass
class _Chain:
    """Every earlier stage's output per image (by source key), in stage order."""

    made: dict[str, dict[str, _Made]] = field(default_factory=dict)

    def earlier(self, source: Source) -> Earlier | None:
        stages = self.made.get(source.key)
        if not stages:
            return Earlier(failed="no result from the earlier stages")
        last = list(stages.values())[-1]
        for name, made in stages.items():
            if made.error is not None:
                return Earlier(failed=f"stage '{name}' failed: {made.error}")
        tags = None  # the latest stage that made tags: a tagger, or a "tags" style
        for made in stages.values():
            tags = made.tags if made.tags is not None else tags
        return Earlier(caption=last.text, tags=tags)

    def texts(self, key: str) -> dict[str, str | None]:
        return {name: made.text for name, made in self.made.get(key, {}).items()}


class _Recorder(Sink):
    """An earlier stage's sink: remembers each image's text and tags for the next stage."""

    def __init__(self, chain: _Chain, stage: str) -> None:
        self.chain, self.stage = chain, stage

    def write(self, result: CaptionResult, source: Source) -> None:
        text = result.text if result.ok else None
        tagged = result.style == "tags" or tags_text(result.extra) is not None
        made = _Made(text, text if tagged else None, result.error)
        self.chain.made.setdefault(source.key, {})[self.stage] = made


class _LastStage(Sink):
    """The last stage's sink: adds ``extra["stages"]`` and hands the result to the run's sinks."""

    def __init__(self, chain: _Chain, stage: str, sinks: Sequence[Sink]) -> None:
        self.chain, self.stage, self.sinks = chain, stage, list(sinks)

    def already_done(self, source: Source) -> bool:
        return bool(self.sinks) and all(s.already_done(source) for s in self.sinks)

    def write(self, result: CaptionResult, source: Source) -> None:
        stages = self.chain.texts(source.key)
        stages[self.stage] = result.text if result.ok else None
        result.extra = {**result.extra, "stages": stages}
        for sink in self.sinks:
            sink.write(result, source)

    def flush(self) -> None:
        for sink in self.sinks:
            sink.flush()

    def close(self, *, complete: bool = True) -> None:
        """The run's sinks are closed by :func:`execute` (after the last stage)."""


def execute(
    stages: Sequence[Stage],
    items: Iterable[Source],
    *,
    sinks: Sequence[Sink] | None = None,
    progress: Progress | None = None,
    collect: bool = False,
    on_stage: Callable[[int, Stage], None] | None = None,
    captioners: Mapping[str, Captioner] | None = None,
) -> session.Outcome:
    """Run ``stages`` in order over ``items``; the last one writes to ``sinks`` (None: the
    last stage's own sink policy). ``on_stage(i, stage)`` is called as each stage starts
    (a face prints it). ``captioners``: already loaded models by stage name (left open).

    Images every sink already holds are skipped before the first stage. A stage that stops
    the run (an error, Ctrl-C) leaves every finished stage in the store: rerun to resume.
    """
    from captionkit.engine.runner import Runner, RunSummary

    if not stages:
        raise ConfigError("a stages file needs at least one [[stage]]")
    last = stages[-1]
    sinks = session.make_sinks(last.run) if sinks is None else list(sinks)
    session.check_outputs(last.run, sinks)
    sources = list(items)
    todo = [s for s in sources if not (sinks and all(k.already_done(s) for k in sinks))]
    chain = _Chain()
    usage: dict[str, Any] = {}
    summary = RunSummary()
    store_path: Path | None = None
    complete = False
    try:
        for i, stage in enumerate(stages):
            is_last = i == len(stages) - 1
            if on_stage is not None:
                on_stage(i, stage)
            given = (captioners or {}).get(stage.name)
            store = session.open_store(stage.run.store)
            try:
                model = given if given is not None else load_stage(stage)
            except BaseException:
                if store is not None:
                    store.close()
                raise
            options = session.run_options(stage.run, collect=collect and is_last)
            options.render = make_renderer(stage.prompts, chain.earlier if i else None)
            if not is_last:  # decoration is for the written caption, not the next prompt
                options.prefix = options.suffix = options.trigger_word = ""
                if options.tags is not None and options.tags.trigger_word:
                    options.tags = options.tags.model_copy(update={"trigger_word": ""})
            stage_sink: Sink = (
                _LastStage(chain, stage.name, sinks) if is_last else _Recorder(chain, stage.name)
            )
            runner = Runner(
                model,
                stage.run.request,
                store=store,
                sinks=[stage_sink],
                progress=progress if is_last else None,
                options=options,
            )
            try:
                summary = runner.run(todo)
            finally:
                if given is None:
                    model.close()
                if store is not None:
                    store_path = store.path
                    store.close()
            for key, value in (model.stats() or {}).items():  # tokens and cost add up
                if isinstance(value, int | float) and not isinstance(value, bool):
                    usage[key] = usage.get(key, 0) + value
            if summary.interrupted:
                break
        complete = not summary.interrupted
    finally:
        _close(sinks, complete)
    summary.skipped += len(sources) - len(todo)
    return session.Outcome(summary, usage, store_path)


def _close(sinks: Sequence[Sink], complete: bool) -> None:
    first: CaptionkitError | None = None
    for sink in sinks:
        try:
            sink.close(complete=complete)
        except CaptionkitError as exc:
            first = first or exc
    if first is not None and complete:
        raise first


def caption_stages(
    inputs: Iterable[str | Path | Any],
    stages: str | Path | Sequence[Mapping[str, Any] | StageSpec],
    *,
    config: str | Path | None = None,
    **values: Any,
) -> list[CaptionResult]:
    """The Python API of a multi-stage run: results (the last stage's, each with
    ``extra["stages"]``) in input order; ``values`` are :func:`captionkit.caption`'s run
    values (``store``, ``force``, ``batch_size``, ``trigger_word``, ``tags``...)."""
    from captionkit.inputs.sources import is_url, iter_sources

    store = values.pop("store", None)
    if store is False:
        values["store"] = "none"
    elif store not in (None, True):
        values["store"] = str(store)
    planned = plan(stages, config=config, **values)
    sources: list[Source] = []
    items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    for n, item in enumerate(items):
        if hasattr(item, "mode") and hasattr(item, "size"):  # a PIL image
            sources.append(Source(key=f"<image {n}>", image=item))
        elif not is_url(str(item)) and not Path(item).expanduser().exists():
            sources.append(Source(key=str(item), path=Path(item).expanduser()))
        else:
            sources.extend(iter_sources([str(item)]))
    outcome = execute(planned, sources, sinks=[], collect=True)
    if outcome.summary.interrupted:
        raise KeyboardInterrupt
    return outcome.summary.results
