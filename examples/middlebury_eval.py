"""A benchmark evaluation on real pictures: the motorcycle pair in the Middlebury 2014 layout.

Writes scikit-image's Middlebury 2014 "motorcycle" pair (``skimage.data.stereo_motorcycle()``,
741x500; see examples/motorcycle.py) as one Middlebury 2014 scene folder, then evaluates it the
way ``stereoq predict --stage all --baseline sgbm --set data.source=middlebury --set
data.root=OUT`` does: every stage that has a model, one row each, and OpenCV SGBM, with EPE / D1 /
bad-k and Middlebury's own bad-2.0 and avgerr. Stages without a model are named and skipped; with
no model at all the SGBM row is still shown. Install scikit-image with
``pip install 'stereoq[examples]'``.

    python examples/middlebury_eval.py                          # default config, OUT = ./middlebury
    python examples/middlebury_eval.py -c stereonet_sceneflow --out /tmp/mb

``OUT/motorcycle/`` holds what the 2014 scenes hold:

- ``im0.png``, ``im1.png``: the rectified pair;
- ``disp0.pfm``: left ground truth in px, ``inf`` where unknown (little-endian ``Pf``, scale -1,
  rows bottom to top);
- ``calib.txt``: ``cam0``/``cam1`` (f, cx, cy; cx1 = cx0 + doffs), ``doffs``, ``baseline`` (mm),
  ``width``, ``height``, ``ndisp``, ``isint``, ``vmin``, ``vmax``, with scikit-image's
  calibration of the 4x-downsampled pair. scikit-image does not ship the scene's own ``ndisp`` /
  ``vmin`` / ``vmax``; they are taken from the ground truth here (``vmin``/``vmax`` its floor and
  ceiling, ``ndisp`` = ``vmax`` + 1 levels, so SGBM's range covers it).

No ``mask0nocc.png``: the 2014 scene folders do not have one (MiddEval3 does), and an honest
occlusion mask needs the right view's ground truth (``disp1.pfm``), which scikit-image does not
ship. Without a mask every pixel with ground truth counts as non-occluded, so the ``-noc`` figures
equal the ``-all`` ones.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from stereoq.atomic import atomic_write_text
from stereoq.data.images import write_png
from stereoq.data.pfm import write_pfm
from stereoq.errors import StereoqError

# examples/motorcycle.py holds the pair's loader and its calibration; run as a script, this
# folder is on sys.path.
from motorcycle import BASELINE_M, CX_PX, CY_PX, DOFFS_PX, FOCAL_PX, load_motorcycle  # isort: skip

SCENE = "motorcycle"


def calib_text(width: int, height: int, gt: np.ndarray) -> str:
    """A Middlebury 2014 ``calib.txt`` for the downsampled pair (baseline in millimetres)."""
    finite = gt[np.isfinite(gt)]
    vmin, vmax = math.floor(float(finite.min())), math.ceil(float(finite.max()))
    cx1 = CX_PX + DOFFS_PX  # doffs = cx1 - cx0

    def cam(cx: float) -> str:
        return f"[{FOCAL_PX:.3f} 0 {cx:.3f}; 0 {FOCAL_PX:.3f} {CY_PX:.3f}; 0 0 1]"

    lines = [
        f"cam0={cam(CX_PX)}",
        f"cam1={cam(cx1)}",
        f"doffs={DOFFS_PX:.3f}",
        f"baseline={BASELINE_M * 1000.0:.3f}",
        f"width={width}",
        f"height={height}",
        f"ndisp={vmax + 1}",
        "isint=0",
        f"vmin={vmin}",
        f"vmax={vmax}",
    ]
    return "\n".join(lines) + "\n"


def write_scene(root: Path) -> Path:
    """The motorcycle pair as ``root/motorcycle/`` in the Middlebury 2014 layout -> the scene."""
    left, right, gt = load_motorcycle()
    scene = Path(root) / SCENE
    write_png(scene / "im0.png", left)
    write_png(scene / "im1.png", right)
    # scikit-image marks unknown disparities with inf already; any other non-finite value too.
    write_pfm(scene / "disp0.pfm", np.where(np.isfinite(gt), gt, np.inf).astype(np.float32))
    height, width = gt.shape
    atomic_write_text(scene / "calib.txt", calib_text(width, height, gt))
    return scene


def evaluate(root: Path, config: str | None, sets: list[str], json_path: Path) -> int:
    """``stereoq predict --stage all --baseline sgbm`` on ``root``, through the functions the
    command calls, except that no trained model still prints the SGBM row."""
    from stereoq.cli.common import resolve_config
    from stereoq.cli.output import console, write_json
    from stereoq.cli.predict import PredictOptions, evaluate_all, print_results, results_json
    from stereoq.cli.progress import RichReporter
    from stereoq.engine.evaluate import evaluate_sgbm
    from stereoq.settings import load_config

    sets = ["data.source=middlebury", f"data.root={root}", *sets]
    cfg = load_config(resolve_config(config), sets=sets)
    console.print(
        "stereoq predict --stage all --baseline sgbm "
        + (f"--config {config} " if config else "")
        + " ".join(f"--set {s}" for s in sets),
        highlight=False,
    )
    reporter = RichReporter()
    opts = PredictOptions(stage="all", config=config, sets=sets, baseline="sgbm")
    try:
        results = evaluate_all(cfg, opts, reporter)
    except StereoqError as err:
        console.print(f"no model rows: {err}", highlight=False)
        results = {}
    results["sgbm"] = evaluate_sgbm(cfg, reporter)
    print_results(cfg.name, results)
    path = write_json(json_path, results_json(cfg, results))
    console.print(f"saved {path}", highlight=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", "-c", default=None, help="config file or shipped name")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="config override KEY.PATH=VALUE, as in stereoq (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("middlebury"),
                        help="the Middlebury root to write (default: ./middlebury)")
    parser.add_argument("--write-only", action="store_true",
                        help="write the scene folder and stop")
    args = parser.parse_args(argv)
    try:
        scene = write_scene(args.out)
        print(f"wrote {scene}/: im0.png, im1.png, disp0.pfm, calib.txt")
        if args.write_only:
            return 0
        return evaluate(args.out, args.config, args.sets, args.out / "predict.json")
    except StereoqError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
