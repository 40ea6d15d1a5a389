"""What is done with a video's decoded frames, apart from reading them: turned upright,
scored for scene cuts, and tiled into one clip-grid image.

Apart from :mod:`captionkit.inputs.video` (containers, seeking, sampling times, sources and
their failures) because these are pixel decisions with their own reasons and tuning; they take
decoded frames (or a :class:`~captionkit.inputs.video.VideoReader`) and never open a file.

**Scene cuts** (:func:`scene_starts`): the first frame, then the first frame of each new shot.
The score is the one PySceneDetect's ``ContentDetector`` uses (its default threshold,
27, means the same here): the mean absolute difference of the H, S and V channels between
consecutive frames, averaged over the three (weights 1, 1, 1, no edges), 0-255. We compute it
on frames scaled down to :data:`SCENE_SIDE` pixels (ffmpeg's scaler, in the decoder), which
PySceneDetect also does by default: it makes the score cheap and deaf to noise and grain.
We chose this over a grey-level mean difference (misses cuts between shots of equal
brightness but different colour) and over histogram distances (blind to a cut that moves the
same colours around), and over depending on PySceneDetect itself (it needs OpenCV). Cuts
closer than ``min_scene`` seconds (PySceneDetect's CLI default, 0.6 s) are ignored, so
flashes and fast pans do not produce a burst of frames. Two departures: hue is Pillow's
0-255 scale rather than OpenCV's 0-179 (hue weighs a little more), and hue differences are
taken around the colour circle (ContentDetector takes them straight, so grain in a red shot,
whose hues straddle 0 and 179, scores as a cut); thresholds carry over closely.

**Clip mode** (``mode="clip"``): a few frames (``max_frames``, default :data:`CLIP_FRAMES`)
spread over the video, or chosen evenly among its scene starts (:func:`clip_frames`), tiled
into one grid image (:func:`clip_grid`), so every backend can caption a whole clip.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from captionkit.inputs.video import VideoOptions, VideoReader

#: Longest side, in pixels, of the frames the scene-change score is computed on.
SCENE_SIDE = 128
#: Frames tiled into one image in clip mode when ``max_frames`` is not given.
CLIP_FRAMES = 4
#: Longest side of one tile of the clip grid.
TILE_SIDE = 512
#: A hint a prompt-taking backend may be given with a clip grid (``meta["prompt_hint"]``).
CLIP_HINT = (
    "The image is a grid of {n} frames from one video, in time order left to right, top to "
    "bottom. Describe the video as a whole: its subject, setting and what happens."
)


def upright(frame: Any) -> Any:
    """A decoded frame as an upright PIL image: phones store portrait video sideways with a
    display matrix saying how to turn it (``frame.rotation``, degrees counter-clockwise), which
    players apply and a captioner must too, or it describes a sideways world."""
    from PIL import Image

    image = frame.to_image()
    turn = round(getattr(frame, "rotation", 0) or 0) % 360
    if turn == 90:
        return image.transpose(Image.Transpose.ROTATE_90)
    if turn == 180:
        return image.transpose(Image.Transpose.ROTATE_180)
    if turn == 270:
        return image.transpose(Image.Transpose.ROTATE_270)
    return image


def _content_score(hsv: Any, previous: Any) -> float:
    """Mean absolute H, S, V difference (0-255), hue measured around its circle: red sits at
    both ends of the hue scale, so a red shot's grain would otherwise read as a cut."""
    import numpy as np

    delta = np.abs(hsv - previous)
    hue = delta[..., 0]
    delta[..., 0] = np.minimum(hue, 256 - hue)
    return float(delta.mean())


def scene_starts(
    frames: Iterable[tuple[float, Any]],
    size: tuple[int | None, int | None],
    threshold: float,
    min_scene: float = 0.6,
    max_frames: int | None = None,
) -> Iterator[tuple[float, Any]]:
    """The first of ``frames`` (``(seconds, frame)`` in decoding order, ``size`` the stream's
    width and height), then the first frame of each scene (see the module docstring)."""
    import numpy as np

    width, height = size[0] or SCENE_SIDE, size[1] or SCENE_SIDE
    scale = SCENE_SIDE / max(width, height, 1)
    small_w, small_h = max(2, round(width * scale)), max(2, round(height * scale))
    previous = None
    last_cut: float | None = None
    n = 0
    for t, frame in frames:
        small = frame.reformat(width=small_w, height=small_h, format="rgb24").to_image()
        hsv = np.asarray(small.convert("HSV"), dtype=np.int16)
        cut = previous is None
        if previous is not None and (last_cut is None or t - last_cut >= min_scene):
            cut = _content_score(hsv, previous) >= threshold
        previous = hsv
        if cut:
            last_cut = t
            yield t, frame
            n += 1
            if max_frames is not None and n >= max_frames:
                return


def clip_frames(reader: VideoReader, options: VideoOptions, n: int) -> list[tuple[float, Any]]:
    """``n`` frames spread over the video: the middles of ``n`` equal spans, or, with scene
    sampling, ``n`` of the scene starts chosen evenly. Unknown length: decoded on, thinned."""
    if options.scenes is not None:
        picked = _thin(reader.scenes(options.scenes, options.min_scene), n)
    elif reader.duration is not None:
        duration = reader.duration
        times = [(i + 0.5) * duration / n for i in range(n)]
        picked = [(t, upright(f)) for t, f in reader.at_times(times)]
    else:
        picked = _thin(reader._interval_unknown(options.every, None), n)
    return picked


def _thin(frames: Iterator[tuple[float, Any]], n: int) -> list[tuple[float, Any]]:
    """At most ``n`` frames spread evenly over a stream of unknown length, in bounded memory:
    keep small copies; when ``2n`` are held, drop every other and take half as many after."""
    kept: list[tuple[float, Any]] = []
    stride = 1
    for seen, (t, frame) in enumerate(frames):
        if seen % stride == 0:
            image = upright(frame)
            image.thumbnail((TILE_SIDE, TILE_SIDE))
            kept.append((t, image))
            if len(kept) >= 2 * n:
                kept = kept[::2]
                stride *= 2
    if len(kept) <= n:
        return kept
    step = len(kept) / n
    return [kept[int(i * step + step / 2)] for i in range(n)]


def clip_grid(images: list[Any], gap: int = 8) -> Any:
    """Tile frames (PIL images) into one near-square grid, in reading order.

    One image is what every backend takes, so this works with all of them. Chat VLMs that take
    several images in one message (Qwen2-VL, Idefics, hosted GPT-4o/Gemini) would see each
    frame at full size and know their order without a layout hint; that belongs in a
    multi-image ``caption_batch`` input a backend declares as a capability, fed from a clip
    source that carries the frames instead of their grid (``meta["frames_images"]``).
    """
    from PIL import Image

    tiles = []
    for image in images:
        tile = image.convert("RGB")
        tile.thumbnail((TILE_SIDE, TILE_SIDE))
        tiles.append(tile)
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    cell_w = max(t.width for t in tiles)
    cell_h = max(t.height for t in tiles)
    grid = Image.new(
        "RGB", (cols * cell_w + (cols - 1) * gap, rows * cell_h + (rows - 1) * gap), (0, 0, 0)
    )
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        x = c * (cell_w + gap) + (cell_w - tile.width) // 2
        y = r * (cell_h + gap) + (cell_h - tile.height) // 2
        grid.paste(tile, (x, y))
    return grid
