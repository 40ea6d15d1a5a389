"""Writers found by name, as captioners are: ``template``, any package's writer, or a text LLM.

``--writer`` takes a writer's name (the built-in ``template``, or one a package registers in
the ``captionkit.writers`` entry-point group: ``mine = "my_pkg.write:MyWriter"``) or, for the
LLM writer, a text-model spec (``smollm2``, ``gguf:PATH``, ``hf:ORG/NAME``, ...) that
:func:`captionkit.llm.load_llm` opens. Every writer is built from one validated
:class:`WriterOptions`, so a third-party writer reads the same ``-o`` settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, SecretStr

from captionkit.errors import ConfigError
from captionkit.plugins import PluginTable

if TYPE_CHECKING:
    from captionkit.captioners.grounded.writers import Writer


class WriterOptions(BaseModel):
    """What the grounded backend tells its writer (its ``-o`` options of the same names)."""

    model_config = ConfigDict(extra="forbid")

    colours: bool = True
    #: LLM writers: "chat" (the model's chat template) or "completion" (a raw prompt).
    prompt_format: Literal["chat", "completion"] = "chat"
    few_shot: bool = True
    #: LLM writers: drop candidates naming COCO objects that were not detected.
    faithful: bool = True
    #: LLM writers served over HTTP (``openai-compatible:NAME``).
    base_url: str | None = None
    #: Hosted LLM writers: the key (None: the vendor's environment variable).
    api_key: SecretStr | None = None


#: Writer classes by name; each has ``from_options(WriterOptions)`` and ``write_batch``.
WRITERS: PluginTable[Any] = PluginTable(
    group="captionkit.writers",
    builtin={"template": "captionkit.captioners.grounded.writers:TemplateWriter"},
    kind="writer",
    extras={"template": "grounded"},
)


def check_writer(spec: str) -> str:
    """``spec`` if it names a writer or a text model, else a one-line error listing both."""
    if spec in WRITERS.names():
        return spec
    from captionkit.llm.loader import parse_spec

    try:
        parse_spec(spec)
    except ConfigError as exc:
        raise ConfigError(
            f"unknown writer '{spec}'; use {', '.join(WRITERS.names())} or a text model ({exc})"
        ) from None
    return spec


def make_writer(spec: str, options: WriterOptions) -> Writer:
    """The writer ``spec`` names, built from ``options`` (a text model loads here)."""
    if spec in WRITERS.names():
        writer: Writer = WRITERS.load(spec).from_options(options)
        return writer
    from captionkit.captioners.grounded.writers import LLMWriter
    from captionkit.llm import load_llm

    check_writer(spec)
    from captionkit.llm.openai_compat import hosted_llm_options

    extra = hosted_llm_options(
        spec,
        {"base_url": options.base_url, "api_key": options.api_key},
        key_source="--api-key (or api_key in [backends.grounded])",
    )
    o = options
    return LLMWriter(load_llm(spec, **extra), o.prompt_format, o.few_shot, o.faithful, o.colours)
