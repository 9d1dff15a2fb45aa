"""KITTI stereo layouts (training pairs with ground truth).

- KITTI 2015 (``data_scene_flow``): ``training/image_2/NNNNNN_10.png`` (left),
  ``training/image_3/`` (right), ``training/disp_occ_0/`` (all pixels) and
  ``training/disp_noc_0/`` (non-occluded) ground truth; calibration, when unpacked beside it,
  ``training/calib_cam_to_cam/NNNNNN.txt``.
- KITTI 2012 (``data_stereo_flow``): ``colored_0/``, ``colored_1/``, ``disp_occ/``, ``disp_noc/``
  and ``calib/NNNNNN.txt`` under ``training/``.

Official metrics: KITTI 2015 D1 (error > 3 px and > 5 %); KITTI 2012 Out (error > 3 px, here
bad-3.0) and Avg (avgerr); each over all (occ) and non-occluded (noc) pixels.

Ground truth is a uint16 PNG, disparity = value / 256, 0 = none. Only ``_10`` frames have it.
The root may be the dataset folder or its ``training/`` folder.
"""

from __future__ import annotations

from pathlib import Path

from stereoq.data.layouts import Entry, Layout, no_layout, register


def _find(root: Path, title: str, left: str, right: str, occ: str, noc: str,
          calib: str) -> list[Entry]:
    base = root / "training" if (root / "training").is_dir() else root
    folders = (left, right, occ)
    absent = [name for name in folders if not (base / name).is_dir()]
    expected = f"training/{{{','.join((*folders, noc))}}}/NNNNNN_10.png"
    if absent:
        raise no_layout(title, root, expected, ", ".join(f"training/{n}/" for n in absent))
    names = sorted(p.name for p in (base / left).glob("*_10.png"))
    if not names:
        raise no_layout(title, root, expected, f"training/{left}/*_10.png")
    entries = []
    for name in names:
        missing = [f"training/{d}/{name}" for d in (right, occ) if not (base / d / name).is_file()]
        if missing:
            raise no_layout(title, root, expected, ", ".join(missing))
        stem = name.removesuffix("_10.png")
        calib_path = base / calib / f"{stem}.txt"
        noc_path = base / noc / name
        entries.append(Entry(
            name=f"{Path(left).name}/{stem}", left=base / left / name, right=base / right / name,
            disp=base / occ / name, noc=noc_path if noc_path.is_file() else None,
            noc_kind="disp", calib=calib_path if calib_path.is_file() else None,
        ))
    return entries


def find_2015(root: Path) -> list[Entry]:
    return _find(root, "KITTI 2015", "image_2", "image_3", "disp_occ_0", "disp_noc_0",
                 "calib_cam_to_cam")


def find_2012(root: Path) -> list[Entry]:
    return _find(root, "KITTI 2012", "colored_0", "colored_1", "disp_occ", "disp_noc", "calib")


KITTI_2015 = register(Layout("kitti2015", "KITTI 2015", find_2015, ("D1",)))
KITTI_2012 = register(Layout("kitti2012", "KITTI 2012", find_2012, ("bad-3.0", "avgerr")))
