"""METEOR and SPICE through pycocoevalcap's Java tools, when a JVM is available.

These two metrics have no faithful Python implementation (METEOR needs its paraphrase
tables and Java matcher, SPICE a CoreNLP dependency parse), so they run the reference jars.
Anything missing (java, pycocoevalcap, SPICE's CoreNLP jars that it downloads on first use)
raises :class:`JavaMetricUnavailable` with one line saying what to do; callers report the
other metrics and print that line.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import shutil
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from captionkit.errors import CaptionkitError


class JavaMetricUnavailable(CaptionkitError):
    """METEOR or SPICE cannot run here (no Java, no pycocoevalcap, or SPICE's jars absent)."""


def _check(purpose: str) -> None:
    if shutil.which("java") is None:
        raise JavaMetricUnavailable(f"{purpose} needs Java 8+ on PATH (apt install default-jre)")
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError as exc:
        raise JavaMetricUnavailable(
            f'{purpose} needs pycocoevalcap: pip install "captionkit[eval]"'
        ) from exc


def _as_lists(
    candidates: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> tuple[list[str], dict[str, list[str]], dict[str, list[str]]]:
    keys = list(candidates)
    return keys, {k: list(references[k]) for k in keys}, {k: [candidates[k]] for k in keys}


_meteor_scorer = None
_spice_failure: str | None = None


def _close_meteor() -> None:
    global _meteor_scorer
    scorer, _meteor_scorer = _meteor_scorer, None
    if scorer is not None:
        proc = scorer.meteor_p
        scorer.meteor_p = _Closed()  # upstream's __del__ then does nothing
        with contextlib.suppress(OSError):
            proc.stdin.close()
        proc.kill()
        proc.wait()


def meteor(
    candidates: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> tuple[float, dict[str, float]]:
    """METEOR 1.5 (``-l en -norm``) of PTB-tokenised captions, as COCO reports it.

    The JVM (about 20 s to load METEOR's paraphrase tables) is started once per process and
    reused for every system of a run.
    """
    global _meteor_scorer
    _check("METEOR")
    if not candidates:
        return 0.0, {}
    from pycocoevalcap.meteor.meteor import Meteor

    keys, gts, res = _as_lists(candidates, references)
    try:
        if _meteor_scorer is None:
            _meteor_scorer = Meteor()
            atexit.register(_close_meteor)
        score, scores = _meteor_scorer.compute_score(gts, res)
    except (OSError, ValueError) as exc:
        _close_meteor()
        raise JavaMetricUnavailable(f"METEOR failed to run ({exc})") from exc
    return float(score), {k: float(s) for k, s in zip(keys, scores, strict=True)}


class _Closed:
    """Stands in for the stopped METEOR process so upstream's ``__del__`` is a no-op."""

    class _Stdin:
        def close(self) -> None:
            pass

    stdin = _Stdin()

    def kill(self) -> None:
        pass

    def wait(self) -> None:
        pass


def spice_jars_present() -> bool:
    """Whether SPICE's Stanford CoreNLP 3.6.0 jars are already in pycocoevalcap's folder."""
    try:
        import pycocoevalcap.spice as spice_pkg
    except ImportError:
        return False
    lib = Path(spice_pkg.__file__).parent / "lib"
    return (lib / "stanford-corenlp-3.6.0.jar").exists() and (
        lib / "stanford-corenlp-3.6.0-models.jar"
    ).exists()


def _fetch_spice_jars(timeout: float) -> None:
    from pycocoevalcap.spice.get_stanford_models import get_stanford_models

    global _spice_failure
    if _spice_failure:  # tried once in this process already
        raise JavaMetricUnavailable(_spice_failure)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # upstream prints progress
            get_stanford_models()
    except Exception as exc:  # any network or zip failure means: no SPICE this run
        _spice_failure = (
            "SPICE needs Stanford CoreNLP 3.6.0 jars and could not download them (offline?); "
            "run `python -m pycocoevalcap.spice.get_stanford_models` once online"
        )
        raise JavaMetricUnavailable(_spice_failure) from exc
    finally:
        socket.setdefaulttimeout(previous)


def spice(
    candidates: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    *,
    download_timeout: float = 20.0,
) -> tuple[float, dict[str, float]]:
    """SPICE F-score (``All``) per image and its mean, via the SPICE 1.0 jar."""
    _check("SPICE")
    if not candidates:
        return 0.0, {}
    if not spice_jars_present():
        _fetch_spice_jars(download_timeout)
    import subprocess

    from pycocoevalcap.spice.spice import Spice

    keys, gts, res = _as_lists(candidates, references)
    try:
        score, scores = Spice().compute_score(gts, res)
    except (OSError, subprocess.CalledProcessError, ValueError) as exc:
        raise JavaMetricUnavailable(f"SPICE failed to run ({exc})") from exc
    # upstream returns per-image results in sorted key order
    per = {k: float(s["All"]["f"]) for k, s in zip(sorted(keys), scores, strict=True)}
    return float(score), {k: per[k] for k in keys}
