"""Run assembly: one validated description of a run, built from every source of settings.

Every face (the CLI, :func:`captionkit.caption`, the HTTP server and the cluster driver)
builds its run with :func:`build_run` and drives it with :func:`execute`, so the layering
``defaults < config file < CAPTIONKIT_* < explicit values < -o options`` and the policies a
face must not re-implement live here once: which sinks a run writes, the store it opens, the
checks made before a model loads, the dry-run estimate, the usage in the summary, and how an
error becomes one line (or a JSON body) and an exit code (:func:`error_report`).

One room in parts, each a reason to change on its own: :mod:`.spec` (the :class:`RunSpec`
models), :mod:`.build` (layering settings into a spec), :mod:`.inputs` (checking and walking
the inputs), :mod:`.outputs` (the sink policy, output checks, the store), :mod:`.run`
(loading the captioner, running, the estimate) and :mod:`.errors` (the error boundary).
Faces import from ``captionkit.session`` itself, never from a part: the parts may move.

Floor 6: imports the engine, the registry and the settings below it; never a face.
"""

from captionkit.session.build import (
    EXPLICIT_KEYS,
    RUN_KEYS,
    SHARED_WITH_BACKENDS,
    build_run,
)
from captionkit.session.errors import HTTP_STATUS, ErrorReport, error_report
from captionkit.session.inputs import SKIP_REASONS, check_inputs, skipped_text, sources
from captionkit.session.outputs import check_outputs, make_sinks, open_store
from captionkit.session.run import (
    Estimate,
    Outcome,
    estimate,
    execute,
    load,
    load_backend,
    run_options,
)
from captionkit.session.spec import (
    ClusterSpec,
    Decoration,
    InputSpec,
    Limits,
    RunControl,
    RunSpec,
    SinkSpec,
)

__all__ = [
    "EXPLICIT_KEYS",
    "HTTP_STATUS",
    "RUN_KEYS",
    "SHARED_WITH_BACKENDS",
    "SKIP_REASONS",
    "ClusterSpec",
    "Decoration",
    "ErrorReport",
    "Estimate",
    "InputSpec",
    "Limits",
    "Outcome",
    "RunControl",
    "RunSpec",
    "SinkSpec",
    "build_run",
    "check_inputs",
    "check_outputs",
    "error_report",
    "estimate",
    "execute",
    "load",
    "load_backend",
    "make_sinks",
    "open_store",
    "run_options",
    "skipped_text",
    "sources",
]
