"""Middlebury 2014 / MiddEval3 and ETH3D two-view layouts: one folder per scene.

- Middlebury: ``<scene>/{im0.png, im1.png, calib.txt}`` with ground truth ``disp0GT.pfm``
  (MiddEval3) or ``disp0.pfm`` (2014 scenes), and ``mask0nocc.png`` (255 = non-occluded) where
  distributed. The root is a folder of scenes (e.g. ``MiddEval3/trainingQ``) or one scene.
- ETH3D two-view: ``two_view_training/<scene>/{im0.png, im1.png, calib.txt}`` (grayscale images)
  and ``two_view_training_gt/<scene>/{disp0GT.pfm, mask0nocc.png}``.

PFM ground truth: ``inf`` (any non-finite value) = unknown. ``calib.txt``: see calibration.py.
"""

from __future__ import annotations

from pathlib import Path

from stereoq.data.layouts import Entry, Layout, no_layout, register

GT_NAMES = ("disp0GT.pfm", "disp0.pfm")


def _scenes(root: Path) -> list[Path]:
    if (root / "im0.png").is_file():
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "im0.png").is_file())


def find_middlebury(root: Path) -> list[Entry]:
    title = "Middlebury"
    expected = "<scene>/{im0.png, im1.png, disp0GT.pfm or disp0.pfm}, optional mask0nocc.png, " \
               "calib.txt"
    scenes = _scenes(root)
    if not scenes:
        sub = sorted(p.name for p in root.glob("training[FHQ]") if p.is_dir())
        hint = f" (pick one of {', '.join(sub)} as the root)" if sub else ""
        raise no_layout(title, root, expected, f"a scene folder with im0.png{hint}")
    entries = []
    for scene in scenes:
        gt = next((scene / n for n in GT_NAMES if (scene / n).is_file()), None)
        missing = [n for n in ("im1.png",) if not (scene / n).is_file()]
        if gt is None:
            missing.append("disp0GT.pfm or disp0.pfm")
        if missing:
            raise no_layout(title, root, expected, ", ".join(f"{scene.name}/{m}" for m in missing))
        entries.append(_entry(scene, scene, gt))
    return entries


def find_eth3d(root: Path) -> list[Entry]:
    title = "ETH3D two-view"
    images, gts = root / "two_view_training", root / "two_view_training_gt"
    expected = "two_view_training/<scene>/{im0.png, im1.png, calib.txt} and " \
               "two_view_training_gt/<scene>/{disp0GT.pfm, mask0nocc.png}"
    absent = [f"{p.name}/" for p in (images, gts) if not p.is_dir()]
    if absent:
        raise no_layout(title, root, expected, ", ".join(absent))
    scenes = _scenes(images) if images.is_dir() else []
    if not scenes or scenes == [images]:
        raise no_layout(title, root, expected, "two_view_training/<scene>/im0.png")
    entries = []
    for scene in scenes:
        gt = gts / scene.name / "disp0GT.pfm"
        missing = [f"two_view_training/{scene.name}/im1.png"] if not (
            scene / "im1.png").is_file() else []
        if not gt.is_file():
            missing.append(f"two_view_training_gt/{scene.name}/disp0GT.pfm")
        if missing:
            raise no_layout(title, root, expected, ", ".join(missing))
        entries.append(_entry(scene, gts / scene.name, gt))
    return entries


def _entry(scene: Path, gt_dir: Path, gt: Path) -> Entry:
    mask, calib = gt_dir / "mask0nocc.png", scene / "calib.txt"
    return Entry(name=scene.name, left=scene / "im0.png", right=scene / "im1.png", disp=gt,
                 noc=mask if mask.is_file() else None, noc_kind="mask",
                 calib=calib if calib.is_file() else None)


MIDDLEBURY = register(
    Layout("middlebury", "Middlebury", find_middlebury, ("bad-2.0", "avgerr"))
)
ETH3D = register(Layout("eth3d", "ETH3D two-view", find_eth3d, ("bad-1.0", "avgerr")))
