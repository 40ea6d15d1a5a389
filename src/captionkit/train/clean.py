"""``captionkit data clean``: find what would hurt a captioning fine-tune, and set it aside.

Images: unreadable or corrupt files, exact duplicates (same bytes), near duplicates
(perceptual hash within a Hamming distance, via ``imagehash``), tiny or extreme-aspect
images, near-uniform images (blank frames, solid colours). Captions: empty, too short, too
long, or not in the expected language. Caption text is normalised (whitespace, the trailing
" ." of Flickr/COCO references).

Dry run by default: a CSV says what would be removed and why. ``apply`` moves problem images
(and their sidecars) into a quarantine folder (a symlink is moved as a link, never the file it
points to) and rewrites caption files with the cleaned
captions after copying the originals there too. Nothing is ever deleted.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from captionkit.errors import InputError, require
from captionkit.train.language import language_problem

QUARANTINE = "_quarantine"


def normalise_caption(text: str) -> str:
    """Collapse whitespace and drop a trailing " ." (kept: a period glued to the last word)."""
    text = " ".join(str(text).split())
    text = re.sub(r"(?:^|\s+)\.$", "", text)
    return text.strip()


@dataclass(frozen=True)
class CleanOptions:
    min_side: int = 64
    max_aspect: float = 4.0
    uniform_std: float = 4.0  # grey-level standard deviation (0-255) below which an image is blank
    near_duplicate_distance: int = 4  # perceptual-hash bits; -1 turns the check off
    min_words: int = 3
    max_words: int = 60
    language: str = "en"


@dataclass
class Problem:
    path: str
    check: str
    detail: str
    action: str  # quarantine | drop-caption


@dataclass
class CleanReport:
    root: Path
    images: int = 0
    captions: int = 0
    normalised: int = 0
    problems: list[Problem] = field(default_factory=list)
    #: image path -> cleaned captions (only for images whose captions are known)
    cleaned: dict[Path, list[str]] = field(default_factory=dict)
    caption_source: str = "none"  # sidecars | references.json | dataset | none

    def quarantined(self) -> list[str]:
        return sorted({p.path for p in self.problems if p.action == "quarantine"})

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for p in self.problems:
            out[p.check] += 1
        return dict(out)


def _has_caption_file(root: Path) -> bool:
    """Whether ``root`` is, or holds, a captions file the dataset loaders would read."""
    if not root.is_dir():
        return True
    names = ("references.json", "captions.json")
    return any((root / n).exists() for n in names) or any(root.glob("*token*"))


def _load_captions(root: Path) -> tuple[dict[Path, list[str]], str]:
    """Captions by resolved image path, via the eval room's dataset loaders when any apply."""
    from captionkit.errors import InputError
    from captionkit.eval.datasets import load_dataset

    try:
        data = load_dataset(root)
    except InputError:
        if _has_caption_file(root):
            raise  # a malformed references file is an error, not "no captions"
        return {}, "none"  # a plain folder of images without captions: only image checks run
    caps = {Path(item.image).resolve(): list(item.references) for item in data.items}
    base = root if root.is_dir() else root.parent
    if (base / "references.json").is_file():
        return caps, "references.json"
    if any(Path(p).with_suffix(".txt").is_file() for p in caps):
        return caps, "sidecars"
    return caps, "dataset"


def scan(path: str | Path, options: CleanOptions | None = None) -> CleanReport:
    """Check every image under ``path`` and every caption the dataset gives them."""
    from captionkit.errors import ImageDecodeError
    from captionkit.inputs.decode import decode_image
    from captionkit.inputs.sources import walk_folder

    opts = options or CleanOptions()
    root = Path(path)
    if not root.exists():
        raise InputError(f"'{path}' does not exist")
    captions, source = _load_captions(root)
    folder = root if root.is_dir() else root.parent
    files = [s.path for s in walk_folder(folder, exclude=(f"{QUARANTINE}/*",)) if s.path]
    report = CleanReport(root=folder, images=len(files), caption_source=source)
    imagehash = require("imagehash", "train", "near-duplicate detection")
    import numpy as np

    seen_bytes: dict[str, Path] = {}
    hashes: list[tuple[Path, int]] = []
    # Real files before symlinks: of a file and a link to it, the link is the duplicate (and
    # the one set aside), so `apply` never moves a file out from under a link.
    for file in sorted(files, key=lambda f: (f.is_symlink(), f)):
        rel = _rel(file, folder)
        try:
            data = file.read_bytes()
        except OSError as exc:  # vanished since the walk, unreadable, a link gone dangling
            report.problems.append(Problem(rel, "unreadable", exc.strerror or "", "quarantine"))
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen_bytes:
            report.problems.append(
                Problem(
                    rel,
                    "duplicate",
                    f"same bytes as {_rel(seen_bytes[digest], folder)}",
                    "quarantine",
                )
            )
            continue
        seen_bytes[digest] = file
        try:
            image = decode_image(data)
        except ImageDecodeError as exc:
            report.problems.append(Problem(rel, "unreadable", str(exc), "quarantine"))
            continue
        w, h = image.size
        if min(w, h) < opts.min_side:
            report.problems.append(
                Problem(rel, "tiny", f"{w}x{h} < {opts.min_side} px", "quarantine")
            )
            continue
        if max(w / h, h / w) > opts.max_aspect:
            report.problems.append(
                Problem(rel, "aspect", f"{w}x{h}, ratio {max(w / h, h / w):.1f}", "quarantine")
            )
            continue
        grey = np.asarray(image.convert("L").resize((64, 64)), dtype=np.float32)
        if float(grey.std()) < opts.uniform_std:
            report.problems.append(
                Problem(rel, "uniform", f"grey std {grey.std():.1f}", "quarantine")
            )
            continue
        if opts.near_duplicate_distance >= 0:
            hashes.append((file, int(str(imagehash.phash(image)), 16)))
    for dup, orig, dist in near_duplicates(hashes, opts.near_duplicate_distance):
        report.problems.append(
            Problem(
                _rel(dup, folder),
                "near-duplicate",
                f"phash distance {dist} to {_rel(orig, folder)}",
                "quarantine",
            )
        )
    _check_captions(report, captions, files, opts)
    return report


def _check_captions(
    report: CleanReport, captions: dict[Path, list[str]], files: list[Path], opts: CleanOptions
) -> None:
    if not captions:
        return
    gone = set(report.quarantined())
    for file in sorted(files):
        rel = _rel(file, report.root)
        if rel in gone:
            continue
        kept = []
        raw = captions.get(file.resolve(), [])
        for text in raw:
            report.captions += 1
            clean = normalise_caption(text)
            report.normalised += clean != text
            why = _caption_problem(clean, opts)
            if why:
                report.problems.append(Problem(rel, why[0], f"{why[1]}: {text!r}", "drop-caption"))
            else:
                kept.append(clean)
        report.cleaned[file] = kept
        if not kept:
            what = "all captions dropped" if raw else "no caption"
            report.problems.append(Problem(rel, "no-caption", what, "quarantine"))


def _caption_problem(text: str, opts: CleanOptions) -> tuple[str, str] | None:
    words = text.split()
    if not words:
        return "empty-caption", "empty"
    if len(words) < opts.min_words:
        return "short-caption", f"{len(words)} words < {opts.min_words}"
    if len(words) > opts.max_words:
        return "long-caption", f"{len(words)} words > {opts.max_words}"
    why = language_problem(text, opts.language)
    return ("language", why) if why else None


def near_duplicates(hashes: list[tuple[Path, int]], distance: int) -> list[tuple[Path, Path, int]]:
    """(later image, earlier image it nearly duplicates, distance) for 64-bit hashes.

    Hand-written because imagehash compares two hashes, not a collection: by the pigeonhole
    principle two hashes within ``distance`` bits agree exactly on at least one of
    ``distance + 1`` bit bands, so only images sharing a band are compared (no n^2 scan).
    """
    if distance < 0 or len(hashes) < 2:
        return []
    bands = distance + 1
    edges = [round(i * 64 / bands) for i in range(bands + 1)]
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    kept: list[tuple[Path, int]] = []
    out = []
    for path, value in hashes:
        keys = [
            (b, (value >> edges[b]) & ((1 << (edges[b + 1] - edges[b])) - 1)) for b in range(bands)
        ]
        best: tuple[int, int] | None = None
        for key in keys:
            for idx in buckets.get(key, ()):
                d = (value ^ kept[idx][1]).bit_count()
                if d <= distance and (best is None or d < best[0]):
                    best = (d, idx)
        if best is not None:
            out.append((path, kept[best[1]][0], best[0]))
            continue
        for key in keys:
            buckets[key].append(len(kept))
        kept.append((path, value))
    return out


def write_csv(report: CleanReport, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "check", "detail", "action"])
        for p in report.problems:
            writer.writerow([p.path, p.check, p.detail, p.action])
    return out


def apply(report: CleanReport, quarantine: str | Path | None = None) -> Path:
    """Move problem images aside and write the cleaned captions; never deletes anything."""
    import json

    root = report.root
    qdir = Path(quarantine) if quarantine else root / QUARANTINE
    qdir.mkdir(parents=True, exist_ok=True)
    moved = set(report.quarantined())
    for rel in moved:
        src = root / rel
        for file in (src, src.with_suffix(".txt")):
            if os.path.lexists(file):
                dest = qdir / file.relative_to(root)
                dest.parent.mkdir(parents=True, exist_ok=True)
                _move(file, dest)
    write_csv(report, qdir / "clean_report.csv")
    kept = {f: caps for f, caps in report.cleaned.items() if _rel(f, root) not in moved}
    if report.caption_source == "sidecars":
        for file, caps in kept.items():
            side = file.with_suffix(".txt")
            if side.exists():
                backup = qdir / "captions" / side.relative_to(root)
                backup.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(side, backup)
            side.write_text("\n".join(caps) + "\n", encoding="utf-8")
    elif report.caption_source in {"references.json", "dataset"}:
        target = root / (
            "references.json"
            if report.caption_source == "references.json"
            else "references.cleaned.json"
        )
        if target.exists():
            shutil.copy2(target, qdir / f"{target.name}.orig")
        images = root / "images" if (root / "images").is_dir() else root
        data = {_rel(f, images): caps for f, caps in sorted(kept.items())}
        target.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return qdir


def _move(file: Path, dest: Path) -> None:
    """Move ``file`` to ``dest``; a symlink is moved as the link itself, never its target.

    A relative link would point elsewhere from inside the quarantine folder, so it is
    re-made there pointing at the same file by absolute path.
    """
    if file.is_symlink():
        target = os.readlink(file)
        if not os.path.isabs(target):
            target = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(file)), target))
        made = dest.with_name(f".{dest.name}.link{os.getpid()}")
        os.symlink(target, made)
        os.replace(made, dest)  # like the rename of a plain move, a rerun replaces it
        file.unlink()
        return
    shutil.move(str(file), str(dest))


def _rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as the user sees it: a symlink keeps its own name (its
    target's name would make the report, and ``apply``, act on the target)."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return str(path)
