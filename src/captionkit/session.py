"""Run assembly: one validated description of a run, built from every source of settings.

Every face (the CLI, :func:`captionkit.caption`, later the HTTP server and the cluster driver)
builds its run with :func:`build_run` and drives it with :func:`execute`, so the layering
``defaults < config file < CAPTIONKIT_* < explicit values < -o options`` and the policies a
face must not re-implement live here once: which sinks a run writes, the store it opens, the
checks made before a model loads, the dry-run estimate, the usage in the summary, and how an
error becomes one line (or a JSON body) and an exit code (:func:`error_report`).

Floor 6: imports the engine, the registry and the settings below it; never a face.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from captionkit.config import Settings, load_settings
from captionkit.errors import CaptionkitError, ConfigError, InputError
from captionkit.inputs.video import VideoOptions, video_options
from captionkit.types import CaptionRequest, Decoding

if TYPE_CHECKING:
    from captionkit.captioners.base import Captioner
    from captionkit.engine.progress import Progress
    from captionkit.engine.runner import RunSummary
    from captionkit.engine.sinks import Sink
    from captionkit.engine.stages import RunOptions
    from captionkit.engine.store import ResultStore
    from captionkit.inputs.sources import Source

#: Top-level settings that also reach the backend when its Options has a field of that name
#: (``device = "cuda"`` at the top of the config file, ``CAPTIONKIT_DEVICE``, ``--device``).
SHARED_WITH_BACKENDS = ("device", "dtype")
#: Settings that are not one run's values (the per-backend tables, an old alias).
_NOT_RUN_SETTINGS = {"backends", "max_download_mb"}


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class InputSpec(_Part):
    """What to caption and how folders are walked."""

    items: tuple[str, ...] = ()
    recursive: bool = True
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    #: Tables, HF datasets, WebDataset shards: the column holding the image (None: guessed).
    image_column: str | None = None
    #: HF datasets: the split to caption.
    split: str | None = None
    #: Video files: how they are sampled; None: videos are not inputs (``--no-videos``).
    video: VideoOptions | None = None

    @property
    def streamed(self) -> bool:
        """URLs or a list on stdin: inputs that cannot be looked at twice or have no folder."""
        return any(i == "-" or i.startswith(("http://", "https://")) for i in self.items)

    def walk(self) -> dict[str, Any]:
        return {
            "recursive": self.recursive,
            "include": self.include,
            "exclude": self.exclude,
            "video": self.video,
        }


class SinkSpec(_Part):
    """Where results go: sidecars (``sidecar=None``: the default policy) and/or a stream."""

    sidecar: bool | None = None
    extension: str = ".txt"
    existing: Literal["skip", "overwrite", "append", "prepend"] = "skip"
    output_dir: str | None = None
    format: str | None = None  # txt, jsonl, csv (checked by build_run)
    output: str | None = None
    layout: Literal["first", "lines", "numbered"] = "first"  # --captions-layout
    #: --metadata: the caption also into the image's XMP (a sidecar, or embedded).
    metadata: Literal["xmp", "embed"] | None = None
    keep_mtime: bool = False
    xmp_name: Literal["full", "stem"] = "full"

    @property
    def sidecars(self) -> bool:
        """Sidecars are on unless asked off, or ``--format`` goes to stdout (it is the output)."""
        if self.sidecar is not None:
            return self.sidecar
        return self.format is None or self.output is not None


class ClusterSpec(_Part):
    """``--ray``: run on a Ray cluster (``auto``, ``local``, ``ray://host:10001``)."""

    address: str = "auto"
    actors: int | None = Field(default=None, ge=1)  # None: one per GPU, else one
    gpus_per_actor: float | None = Field(default=None, ge=0)  # None: 1 when GPUs exist
    #: Custom Ray resources each actor needs (pin actors to labelled nodes).
    resources: tuple[tuple[str, float], ...] = ()


class Limits(_Part):
    max_pixels: int = Field(default=100_000_000, ge=1)
    max_file_mb: float = Field(default=50.0, gt=0)
    timeout: float = Field(default=30.0, gt=0)


class Decoration(_Part):
    prefix: str = ""
    suffix: str = ""
    trigger_word: str = ""


class RunControl(_Part):
    batch_size: int | None = Field(default=None, ge=1)
    workers: int = Field(default=4, ge=1)
    force: bool = False


class RunSpec(_Part):
    """One run, fully resolved and validated: what every driver needs and nothing a face owns."""

    inputs: InputSpec = InputSpec()
    #: The model spec (``hf:ORG/NAME``, ``grounded``...) and its backend's registry name.
    backend: str = "grounded"
    backend_name: str = "grounded"
    #: Backend options, merged from every layer and checked against the backend's Options.
    options: dict[str, Any] = Field(default_factory=dict)
    #: Backend flags given that the chosen backend has no option for (a face may say so).
    ignored: tuple[str, ...] = ()
    rewrite: str | None = None
    rewrite_options: dict[str, Any] = Field(default_factory=dict)
    rerank: str | None = None  # --rerank clip[:MODEL]
    rerank_facts_weight: float | None = None  # None: 0.5 over grounded, else 0
    qa: Any = None  # captioners.qa.QAOptions; None: no QA
    request: CaptionRequest = Field(default_factory=CaptionRequest)
    #: Per-image prompts (``captionkit.prompts.PromptSet``: templates, a weighted choice);
    #: None: every image gets ``request.prompt``.
    prompts: Any = None
    #: Tag rules (``captionkit.tags.TagRules``) for tag captions; None when none are set.
    tags: Any = None
    sinks: SinkSpec = SinkSpec()
    store: str | None = None  # None: the user cache dir; "none": no store
    limits: Limits = Limits()
    decoration: Decoration = Decoration()
    control: RunControl = RunControl()
    config_file: Path | None = None
    #: Set when the run goes to a Ray cluster (``--ray``); None: this machine.
    cluster: ClusterSpec | None = None

    def without_stdin(self) -> RunSpec:
        """This run without ``-`` (a list on stdin that turned out to be empty)."""
        items = tuple(i for i in self.inputs.items if i != "-")
        return self.model_copy(update={"inputs": self.inputs.model_copy(update={"items": items})})


# -- building ------------------------------------------------------------------------------


def _decoding(settings: Settings, given: Mapping[str, Any]) -> Decoding:
    """A given ``Decoding`` wins whole; else one from the loose fields (sampling knobs count
    only with ``do_sample``, as the flags document)."""
    if given.get("decoding") is not None:
        return given["decoding"]
    sample = bool(given.get("do_sample"))
    knobs = {
        "num_beams": given.get("num_beams"),
        "seed": given.get("seed"),
        "temperature": given.get("temperature") if sample else None,
        "top_p": given.get("top_p") if sample else None,
        "top_k": given.get("top_k") if sample else None,
    }
    return Decoding(
        max_new_tokens=settings.max_new_tokens,
        do_sample=sample,
        **{k: v for k, v in knobs.items() if v is not None},
    )


def _backend_options(
    cls: type[Captioner],
    settings: Settings,
    flags: Mapping[str, Any],
    options: Mapping[str, Any],
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``[backends.NAME]`` table < shared top-level settings < backend flags < ``-o`` options.

    Returns the merged options (validated) and the flags the backend has no field for.
    """
    fields = cls.Options.model_fields
    merged = settings.backend_options(cls.name)
    for key in SHARED_WITH_BACKENDS:
        if key in fields and key in settings.model_fields_set:
            merged[key] = getattr(settings, key)
    given = {k: v for k, v in flags.items() if v is not None}
    merged.update({k: v for k, v in given.items() if k in fields})
    merged.update(options)
    try:
        cls.Options(**{k: v for k, v in merged.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "options"
        raise ConfigError(f"backend '{cls.name}': {where}: {first['msg']}") from None
    return merged, tuple(k for k in given if k not in fields)


def build_run(
    inputs: Sequence[str] = (),
    *,
    config: str | Path | None = None,
    backend_flags: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    captioner: type[Captioner] | None = None,
    **explicit: Any,
) -> RunSpec:
    """The run described by defaults < config file < ``CAPTIONKIT_*`` < ``explicit`` < ``options``.

    ``explicit`` holds values a face was given (None: not given): any :class:`Settings` field
    (``model``, ``style``, ``batch_size``, ``store``...; ``extension`` is ``sidecar_extension``)
    and the run's own values (``prompt``, ``num_captions``, ``decoding`` or ``num_beams``/
    ``do_sample``/``temperature``/``top_p``/``top_k``/``seed``, ``recursive``, ``include``,
    ``exclude``, ``sidecar``, ``output_dir``, ``format``, ``output``, ``force``, ``rewrite``,
    ``rewrite_options``). ``backend_flags`` are backend options by field name, routed to the
    chosen backend when its Options has the field (else listed in ``RunSpec.ignored``);
    ``options`` (``-o``, the API's ``**options``) go to the backend whatever they are.
    ``captioner``: the class of an already loaded captioner (its options are its own).
    """
    from captionkit.captioners import registry
    from captionkit.engine.exports import EXPORT_FORMATS
    from captionkit.engine.sinks import FORMATS
    from captionkit.prompts import resolve as resolve_prompts
    from captionkit.prompts import tag_rules
    from captionkit.styles import get_style

    if "extension" in explicit:
        explicit["sidecar_extension"] = explicit.pop("extension")
    setting_names = set(Settings.model_fields) - _NOT_RUN_SETTINGS
    given_settings = {k: explicit.pop(k) for k in list(explicit) if k in setting_names}
    known = RUN_KEYS
    unknown = sorted(set(explicit) - known)
    if unknown:
        raise TypeError(f"build_run() got unknown settings: {', '.join(unknown)}")
    if captioner is not None:
        given_settings["model"] = captioner.name
    if isinstance(given_settings.get("tags"), BaseModel):  # the API's TagRules
        given_settings["tags"] = given_settings["tags"].model_dump(exclude_defaults=True)
    settings = load_settings(config, **given_settings)
    get_style(settings.style)
    num_captions = explicit.get("num_captions")
    if num_captions is not None and num_captions < 1:
        raise ConfigError("num_captions must be at least 1")
    prompts = resolve_prompts(explicit.get("prompt"), explicit.get("prompt_file"))
    if prompts is not None:
        prompts.check_stage(stage=None)  # {caption}/{tags} need --stages
    request = CaptionRequest(
        style=settings.style,
        prompt=prompts.request_prompt if prompts is not None else None,
        num_captions=num_captions or 1,
        decoding=_decoding(settings, explicit),
    )
    if explicit.get("format") not in (None, *FORMATS, *EXPORT_FORMATS):
        raise ConfigError(f"--format must be one of {', '.join((*FORMATS, *EXPORT_FORMATS))}")
    cluster = _cluster(explicit)
    _check_metadata(explicit, cluster)
    if explicit.get("rerank"):
        from captionkit.captioners.rerank import check_rerank

        check_rerank(explicit["rerank"], request.num_captions, explicit.get("rerank_facts_weight"))
    if captioner is not None:
        if options:
            raise ConfigError("backend options go to load_captioner(), not with a loaded captioner")
        name, merged, ignored = captioner.name, dict[str, Any](), tuple[str, ...]()
    else:
        name, _ = registry.parse_spec(settings.model)
        merged, ignored = _backend_options(
            registry.get_backend(name), settings, backend_flags or {}, dict(options or {})
        )
    try:
        return RunSpec(
            inputs=InputSpec(
                items=tuple(inputs),
                recursive=_given(explicit, "recursive", True),
                include=tuple(explicit.get("include") or ()),
                exclude=tuple(explicit.get("exclude") or ()),
                image_column=explicit.get("image_column"),
                split=explicit.get("split"),
                video=None
                if cluster is not None  # Ray rows are files: videos are captioned locally
                else video_options(
                    explicit.get("video_every"),
                    explicit.get("video_scenes"),
                    explicit.get("video_max_frames"),
                    explicit.get("video_mode"),
                    enabled=explicit.get("videos"),
                ),
            ),
            backend=settings.model,
            backend_name=name,
            options=merged,
            ignored=ignored,
            rewrite=explicit.get("rewrite"),
            rewrite_options={
                k: v for k, v in (explicit.get("rewrite_options") or {}).items() if v is not None
            },
            request=request,
            rerank=explicit.get("rerank"),
            rerank_facts_weight=explicit.get("rerank_facts_weight"),
            qa=_qa_options(explicit),
            prompts=prompts if prompts is not None and prompts.dynamic else None,
            tags=tag_rules(settings.tags, explicit, trigger_word=settings.trigger_word),
            **_settings_parts(settings, explicit),
            config_file=_config_file(config),
            cluster=cluster,
        )
    except ValidationError as exc:  # a run value no settings layer checked (--format, say)
        first = exc.errors()[0]
        where = str(first["loc"][-1]) if first["loc"] else "run"
        raise ConfigError(f"{where.replace('_', '-')}: {first['msg']}") from None


def _settings_parts(settings: Settings, explicit: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a run that come straight from the settings (and a few explicit values)."""
    return {
        "sinks": SinkSpec(
            sidecar=explicit.get("sidecar"),
            extension=settings.sidecar_extension,
            existing=settings.existing,
            output_dir=explicit.get("output_dir"),
            format=explicit.get("format"),
            output=explicit.get("output"),
            layout=settings.captions_layout,
            metadata=explicit.get("metadata"),
            keep_mtime=bool(explicit.get("keep_mtime")),
            xmp_name=explicit.get("xmp_name") or "full",
        ),
        "store": settings.store,
        "limits": Limits(
            max_pixels=settings.max_pixels,
            max_file_mb=settings.max_file_mb,
            timeout=settings.timeout,
        ),
        "decoration": Decoration(
            prefix=settings.prefix, suffix=settings.suffix, trigger_word=settings.trigger_word
        ),
        "control": RunControl(
            batch_size=settings.batch_size,
            workers=settings.workers,
            force=bool(explicit.get("force")),
        ),
    }


#: The run's own values :func:`build_run` takes besides the :class:`Settings` fields.
RUN_KEYS = frozenset(
    "prompt num_captions decoding num_beams do_sample temperature top_p top_k seed recursive "
    "include exclude sidecar output_dir format output force rewrite rewrite_options "
    "ray actors gpus_per_actor ray_resources image_column split prompt_file metadata keep_mtime "
    "xmp_name rerank rerank_facts_weight qa qa_retry qa_min_clipscore qa_action qa_clip_model "
    "qa_objects".split()
) | frozenset(
    "exclude_tags replace_tags always_first max_tags tag_separator tag_sort keep_tokens "
    "keep_underscores".split()
) | frozenset("videos video_every video_scenes video_max_frames video_mode".split())


def _qa_options(explicit: Mapping[str, Any]) -> Any:
    """``QAOptions`` when ``--qa`` or any ``--qa-*`` flag is given (they imply ``--qa``)."""
    keys = ("qa_retry", "qa_min_clipscore", "qa_action", "qa_clip_model", "qa_objects")
    if not explicit.get("qa") and all(explicit.get(k) is None for k in keys):
        return None
    from captionkit.captioners.qa import QAOptions

    clip = explicit.get("qa_clip_model")
    return QAOptions.build(
        retry=explicit.get("qa_retry"),
        min_clipscore=explicit.get("qa_min_clipscore"),
        action=explicit.get("qa_action"),
        objects=explicit.get("qa_objects"),
        clipscore=False if clip == "none" else None,
        clip_model=None if clip in (None, "none") else clip,
    )


def _check_metadata(explicit: Mapping[str, Any], cluster: ClusterSpec | None) -> None:
    """``--metadata`` companions given alone, or with a cluster run, are one line."""
    metadata = explicit.get("metadata")
    if metadata not in (None, "xmp", "embed"):
        raise ConfigError(f"--metadata must be xmp or embed, not {metadata!r}")
    if explicit.get("xmp_name") not in (None, "full", "stem"):
        raise ConfigError(f"--xmp-name must be full or stem, not {explicit['xmp_name']!r}")
    if metadata is not None and cluster is not None:
        raise ConfigError("--metadata writes beside local files: drop --ray to use it")
    if explicit.get("keep_mtime") and metadata != "embed":
        raise ConfigError("--keep-mtime needs --metadata embed (only embedding touches the image)")
    if explicit.get("xmp_name") not in (None, "full") and metadata != "xmp":
        raise ConfigError("--xmp-name names .xmp sidecars: add --metadata xmp")


def _cluster(explicit: Mapping[str, Any]) -> ClusterSpec | None:
    """``--ray`` and its companions; those without ``--ray`` are a mistake worth one line."""
    address = explicit.get("ray")
    if not address:
        stray = [k for k in ("actors", "gpus_per_actor", "ray_resources") if explicit.get(k)]
        if stray:
            flag = "--" + stray[0].replace("_", "-")
            raise ConfigError(f"{flag} is for cluster runs: add --ray auto (or --ray ADDRESS)")
        return None
    try:
        return ClusterSpec(
            address=str(address),
            actors=explicit.get("actors"),
            gpus_per_actor=explicit.get("gpus_per_actor"),
            resources=tuple(sorted((explicit.get("ray_resources") or {}).items())),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = str(first["loc"][-1]).replace("_", "-")
        raise ConfigError(f"--{where}: {first['msg']}") from None


#: Every name :func:`build_run` takes as an explicit value (a face may pass its arguments of
#: these names straight on).
EXPLICIT_KEYS = (
    RUN_KEYS | (set(Settings.model_fields) - _NOT_RUN_SETTINGS) | {"extension", "config"}
)


def _given(values: Mapping[str, Any], key: str, default: Any) -> Any:
    value = values.get(key)
    return default if value is None else value


def _config_file(config: str | Path | None) -> Path | None:
    from captionkit.config import config_path

    return config_path(config)


# -- checks made before any model loads ------------------------------------------------------


def check_inputs(run: RunSpec) -> None:
    """Every local path exists, and the files and folders named hold at least one image.

    Folders with nothing to caption are almost always a wrong path or filter, so this is an
    error rather than a successful run of nothing. Finding the first image ends the check.
    URLs and a list on stdin are not walked: those cannot be looked at twice.
    """
    from captionkit.inputs.sources import iter_sources
    from captionkit.inputs.tables import classify, is_table_like

    if is_table_like(run.inputs.items):
        if run.cluster is None:
            raise InputError(
                "tables, hf: datasets and WebDataset shards are captioned with --ray "
                "(--ray local runs them on this machine)"
            )
        return  # Ray Data reads them (the driver checks paths and columns)
    for item in run.inputs.items:
        if item == "-" or item.startswith(("http://", "https://")):
            continue
        if classify(item).kind != "files":
            continue
        if not Path(item).expanduser().exists():
            raise InputError(f"{_plain(item)}: no such file or folder")
    if run.inputs.streamed or not run.inputs.items:
        return
    skipped: Counter[str] = Counter()
    walk = run.inputs.walk()
    found = iter_sources(list(run.inputs.items), skipped=skipped, **walk)
    first = next(iter(found), None)
    if first is not None:
        if run.prompts is not None:  # {column:NAME}: the first input shows the columns
            run.prompts.check_columns(list(first.meta), what=_plain(first.key))
        return
    where = ", ".join(_plain(i) for i in run.inputs.items)
    seen = skipped_text(skipped, every=True)
    narrowed = [
        flag
        for flag, on in (
            ("--include", walk["include"]),
            ("--exclude", walk["exclude"]),
            ("--no-recursive", not walk["recursive"]),
        )
        if on
    ]
    hint = f"; check {', '.join(narrowed)}" if narrowed else ""
    raise InputError(f"no images found in {where}" + (f" ({seen})" if seen else "") + hint)


#: How each reason the folder walk counts is named (one, several).
SKIP_REASONS = {
    "hidden": ("hidden file", "hidden files"),
    "broken symlink": ("broken symlink", "broken symlinks"),
    "not an image": ("file that is not an image", "files that are not images"),
}


def skipped_text(skipped: Counter[str], *, every: bool = False) -> str:
    """``2 hidden files, 1 broken symlink``; files that are not images (sidecars, mostly)
    are named only when ``every`` is set, as when no image was found at all."""
    parts = []
    for reason, n in skipped.items():
        if not n or (reason == "not an image" and not every):
            continue
        one, many = SKIP_REASONS.get(reason, (reason, reason))
        parts.append(f"{n} {one if n == 1 else many}")
    return ", ".join(parts)


def _plain(text: object) -> str:
    """A path as printable text (undecodable bytes as ``\\xNN``); see ``cli.display.plain``."""
    s = str(text)
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def make_sinks(run: RunSpec) -> list[Sink]:
    """The sink policy: sidecars unless off (or ``--format`` to stdout); a stream for
    ``--format``; and captions printed when they would otherwise go nowhere visible (sidecars
    off, or URLs and stdin lists, which have no folder for a sidecar)."""
    from captionkit.engine.exports import EXPORT_FORMATS, ExportSink
    from captionkit.engine.sinks import SidecarSink, StreamSink

    spec = run.sinks
    sinks: list[Sink] = []
    if spec.sidecars:
        sinks.append(
            SidecarSink(
                extension=spec.extension,
                output_dir=spec.output_dir,
                existing=spec.existing,
                roots=list(run.inputs.items),
                layout=spec.layout,
                count=run.request.num_captions,
            )
        )
    if run.inputs.video is not None:
        from captionkit.engine.video_sink import with_videos

        sinks = with_videos(sinks)
    if spec.metadata is not None:
        from captionkit.engine.metadata import MetadataSink

        sinks.append(
            MetadataSink(
                spec.metadata,
                keep_mtime=spec.keep_mtime,
                sidecar_name=spec.xmp_name,
                replace_foreign=spec.existing == "overwrite",
            )
        )
    if spec.format in EXPORT_FORMATS:
        sinks.append(ExportSink(spec.format, spec.output))
    elif spec.format is not None:
        sinks.append(StreamSink(spec.format, spec.output))
    elif not spec.sidecars or run.inputs.streamed:
        sinks.append(StreamSink("txt", None))
    return sinks


def check_outputs(run: RunSpec, sinks: Iterable[Sink]) -> None:
    """Every output can be written: before the model loads, never compute what is lost."""
    from captionkit.engine.sinks import check_writable

    check_writable(sinks, list(run.inputs.items))


def open_store(store: Any) -> ResultStore | None:
    """``None``/``True`` -> the user-cache store; ``False`` or ``"none"`` -> no store."""
    from captionkit.engine.store import ResultStore, default_store_path

    if store is False or (isinstance(store, str) and store.lower() == "none"):
        return None
    if store is None or store is True:
        return ResultStore(default_store_path())
    return ResultStore(store)


# -- loading and running -------------------------------------------------------------------


def load_backend(
    spec: str,
    *,
    rewrite: str | None = None,
    rewrite_options: Mapping[str, Any] | None = None,
    rerank: str | None = None,
    rerank_facts_weight: float | None = None,
    qa: Any = None,
    **options: Any,
) -> Captioner:
    """Build the captioner ``spec`` names (options validated by its Options model), wrapped
    in the ``rewrite`` text LLM, the ``rerank`` scorer and the ``qa`` checker when asked for.

    The order matters: a rewritten caption is what gets re-ranked, and a caption QA
    regenerates is re-ranked again before it is checked."""
    from captionkit.captioners import registry

    captioner = registry.create(spec, **options)
    if rewrite:
        from captionkit.captioners.rewrite import RewriteCaptioner
        from captionkit.llm import load_llm
        from captionkit.llm.openai_compat import hosted_llm_options

        captioner = RewriteCaptioner(
            captioner,
            load_llm(
                rewrite,
                **hosted_llm_options(rewrite, rewrite_options, key_source="--rewrite-api-key"),
            ),
        )
    if rerank:
        from captionkit.captioners.rerank import wrap_rerank

        device = str(options.get("device") or "auto")
        captioner = wrap_rerank(captioner, rerank, rerank_facts_weight, device=device)
    if qa is not None:
        from captionkit.captioners.qa import wrap_qa

        captioner = wrap_qa(captioner, qa)
    return captioner


def load(run: RunSpec) -> Captioner:
    """The run's captioner, loaded."""
    return load_backend(
        run.backend,
        rewrite=run.rewrite,
        rewrite_options=run.rewrite_options,
        rerank=run.rerank,
        rerank_facts_weight=run.rerank_facts_weight,
        qa=run.qa,
        **run.options,
    )


def sources(
    run: RunSpec,
    *,
    stdin: Iterable[str] | None = None,
    skipped: Counter[str] | None = None,
    sinks: Sequence[Sink] | None = None,
) -> Iterator[Source]:
    """The run's sources, lazily; ``skipped`` counts what the folder walk passed over.
    ``sinks``: the run's sinks, so a video they all hold already is skipped undecoded."""
    from captionkit.engine.video_sink import video_done
    from captionkit.inputs.sources import iter_sources

    done = video_done(sinks) if sinks and run.inputs.video is not None else None
    return iter(
        iter_sources(
            list(run.inputs.items),
            stdin=stdin,
            skipped=skipped,
            video_done=done,
            **run.inputs.walk(),
        )
    )


@dataclass
class Outcome:
    """What a face reports after a run: the engine's summary plus the backend's usage."""

    summary: RunSummary
    usage: dict[str, Any] = field(default_factory=dict)
    store_path: Path | None = None


def execute(
    run: RunSpec,
    items: Iterable[Source],
    *,
    sinks: Sequence[Sink] | None = None,
    captioner: Captioner | None = None,
    progress: Progress | None = None,
    collect: bool = False,
) -> Outcome:
    """Check the outputs, open the store, load the model (unless given) and run the streaming
    driver over ``items``. A captioner passed in is left open; one loaded here is closed."""
    from captionkit.engine.runner import Runner

    if run.cluster is not None:  # never a silent single-machine run of a cluster job
        raise ConfigError("a --ray run is driven by captionkit.cluster.driver.execute()")
    sinks = make_sinks(run) if sinks is None else list(sinks)
    check_outputs(run, sinks)
    store = open_store(run.store)
    try:
        model = captioner if captioner is not None else load(run)
    except BaseException:
        if store is not None:
            store.close()
        raise
    runner = Runner(
        model,
        run.request,
        store=store,
        sinks=list(sinks),
        progress=progress,
        options=run_options(run, collect=collect),
    )
    try:
        summary = runner.run(items)
    finally:
        if captioner is None:
            model.close()
        if store is not None:
            store.close()
    return Outcome(summary, model.stats(), store.path if store is not None else None)


def run_options(run: RunSpec, *, collect: bool = False) -> RunOptions:
    """The engine's options for ``run`` (the streaming driver and every cluster actor)."""
    from captionkit.engine.stages import RunOptions
    from captionkit.inputs.decode import DecodeLimits
    from captionkit.inputs.fetch import FetchLimits
    from captionkit.prompts import make_renderer

    limits = run.limits
    return RunOptions(
        batch_size=run.control.batch_size,
        workers=run.control.workers,
        force=run.control.force,
        decode=DecodeLimits(max_pixels=limits.max_pixels),
        fetch=FetchLimits(max_bytes=int(limits.max_file_mb * 1024 * 1024), timeout=limits.timeout),
        prefix=run.decoration.prefix,
        suffix=run.decoration.suffix,
        trigger_word=run.decoration.trigger_word,
        collect=collect,
        render=make_renderer(run.prompts) if run.prompts is not None else None,
        tags=run.tags,
        finish_candidates=run.sinks.layout != "first",
    )


@dataclass
class Estimate:
    """A dry run: images counted from their headers, and the backend's token/cost estimate
    (None for a local backend: no token cost)."""

    images: int
    uncounted: int
    backend: str
    tokens: dict[str, Any] | None


def estimate(run: RunSpec, captioner: Captioner, items: Iterable[Source]) -> Estimate:
    """Read only image headers (URLs are not fetched), then ask the backend what it costs."""
    from PIL import Image

    sizes: list[tuple[int, int]] = []
    uncounted = 0
    for source in items:
        if source.image is not None:  # a video frame or an in-memory image: its size is known
            with contextlib.suppress(Exception):  # a video that fails: not counted
                sizes.append(source.image.size)
                continue
        if source.path is None:
            uncounted += 1
            continue
        try:
            with Image.open(source.path) as img:
                sizes.append(img.size)
        except (OSError, ValueError, Image.DecompressionBombError):  # not an image: not counted
            uncounted += 1
    return Estimate(len(sizes), uncounted, captioner.name, captioner.estimate(sizes, run.request))


# -- the error boundary ----------------------------------------------------------------------

#: HTTP status of each error kind, for faces that answer in JSON (the server).
HTTP_STATUS = {
    "ConfigError": 400,
    "InputError": 400,
    "ImageDecodeError": 422,
    "UnknownBackendError": 400,
    "MissingDependencyError": 501,
    "ModelLoadError": 500,
    "OutputError": 500,
    "StoreError": 500,
    "BackendError": 502,
}


@dataclass(frozen=True)
class ErrorReport:
    """One user-caused error as every face shows it: one line, an exit code, a JSON body."""

    kind: str
    message: str
    exit_code: int
    http_status: int

    def line(self, prog: str = "captionkit") -> str:
        if self.kind == "Interrupted":
            return f"{prog}: interrupted"
        return f"{prog}: error: {self.message}"

    def json(self) -> dict[str, Any]:
        return {"error": {"type": self.kind, "message": self.message}}


def error_report(exc: BaseException) -> ErrorReport | None:
    """The report of a ``captionkit.errors`` type (or an interrupt); None for anything else,
    which is a bug in captionkit and is shown in full by the face."""
    if isinstance(exc, KeyboardInterrupt):
        return ErrorReport("Interrupted", "interrupted", 130, 499)
    if not isinstance(exc, CaptionkitError):
        return None
    kind = type(exc).__name__
    base = next((c.__name__ for c in type(exc).__mro__ if c.__name__ in HTTP_STATUS), "")
    message = re.sub(r"\s*\n\s*", " ", str(exc).strip()) or kind
    return ErrorReport(kind, message, exc.exit_code, HTTP_STATUS.get(base, 500))
