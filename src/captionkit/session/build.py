"""Building a run: :func:`build_run` layers ``defaults < config file < CAPTIONKIT_* <
explicit values < -o options`` into one validated :class:`~captionkit.session.spec.RunSpec`.

Every face builds its run here so the layering, the routing of backend flags and options to
the chosen backend, and the checks of flag combinations (``--metadata``, ``--ray``, ``--qa``,
``--rerank``) that must fail in one line before a model loads are written once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from captionkit.config import Settings, load_settings
from captionkit.errors import ConfigError
from captionkit.inputs.video import video_options
from captionkit.session.spec import (
    ClusterSpec,
    Decoration,
    InputSpec,
    Limits,
    RunControl,
    RunSpec,
    SinkSpec,
)
from captionkit.types import CaptionRequest, Decoding

if TYPE_CHECKING:
    from captionkit.captioners.base import Captioner

#: Top-level settings that also reach the backend when its Options has a field of that name
#: (``device = "cuda"`` at the top of the config file, ``CAPTIONKIT_DEVICE``, ``--device``).
SHARED_WITH_BACKENDS = ("device", "dtype")
#: Settings that are not one run's values (the per-backend tables, an old alias).
_NOT_RUN_SETTINGS = {"backends", "max_download_mb"}


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
