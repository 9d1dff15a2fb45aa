"""SceneFlow as distributed: list files of ``left right disparity`` paths, PNG frames, PFM maps.

The list files sit at the dataset root (``SceneFlow_finalpass_train.txt``,
``SceneFlow_finalpass_test.txt``); each line names three files relative to the root.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stereoq.data.pfm import decode_pfm
from stereoq.errors import StereoqError

LIST_FILES = {"train": "SceneFlow_finalpass_train.txt", "test": "SceneFlow_finalpass_test.txt"}
_SHOW_MISSING = 3


@dataclass(frozen=True)
class Entry:
    """One list line: paths relative to the dataset root."""

    left: str
    right: str
    disp: str
    line: int

    @property
    def name(self) -> str:
        """A sample's name: its left image path without the suffix."""
        return str(Path(self.left).with_suffix(""))


def list_path(root: Path, split: str, list_file: Path | None = None) -> Path:
    """The list file of ``split`` ("train" or "test"), checking the root and the file exist."""
    root = Path(root)
    if not root.is_dir():
        raise StereoqError(f"SceneFlow root {root}: no such directory")
    path = Path(list_file) if list_file is not None else root / LIST_FILES[split]
    if not path.is_file():
        raise StereoqError(f"SceneFlow list file {path}: no such file")
    return path


def read_list(path: Path) -> list[Entry]:
    """Parse a list file; blank lines and ``#`` comments are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise StereoqError(f"SceneFlow list file {path}: cannot read ({err})") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 3:
            raise StereoqError(
                f"SceneFlow list file {path} line {number}: expected 'left right disparity', "
                f"got {len(fields)} fields"
            )
        entries.append(Entry(fields[0], fields[1], fields[2], number))
    if not entries:
        raise StereoqError(f"SceneFlow list file {path}: no samples listed")
    return entries


def check_files(root: Path, entries: list[Entry], list_file: Path) -> None:
    """Raise one error naming how many lines point at missing files and the first few."""
    missing: list[str] = []
    bad_lines = 0
    for entry in entries:
        absent = [p for p in (entry.left, entry.right, entry.disp) if not (root / p).is_file()]
        if absent:
            bad_lines += 1
            missing.extend(f"{p} (line {entry.line})" for p in absent)
    if bad_lines:
        shown = ", ".join(missing[:_SHOW_MISSING])
        more = f" and {len(missing) - _SHOW_MISSING} more" if len(missing) > _SHOW_MISSING else ""
        raise StereoqError(
            f"SceneFlow list file {list_file}: {bad_lines} of {len(entries)} lines name missing "
            f"files under {root}: {shown}{more}"
        )


def load_entries(root: Path, split: str, list_file: Path | None = None) -> list[Entry]:
    """The checked entries of ``split`` ("train" or "test")."""
    path = list_path(root, split, list_file)
    entries = read_list(path)
    check_files(Path(root), entries, path)
    return entries


def read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise StereoqError(f"{path}: cannot read ({err.strerror or err})") from None


def decode_image(data: bytes, label: str) -> np.ndarray:
    """Encoded image bytes -> uint8 (H, W, 3) RGB (8-bit, alpha dropped, as OpenCV reads it)."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise StereoqError(f"image {label}: cannot decode (not a readable image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def clean_disparity(disp: np.ndarray) -> np.ndarray:
    """float32 (H, W) px with every invalid pixel (inf = unknown, NaN, <= 0) set to 0."""
    disp = np.asarray(disp, np.float32)
    return np.where(np.isfinite(disp) & (disp > 0), disp, np.float32(0.0)).astype(np.float32)


def decode_disparity(data: bytes, label: str) -> np.ndarray:
    """PFM bytes -> cleaned float32 (H, W) disparity (first channel of a ``PF`` file)."""
    disp = decode_pfm(data, label)
    if disp.ndim == 3:
        disp = disp[..., 0]
    return clean_disparity(disp)


def check_sizes(entry: Entry, root: Path, left: np.ndarray, right: np.ndarray,
                disp: np.ndarray) -> None:
    """Left, right and disparity must share one (H, W)."""
    shapes = {"left": left.shape[:2], "right": right.shape[:2], "disparity": disp.shape[:2]}
    if len(set(shapes.values())) > 1:
        sizes = ", ".join(f"{k} {h}x{w}" for k, (h, w) in shapes.items())
        raise StereoqError(
            f"SceneFlow sample {root / entry.left} (list line {entry.line}): sizes differ ({sizes})"
        )


def load_sample(root: Path, entry: Entry) -> dict:
    """The sample dict of one entry: uint8 RGB images, float32 (H, W) disparity, name."""
    root = Path(root)
    left = decode_image(read_bytes(root / entry.left), str(root / entry.left))
    right = decode_image(read_bytes(root / entry.right), str(root / entry.right))
    disp = decode_disparity(read_bytes(root / entry.disp), str(root / entry.disp))
    check_sizes(entry, root, left, right, disp)
    return {"left": left, "right": right, "disp": disp, "name": entry.name}


def layout_paths(split: str, index: int) -> tuple[str, str, str]:
    """Left, right and disparity paths of sample ``index`` in the distributed layout, cycling
    through its three datasets (Driving, FlyingThings3D, Monkaa; test: FlyingThings3D TEST)."""
    if split == "test":
        scene = f"FlyingThings3D/{{kind}}/TEST/A/{index // 10:04d}/{{view}}/{index % 10 + 6:04d}"
    elif index % 3 == 0:
        scene = f"Driving/{{kind}}/35mm_focallength/scene_forwards/fast/{{view}}/{index + 1:04d}"
    elif index % 3 == 1:
        scene = f"FlyingThings3D/{{kind}}/TRAIN/A/{index // 10:04d}/{{view}}/{index % 10 + 6:04d}"
    else:
        scene = f"Monkaa/{{kind}}/a_rain_of_stones_x2/{{view}}/{index:04d}"
    return (
        scene.format(kind="frames_finalpass", view="left") + ".png",
        scene.format(kind="frames_finalpass", view="right") + ".png",
        scene.format(kind="disparity", view="left") + ".pfm",
    )


def write_tree(
    root: str | Path, splits: Mapping[str, Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]]
) -> Path:
    """Write (left RGB, right RGB, disparity) samples per split as a SceneFlow tree: PNG frames,
    PFM disparity (alternating little- and big-endian), and each split's list file at the root.
    Returns the root."""
    from stereoq.data.pfm import write_pfm

    root = Path(root)
    for split, samples in splits.items():
        lines = []
        for i, (left, right, disp) in enumerate(samples):
            paths = layout_paths(split, i)
            for rel, img in zip(paths[:2], (left, right), strict=True):
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(root / rel), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
                    raise OSError(f"cannot write {root / rel}")
            write_pfm(root / paths[2], disp, little_endian=i % 2 == 0)
            lines.append(" ".join(paths))
        (root / LIST_FILES[split]).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
