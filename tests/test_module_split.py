"""The split of session.py, engine/metadata.py and inputs/video.py into parts kept every name
callers import from the old modules, and the one seam tests patch (``session.load``)."""

from __future__ import annotations

import importlib

import pytest

from captionkit import session
from helpers.fakes import NAME, FakeCaptioner, registered, write_image

#: Every public name the single-file modules had, by module.
BEFORE_SPLIT = {
    "captionkit.session": (
        "SHARED_WITH_BACKENDS RUN_KEYS EXPLICIT_KEYS SKIP_REASONS HTTP_STATUS InputSpec SinkSpec "
        "ClusterSpec Limits Decoration RunControl RunSpec build_run check_inputs skipped_text "
        "make_sinks check_outputs open_store load_backend load sources Outcome execute "
        "run_options Estimate estimate ErrorReport error_report"
    ),
    "captionkit.engine.metadata": (
        "MODES SIDECAR_NAMES TAG_DESCRIPTION TAG_ALT_TEXT TAG_KEYWORDS TAG_WRITER WRITER_PREFIX "
        "ExiftoolMissingError check_exiftool embed_type tag_names writer_of Exiftool "
        "MetadataSink write_sidecars"
    ),
    "captionkit.inputs.video": (
        "VIDEO_SUFFIXES SEEK_GAP CLIP_FRAMES CLIP_HINT VideoOptions video_options have_pyav "
        "left_out sniff_video is_video frame_key timestamp UnreadableVideo VideoReader upright "
        "expand_video clip_grid estimate_frames"
    ),
}


@pytest.mark.parametrize("module", sorted(BEFORE_SPLIT))
def test_every_name_callers_import_is_still_there(module):
    mod = importlib.import_module(module)
    missing = [name for name in BEFORE_SPLIT[module].split() if not hasattr(mod, name)]
    assert not missing, f"{module} lost {missing}"


def test_session_all_names_only_what_it_has():
    assert sorted(session.__all__) == sorted(set(session.__all__))
    assert all(hasattr(session, name) for name in session.__all__)
    assert set(BEFORE_SPLIT["captionkit.session"].split()) <= set(session.__all__)


def test_execute_loads_through_session_load(tmp_path, monkeypatch):
    """A face or test that replaces ``captionkit.session.load`` is obeyed by ``execute`` too,
    as when load and execute lived in one module."""
    write_image(tmp_path / "red.png", "red")
    loaded: list[str] = []

    def fake_load(run):
        loaded.append(run.backend)
        return FakeCaptioner()

    with registered():
        run = session.build_run([str(tmp_path)], model=NAME, store="none")
        monkeypatch.setattr(session, "load", fake_load)
        outcome = session.execute(run, session.sources(run))
    assert loaded == [NAME] and outcome.summary.captioned == 1
    assert (tmp_path / "red.txt").read_text().strip()
