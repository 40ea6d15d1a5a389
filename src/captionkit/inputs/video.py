"""Video files as inputs: frames sampled by interval or scene change, decoded lazily with PyAV.

A video becomes a stream of :class:`~captionkit.inputs.sources.Source` objects, one per sampled
frame, each with its pixels in ``.image`` and the key ``clip.mp4#t=12.500`` (a W3C media
fragment), so the results store, skip and resume work per frame exactly as for images. Frames
are decoded one at a time as the engine asks for them: a two-hour film never sits in memory.

Sampling:

* **interval** (``every`` seconds, default 5): for each target time the decoder *seeks* to the
  keyframe before it when the target is further ahead than :data:`SEEK_GAP` seconds and than
  the widest keyframe spacing seen (so the keyframe it lands on is past the frame in hand),
  and decodes forward from there; closer targets are reached by decoding on. A long video
  with a sparse interval decodes a few frames per keyframe interval, not every frame.
  Containers that cannot seek fall back to decoding straight through.
* **scene change** (``scenes`` threshold): the first frame, then the first frame of each new
  shot, by PySceneDetect's content score on small frames (the score, its threshold and why:
  :mod:`captionkit.inputs.video_frames`).
* ``max_frames`` caps the frames per video; for an interval sampling that would give more,
  the frames are spread evenly over the whole video instead of stopping early.

``mode="clip"`` makes one source per video instead: a few frames (``max_frames``, default 4)
spread over the video (or its scene starts) tiled into one grid image, so every backend can
caption a whole clip (see :func:`~captionkit.inputs.video_frames.clip_grid`).

Animated GIF, WebP and PNG stay images (their first frame is captioned): they are picture
formats people caption as pictures.

A video that cannot be opened or decoded fails alone: it yields one source whose reading
raises :class:`ImageDecodeError` with a one-line reason, so the engine reports it like a
broken image and the run goes on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from captionkit.errors import ConfigError, ImageDecodeError, require
from captionkit.inputs.sources import IMAGE_SUFFIXES, NEVER_IMAGES, Source
from captionkit.inputs.video_frames import (
    CLIP_FRAMES,
    CLIP_HINT,
    clip_frames,
    clip_grid,
    scene_starts,
    upright,
)

#: Suffixes taken as videos without looking inside (the decoder still checks the content).
VIDEO_SUFFIXES = frozenset(
    [
        ".mp4",
        ".m4v",
        ".mov",
        ".qt",
        ".webm",
        ".mkv",
        ".avi",
        ".mpg",
        ".mpeg",
        ".m2ts",
        ".wmv",
        ".flv",
        ".3gp",
        ".ogv",
    ]
)
# ".ts" and ".mts" are TypeScript as often as MPEG transport streams: those are sniffed.
#: ISO-BMFF brands that are still pictures (AVIF, HEIF): never videos.
_PICTURE_BRANDS = (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1", b"hevc", b"hevx")
#: Seconds ahead beyond which the next sampled frame is reached by seeking, not decoding on.
SEEK_GAP = 4.0


@dataclass(frozen=True)
class VideoOptions:
    """How videos are sampled. ``scenes`` set: scene-change sampling, else every ``every`` s."""

    every: float = 5.0
    scenes: float | None = None
    max_frames: int | None = None
    mode: Literal["frames", "clip"] = "frames"
    min_scene: float = 0.6

    def __post_init__(self) -> None:
        if not (self.every > 0 and math.isfinite(self.every)):
            raise ConfigError("--video-every must be a number of seconds above 0")
        if self.scenes is not None and not 0 < self.scenes <= 255:
            raise ConfigError("--video-scenes must be a threshold between 0 and 255 (try 27)")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError("--video-max-frames must be 1 or more")
        if self.mode not in ("frames", "clip"):
            raise ConfigError("--video-mode must be frames or clip")
        if self.min_scene < 0:
            raise ConfigError("the shortest scene must be 0 seconds or more")


def video_options(
    every: float | None = None,
    scenes: float | None = None,
    max_frames: int | None = None,
    mode: str | None = None,
    *,
    enabled: bool | None = None,
) -> VideoOptions | None:
    """The run's video options from its flags (None: not given); None: videos are not inputs.

    Videos are inputs by default (``enabled`` None), every 5 s, when PyAV is installed;
    without it they are left out as before, unless a video flag asks for them (then the
    one-line hint to install ``captionkit[video]``, before any model loads).
    ``enabled=False`` (``--no-videos``) leaves them out, and is an error beside a video flag.
    """
    given: dict[str, Any] = {
        k: v
        for k, v in (("every", every), ("scenes", scenes), ("max_frames", max_frames))
        if v is not None
    }
    if mode is not None:
        given["mode"] = mode
    if enabled is False:
        if given:
            raise ConfigError("--no-videos leaves videos out: drop the --video-* flags with it")
        return None
    options = VideoOptions(**given)
    if given or enabled:
        require("av", "video", "reading video")
    elif not have_pyav():
        return None
    return options


def have_pyav() -> bool:
    """PyAV is installed (without importing it: it loads ffmpeg's libraries)."""
    import importlib.util

    return importlib.util.find_spec("av") is not None


def left_out(path: Path) -> Source:
    """A video named while videos are not inputs: it fails alone, saying why, rather than as
    an image that cannot be decoded."""
    if have_pyav():
        reason = "a video, and videos are left out (--no-videos)"
    else:
        reason = 'a video: videos need PyAV, pip install "captionkit[video]"'
    return Source(key=str(path), path=path, rel=Path(path.name), image=UnreadableVideo(reason))


# -- telling videos apart ---------------------------------------------------------------------


def sniff_video(path: Path) -> bool:
    """True when the first bytes are a known video container (MP4/MOV, Matroska/WebM, AVI,
    MPEG-PS/TS, FLV, ASF); still-picture ISO files (AVIF, HEIC) are not videos."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(200)
    except OSError:
        return False
    if len(head) > 196 and (head[0] == head[188] == 0x47 or head[4] == head[196] == 0x47):
        return True  # MPEG transport stream: 188-byte packets (192 in M2TS), each 0x47 first
    if head[4:8] == b"ftyp":
        return head[8:12] not in _PICTURE_BRANDS
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):  # QuickTime without ftyp
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return True
    return head.startswith(
        (
            b"\x1a\x45\xdf\xa3",  # EBML: Matroska, WebM
            b"\x00\x00\x01\xba",  # MPEG program stream
            b"FLV\x01",
            b"\x30\x26\xb2\x75\x8e\x66\xcf\x11",  # ASF: WMV
        )
    )


def is_video(path: Path) -> bool:
    """A video by suffix, or, for a suffix that says nothing, by its first bytes.

    Image suffixes (``.gif`` included: an animated GIF is captioned as a picture) and known
    non-media suffixes are never videos, and are not opened to find out.
    """
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return True
    if suffix in IMAGE_SUFFIXES or suffix in NEVER_IMAGES:
        return False
    return sniff_video(path)


# -- keys and timestamps ----------------------------------------------------------------------


def frame_key(video_key: str, t: float) -> str:
    """``clip.mp4#t=12.500``: the video's key with a media-fragment time, in milliseconds."""
    return f"{video_key}#t={t:.3f}"


def timestamp(t: float) -> str:
    """``00:12.500``; ``1:02:03.500`` from an hour on."""
    ms = round(t * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    seconds, ms = divmod(ms, 1000)
    clock = f"{minutes:02d}:{seconds:02d}.{ms:03d}"
    return f"{hours}:{clock}" if hours else clock


class UnreadableVideo:
    """Stands in for the pixels of a video that could not be read.

    The engine reads ``source.image`` in its prepare stage; any use of this object raises
    :class:`ImageDecodeError`, so the failure is reported for that video alone, in one line,
    through the same path as a broken image.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImageDecodeError(self.reason)

    def __repr__(self) -> str:
        return f"UnreadableVideo({self.reason!r})"


def _decode_errors() -> tuple[type[BaseException], ...]:
    """What reading one video may raise that is that video's failure, not the run's: any
    ffmpeg error (damaged data, unsupported codec), an OS error, a frame PyAV cannot convert."""
    av = require("av", "video", "reading video")
    return (av.error.FFmpegError, OSError, ValueError, EOFError)


def _why(exc: BaseException) -> str:
    """An error's reason without ffmpeg's errno and the file name (the key already says it)."""
    reason = getattr(exc, "strerror", None) or str(exc)
    text = " ".join(str(reason).split()) or type(exc).__name__
    return text[:200]


# -- decoding ---------------------------------------------------------------------------------


class VideoReader:
    """One opened video: its duration, and frames at times, by interval, or at scene cuts.

    ``decoded`` counts the frames the decoder produced (seeking keeps it far below the
    video's frame count for sparse sampling). Times are seconds from the video's start.
    """

    def __init__(self, path: Path) -> None:
        av = require("av", "video", "reading video")
        self.path = path
        self.decoded = 0
        self.seeks = 0
        #: The widest spacing of keyframes decoded so far, in seconds.
        self.gop = 0.0
        try:
            if path.stat().st_size == 0:
                raise ImageDecodeError("empty file")
            self.container = av.open(str(path), mode="r")
        except _decode_errors() as exc:  # missing, damaged, not a video: this video's failure
            raise ImageDecodeError(f"cannot open video: {_why(exc)}") from None
        try:
            streams = self.container.streams
            if not streams.video:
                if streams.audio:
                    raise ImageDecodeError("no video stream: an audio-only file")
                raise ImageDecodeError("no video stream found: damaged or truncated")
            self.stream = self.container.streams.video[0]
            self.stream.thread_type = "AUTO"
            self.time_base = float(self.stream.time_base or 0) or 1e-6
            start = self.stream.start_time
            self.start_pts = int(start) if start is not None else 0
            rate = self.stream.average_rate or self.stream.guessed_rate
            self.frame_period = 1.0 / float(rate) if rate else 0.04
        except BaseException:
            self.container.close()
            raise
        self._seekable = True

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def duration(self) -> float | None:
        """Seconds, from the stream or else the container header; None when neither says."""
        if self.stream.duration:
            return float(self.stream.duration) * self.time_base
        if self.container.duration:
            return self.container.duration / 1_000_000  # av.time_base
        return None

    def _time(self, frame: Any) -> float | None:
        pts = frame.pts if frame.pts is not None else getattr(frame, "dts", None)
        if pts is None:
            return None
        return (pts - self.start_pts) * self.time_base

    def _decode(self, target: float | None = None) -> Iterator[tuple[float, Any]]:
        """Frames from the current position; ``target``: just sought to, so the first frame is
        the keyframe before it, and how far back it lies is a lower bound on the spacing."""
        last_key: float | None = None
        for frame in self.container.decode(self.stream):
            self.decoded += 1
            t = self._time(frame)
            if t is None:
                continue
            if frame.key_frame:
                if last_key is None and target is not None:
                    self.gop = max(self.gop, target - t)
                elif last_key is not None and t > last_key:
                    self.gop = max(self.gop, t - last_key)
                last_key = t
            yield max(0.0, t), frame

    def _seek(self, target: float) -> bool:
        if not self._seekable:
            return False
        try:
            offset = self.start_pts + int(target / self.time_base)
            self.container.seek(offset, stream=self.stream, backward=True, any_frame=False)
        except Exception:  # not seekable (a pipe, an unindexed AVI): decode on
            self._seekable = False
            return False
        self.seeks += 1
        return True

    @property
    def _seek_after(self) -> float:
        """Seek only when the target lies beyond the widest keyframe spacing seen so far: the
        keyframe before it is then past the frame in hand, so the seek never decodes more."""
        return max(SEEK_GAP, self.gop)

    def at_times(self, times: list[float]) -> Iterator[tuple[float, Any]]:
        """The first frame at or after each time (half a frame's tolerance), in order."""
        frames: Iterator[tuple[float, Any]] | None = None
        last: float | None = None
        slack = self.frame_period / 2
        for target in times:
            if frames is None:
                frames = self._decode()
            elif last is not None and target - last > self._seek_after and self._seek(target):
                frames = self._decode(target)  # the old iterator is spent: the seek flushed it
            for t, frame in frames:
                if t + slack >= target:
                    last = t
                    yield t, frame
                    break
            else:
                return

    def interval(self, every: float, max_frames: int | None = None) -> Iterator[tuple[float, Any]]:
        """A frame every ``every`` seconds from the start; ``max_frames`` spreads them evenly."""
        duration = self.duration
        if duration is None:  # unknown length: decode on, taking one frame per interval
            yield from self._interval_unknown(every, max_frames)
            return
        count = max(1, math.ceil(duration / every - 1e-9))
        if max_frames is not None and count > max_frames:
            times = [i * duration / max_frames for i in range(max_frames)]
        else:
            times = [i * every for i in range(count)]
        yield from self.at_times(times)

    def _interval_unknown(
        self, every: float, max_frames: int | None
    ) -> Iterator[tuple[float, Any]]:
        target, n = 0.0, 0
        slack = self.frame_period / 2
        for t, frame in self._decode():
            if t + slack >= target:
                yield t, frame
                n += 1
                if max_frames is not None and n >= max_frames:
                    return
                target = t + every

    def scenes(
        self, threshold: float, min_scene: float = 0.6, max_frames: int | None = None
    ) -> Iterator[tuple[float, Any]]:
        """The first frame, then the first frame of each scene (:func:`scene_starts`)."""
        size = (self.stream.width, self.stream.height)
        yield from scene_starts(self._decode(), size, threshold, min_scene, max_frames)


def _frames(reader: VideoReader, options: VideoOptions) -> Iterator[tuple[float, Any]]:
    if options.scenes is not None:
        return reader.scenes(options.scenes, options.min_scene, options.max_frames)
    return reader.interval(options.every, options.max_frames)


def _failed(video: Source, reason: str, *, frames: int) -> Source:
    """The one source that carries a video's failure to the engine (see UnreadableVideo)."""
    meta = {"video": video.key, "frame": frames, "frames": frames + 1, "error": reason}
    return Source(key=video.key, rel=video.rel, image=UnreadableVideo(reason), meta=meta)


def expand_video(
    path: Path,
    options: VideoOptions | None = None,
    *,
    rel: Path | None = None,
    key: str | None = None,
) -> Iterator[Source]:
    """The sources one video gives: its sampled frames (or one clip grid), lazily.

    Every frame's ``meta`` holds ``{"video": key, "t": seconds, "frame": index}``; the last
    one also ``"frames": total``, so a sink gathering a video's frames knows when it has them
    all even when they arrive interleaved with other videos' (one frame is held back to know
    which is last). A video that fails to open or decode ends with one failing source (key:
    the video's own) whose ``meta`` has ``"error"``, and the same ``"frames"`` count.
    """
    options = options or VideoOptions()
    video = Source(key=key or str(path), path=path, rel=rel or Path(path.name))
    if options.mode == "clip":
        yield _clip_source(video, options)
        return
    held: tuple[float, Any] | None = None
    n = 0

    def frame_source(t: float, frame: Any, index: int, total: int | None) -> Source:
        meta: dict[str, Any] = {"video": video.key, "t": round(t, 3), "frame": index}
        if total is not None:
            meta["frames"] = total
        return Source(key=frame_key(video.key, t), rel=video.rel, image=frame, meta=meta)

    errors = _decode_errors()
    try:
        with VideoReader(path) as reader:
            for t, frame in _frames(reader, options):
                image = upright(frame)
                if held is not None:
                    yield frame_source(*held, n - 1, None)
                held = (t, image)
                n += 1
    except ImageDecodeError as exc:
        reason = str(exc)
    except errors as exc:  # a decode error mid-stream fails this video, not the run
        reason = f"cannot decode video: {_why(exc)}"
    else:
        if held is None:
            yield _failed(video, "no frame could be decoded", frames=0)
        else:
            yield frame_source(*held, n - 1, n)
        return
    if held is not None:
        yield frame_source(*held, n - 1, None)
    yield _failed(video, f"{reason} (after {n} frames)" if n else reason, frames=n)


# -- clip mode: one grid image per video ------------------------------------------------------


def _clip_source(video: Source, options: VideoOptions) -> Source:
    n = options.max_frames or CLIP_FRAMES
    try:
        with VideoReader(video.path or Path(video.key)) as reader:
            picked = clip_frames(reader, options, n)
    except ImageDecodeError as exc:
        return _failed(video, str(exc), frames=0)
    except _decode_errors() as exc:
        return _failed(video, f"cannot decode video: {_why(exc)}", frames=0)
    if not picked:
        return _failed(video, "no frame could be decoded", frames=0)
    meta = {
        "video": video.key,
        "mode": "clip",
        "times": [round(t, 3) for t, _ in picked],
        "frame": 0,
        "frames": 1,
        "prompt_hint": CLIP_HINT.format(n=len(picked)),
    }
    grid = clip_grid([image for _, image in picked])
    return Source(key=video.key, rel=video.rel, image=grid, meta=meta)


# -- counting (the progress bar's total) ------------------------------------------------------


def estimate_frames(path: Path, options: VideoOptions | None = None) -> int:
    """How many sources :func:`expand_video` will give, from the header alone (no decoding).

    Exact for interval sampling of a video whose length the header states; scene sampling
    cannot be known without decoding, so it counts one per ``every`` seconds (capped by
    ``max_frames``). A video that cannot be opened counts 1 (its failure).
    """
    options = options or VideoOptions()
    if options.mode == "clip":
        return 1
    try:
        with VideoReader(path) as reader:
            duration = reader.duration
    except Exception:  # counted as its one failure
        return 1
    if duration is None:
        return options.max_frames or 1
    count = max(1, math.ceil(duration / options.every - 1e-9))
    return min(count, options.max_frames) if options.max_frames else count
