"""Sidecars for videos: one text file per video, written once all its frames are captioned.

Frames (sources from :func:`captionkit.inputs.video.expand_video`) carry
``meta = {"video": key, "t": seconds, "frame": index}`` and the last one ``"frames": total``.
:class:`VideoSidecarSink` is the run's :class:`~captionkit.engine.sinks.SidecarSink` with videos:
images are written as ever; a video's frames are gathered (their captions only: a few bytes
each) and, when the last one is in, the video's sidecar is written in one atomic write::

    [00:00.000] a red car parked on a street
    [00:05.000] a man opens the car door

lines in time order, whatever order the frames arrived in (they may interleave with other
videos' frames). In clip mode (one grid image per video) the sidecar holds the one caption,
as video-training tools expect beside ``clip.mp4`` (``clip.txt``). The JSON/CSV rows per frame
come from the run's stream sink as for any image, keyed ``clip.mp4#t=12.500``.

The sidecar's name follows the image rules (``clip.txt``, or under ``--output-dir`` mirrored),
with one addition: a video that shares its stem with another picture or video in its folder
(``clip.mp4`` beside ``clip.jpg``) writes ``clip.mp4.txt``, so it never takes the image's.

Resume follows the image rules. A video whose sidecar exists is done as a whole (with
``--existing skip``): :func:`video_done` tells the source walk, which then does not decode it.
A video whose frames did not all get a caption (a failed frame, a decode error, a run stopped
early) gets no sidecar, so the rerun takes it again; its captioned frames are in the results
store, so only the failures cost model time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captionkit.engine.sinks import SidecarSink, Sink
from captionkit.inputs.sources import Source, looks_like_image
from captionkit.inputs.video import is_video, timestamp
from captionkit.types import CaptionResult


@dataclass
class _Gathering:
    """One video's frames so far: (t, caption) lines, how many came, and how many will."""

    rel: Path | None
    lines: list[tuple[float, str]] = field(default_factory=list)
    seen: int = 0
    total: int | None = None
    failed: bool = False
    clip: bool = False


def is_video_source(source: Source) -> bool:
    """A frame, clip grid, failure or whole-video stand-in from the video expansion."""
    return "video" in source.meta


def one_line(text: str) -> str:
    """A caption on one line: the sidecar is one line per frame."""
    return " ".join(text.split())


class VideoSidecarSink(SidecarSink):
    """A :class:`SidecarSink` that also gathers videos' frames into one sidecar per video.

    Images are written exactly as by :class:`SidecarSink` (every option applies); sources
    from the video expansion (``"video"`` in their ``meta``) are gathered here.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._videos: dict[str, _Gathering] = {}

    @classmethod
    def from_sidecar(cls, sidecar: SidecarSink) -> VideoSidecarSink:
        """The same sink, with videos: every setting of ``sidecar`` kept as it is."""
        sink = cls.__new__(cls)
        sink.__dict__.update(sidecar.__dict__)
        sink._videos = {}
        return sink

    # -- names -------------------------------------------------------------------------------
    @staticmethod
    def _stem_shared(video: Path) -> bool:
        """Another picture or video in the folder has this video's stem (``clip.jpg``)."""
        try:
            with os.scandir(video.parent) as it:
                names = [e.name for e in it if not e.name.startswith(".")]
        except OSError:
            return False
        for name in names:
            if name == video.name or Path(name).stem != video.stem:
                continue
            other = video.parent / name
            if looks_like_image(other) or is_video(other):
                return True
        return False

    def video_target(self, source: Source) -> Path | None:
        """The sidecar of the video ``source`` belongs to."""
        video = Path(source.meta["video"])
        stand_in = Source(key=str(video), path=video, rel=source.rel or Path(video.name))
        target = super().path_for(stand_in)
        if target is None:
            return None
        if target.name == video.stem + self.extension and self._stem_shared(video):
            target = target.with_name(video.name + self.extension)
        return target

    def path_for(self, source: Source) -> Path | None:
        if is_video_source(source):
            return self.video_target(source)
        return super().path_for(source)

    # -- the Sink interface ------------------------------------------------------------------
    def already_done(self, source: Source) -> bool:
        if not is_video_source(source):
            return super().already_done(source)
        if self.existing != "skip":
            return False
        target = self.video_target(source)
        return target is not None and target.exists()

    def write(self, result: CaptionResult, source: Source) -> None:
        if not is_video_source(source):
            super().write(result, source)
            return
        meta = source.meta
        key = str(meta["video"])
        state = self._videos.setdefault(key, _Gathering(rel=source.rel))
        state.seen += 1
        state.clip = state.clip or meta.get("mode") == "clip"
        if "frames" in meta:
            state.total = int(meta["frames"])
        if result.ok and "error" not in meta:
            state.lines.append((float(meta.get("t", 0.0)), one_line(result.text or "")))
        else:
            state.failed = True
        if state.total is not None and state.seen >= state.total:
            del self._videos[key]
            if not state.failed and state.lines:
                self._write_video(source, state)

    @staticmethod
    def _text(state: _Gathering) -> str:
        if state.clip:
            return state.lines[0][1]
        return "\n".join(f"[{timestamp(t)}] {text}" for t, text in sorted(state.lines))

    def _merge_video(self, old: str, text: str) -> str | None:
        """Like image sidecars: ``append``/``prepend`` keep what was there, on its own lines."""
        if old == text:
            return None
        if self.existing == "append":
            return None if old.endswith(text) else f"{old}\n{text}"
        if self.existing == "prepend":
            return None if old.startswith(text) else f"{text}\n{old}"
        return text

    def _write_video(self, source: Source, state: _Gathering) -> None:
        target = self.video_target(source)
        if target is None:
            return
        self._write_one(target, self._text(state), merge=self._merge_video)

    def close(self, *, complete: bool = True) -> None:
        """Videos still gathering (a run stopped early) get no sidecar: the rerun finishes
        them from the store."""
        self._videos.clear()
        super().close(complete=complete)

    @property
    def pending(self) -> int:
        """Videos with frames still to come."""
        return len(self._videos)


def with_videos(sinks: Sequence[Sink]) -> list[Sink]:
    """The run's sinks with each :class:`SidecarSink` wrapped for videos (the session's hook)."""
    return [
        VideoSidecarSink.from_sidecar(s)
        if isinstance(s, SidecarSink) and not isinstance(s, VideoSidecarSink)
        else s
        for s in sinks
    ]


def video_done(sinks: Sequence[Sink]) -> Callable[[Source], bool] | None:
    """The test the source walk uses to leave a finished video undecoded: the engine's own
    skip test (every sink already has it), so the stand-in it yields is skipped, not read."""
    sinks = list(sinks)
    if not sinks:
        return None
    return lambda source: all(s.already_done(source) for s in sinks)
