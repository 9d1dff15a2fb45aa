"""Which stereo pairs to process: one pair, a folder of pairs, or a glob.

Folder / glob convention: a left image is any image whose path below the folder (or below the
glob's fixed prefix) contains the word ``left`` (any case, e.g. ``left/0001.png``,
``0001_left.png``, SceneFlow's ``.../left/0006.png``) or whose name is ``im0`` (Middlebury's
``im0.png``); its right image is the same path with ``left`` -> ``right`` (``im0`` -> ``im1``).
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

from stereoq.errors import StereoqError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")
_LEFT_WORD = re.compile(r"(?<![a-z])left(?![a-z])", re.IGNORECASE)
_IM0 = re.compile(r"^im0(?=\.[^.]+$)")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Pair:
    """A rectified stereo pair; ``name`` is unique within a run and names its output folder."""

    name: str
    left: Path
    right: Path


def right_of(relative_left: str) -> str | None:
    """The right image's relative path for a left one, or None when it is not a left image."""
    if _LEFT_WORD.search(relative_left):
        return _LEFT_WORD.sub(_swap_case_word, relative_left)
    head, _, name = relative_left.rpartition("/")
    if _IM0.match(name):
        return (head + "/" if head else "") + _IM0.sub("im1", name)
    return None


def _swap_case_word(match: re.Match[str]) -> str:
    word = match.group(0)
    if word.isupper():
        return "RIGHT"
    return "Right" if word[0].isupper() else "right"


def _pair_name(relative_left: str) -> str:
    stem = relative_left.rsplit(".", 1)[0]
    stem = _LEFT_WORD.sub("", stem)
    stem = re.sub(r"(^|/)im0$", "", stem)
    parts = [p.strip("_-. ") for p in stem.split("/")]
    return "/".join(p for p in parts if p) or "pair"


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _pairs_below(root: Path, lefts: list[Path]) -> list[Pair]:
    found = []
    for left in sorted(lefts):
        rel = left.relative_to(root).as_posix()
        rel_right = right_of(rel)
        if rel_right is not None and (root / rel_right).is_file():
            found.append((_pair_name(rel), left, root / rel_right))
    names = _deduplicate([name for name, _, _ in found])
    return [Pair(n, lp, rp) for n, (_, lp, rp) in zip(names, found, strict=True)]


def _glob_root(pattern: str) -> Path:
    fixed = []
    for part in Path(pattern).parts:
        if _GLOB_CHARS.search(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def resolve_pairs(imgl: str, imgr: str | None) -> list[Pair]:
    """The pairs named by ``--imgl`` / ``--imgr``; raises StereoqError naming what is wrong.

    - two files: one pair;
    - ``imgl`` a folder (``imgr`` omitted): every left image below it with its right image;
    - ``imgl`` and ``imgr`` folders: files of the same relative path in both;
    - ``imgl`` a glob (quote it): the matched left images and their right images by the naming
      convention, or, with ``imgr`` also a glob, both match lists sorted and paired in order.
    """
    left_path = Path(imgl)
    if _GLOB_CHARS.search(imgl) and not left_path.exists():
        return _from_glob(imgl, imgr)
    if left_path.is_dir():
        return _from_folder(left_path, Path(imgr) if imgr else None)
    if not left_path.exists():
        raise StereoqError(f"--imgl {imgl}: no such file or folder")
    if imgr is None:
        raise StereoqError("--imgr: missing (needed when --imgl is a single image)", exit_code=2)
    right_path = Path(imgr)
    if not right_path.is_file():
        raise StereoqError(f"--imgr {imgr}: no such file")
    return [Pair(left_path.stem, left_path, right_path)]


def _from_folder(left_dir: Path, right_dir: Path | None) -> list[Pair]:
    if right_dir is not None:
        if not right_dir.is_dir():
            raise StereoqError(f"--imgr {right_dir}: not a folder (--imgl is a folder)")
        pairs = []
        for left in sorted(p for p in left_dir.rglob("*") if _is_image(p)):
            rel = left.relative_to(left_dir)
            if (right_dir / rel).is_file():
                pairs.append(Pair(rel.with_suffix("").as_posix(), left, right_dir / rel))
        if not pairs:
            raise StereoqError(
                f"--imgl {left_dir}: no image with a same-named partner in --imgr {right_dir}"
            )
        return pairs
    pairs = _pairs_below(left_dir, [p for p in left_dir.rglob("*") if _is_image(p)])
    if not pairs:
        raise StereoqError(
            f"--imgl {left_dir}: no stereo pair found (expected *left*/*right* names, left/ and "
            "right/ folders, or im0/im1)"
        )
    return pairs


def _from_glob(pattern: str, right_pattern: str | None) -> list[Pair]:
    lefts = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if _is_image(Path(p)))
    if not lefts:
        raise StereoqError(f"--imgl {pattern}: the pattern matches no image")
    if right_pattern is not None:
        rights = sorted(
            Path(p) for p in glob.glob(right_pattern, recursive=True) if _is_image(Path(p))
        )
        if len(rights) != len(lefts):
            raise StereoqError(
                f"--imgr {right_pattern}: matches {len(rights)} images, --imgl matches {len(lefts)}"
            )
        names = _deduplicate([p.stem for p in lefts])
        return [Pair(n, lp, rp) for n, lp, rp in zip(names, lefts, rights, strict=True)]
    pairs = _pairs_below(_glob_root(pattern), lefts)
    if not pairs:
        raise StereoqError(
            f"--imgl {pattern}: no matched image has a right partner (left -> right, im0 -> im1); "
            "or give --imgr a second pattern"
        )
    return pairs


def _deduplicate(names: list[str]) -> list[str]:
    """Names made unique by suffixing ``_2``, ``_3``... to repeats (they name output folders)."""
    seen: set[str] = set()
    out = []
    for name in names:
        unique, k = name, 1
        while unique in seen:
            k += 1
            unique = f"{name}_{k}"
        seen.add(unique)
        out.append(unique)
    return out
