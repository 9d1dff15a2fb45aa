"""Real pictures: `stereoq infer` on Middlebury 2014 "motorcycle" against OpenCV SGBM.

scikit-image ships the pair with ground-truth disparity (``skimage.data.stereo_motorcycle()``,
the Middlebury images downsampled 4x to 741x500; the ground truth and calibration below are for
that size). Install it with ``pip install 'stereoq[examples]'``.

    python examples/motorcycle.py                       # float model of the default config
    python examples/motorcycle.py --config stereonet_sceneflow --stage int_infer
    python examples/motorcycle.py --stage adapt --set stages.adapt.pairs=moto/   # see README
    python examples/motorcycle.py --weights light-scenes   # a shipped model, no run needed

Runs the chosen stage through the same code as ``stereoq infer`` (all its outputs land in
``OUT/infer/``; its photometric refinement on unless ``--no-refine``), the same network without
the refinement, and ``stereoq.baselines.sgbm`` on the same pair, and scores each against the
ground truth over valid pixels (finite and 0 < gt < maxdisp): EPE (mean absolute error, px) and
bad-2 (% of pixels with error > 2 px). SGBM's holes are filled from the left neighbour (see
``stereoq.baselines.sgbm``) so both methods are scored on every valid pixel. Both are also
scored by region (``stereoq.engine.regions``): the pixels the right camera cannot see
(occluded), and the visible ones near depth edges and elsewhere. Writes
``OUT/motorcycle.json`` and ``OUT/comparison.png``.

If the ground truth's largest disparity does not fit the model's ``maxdisp``, the pair, the
ground truth (values and size) and the focal length are downscaled by the same factor, and the
figures say so. At 741x500 the ground truth reaches 60 px, inside maxdisp 96 and 192: no
downscaling for the shipped configs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch

from stereoq import weights
from stereoq.baselines.sgbm import SgbmParams, sgbm_disparity
from stereoq.cli.common import resolve_config
from stereoq.cli.output import print_table, write_json
from stereoq.data.images import write_png
from stereoq.data.pairs import Pair
from stereoq.data.pfm import read_pfm
from stereoq.engine.metrics import DisparityMetrics
from stereoq.engine.regions import NOTE as REGIONS_NOTE
from stereoq.engine.regions import region_rows, region_scores
from stereoq.errors import StereoqError
from stereoq.infer import colormap, overview
from stereoq.infer.run import Camera, DisparityEstimator, InferSettings, run_pairs
from stereoq.settings import ExperimentConfig, load_config

# Calibration of the 4x-downsampled pair, from scikit-image's documentation of the data set.
FOCAL_PX = 994.978
CX_PX, CY_PX = 311.193, 254.877
BASELINE_M = 0.193001
# Middlebury's principal points differ by doffs px between the views: metric depth there is
# f * B / (d + doffs), passed to `stereoq infer` as --doffs (scaled with the image).
DOFFS_PX = 31.086
ERROR_CLIP_PX = 10.0


def load_motorcycle() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        from skimage.data import stereo_motorcycle
    except ImportError:
        raise StereoqError(
            "this example needs scikit-image: pip install 'stereoq[examples]'"
        ) from None
    left, right, gt = stereo_motorcycle()
    return left, right, gt.astype(np.float32)


def fit_to_maxdisp(
    left: np.ndarray, right: np.ndarray, gt: np.ndarray, maxdisp: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Downscale pair and ground truth when the ground truth exceeds 95 % of ``maxdisp``."""
    gt_max = float(gt[np.isfinite(gt)].max())
    scale = min(1.0, 0.95 * maxdisp / gt_max)
    if scale == 1.0:
        return left, right, gt, scale
    height, width = gt.shape
    size = (round(width * scale), round(height * scale))
    small = [cv2.resize(img, size, interpolation=cv2.INTER_AREA) for img in (left, right)]
    # Nearest keeps invalid (inf) pixels invalid instead of smearing them into their neighbours.
    gt_small = cv2.resize(gt, size, interpolation=cv2.INTER_NEAREST) * np.float32(size[0] / width)
    return small[0], small[1], gt_small, scale


def score(pred: np.ndarray, gt: np.ndarray, maxdisp: int) -> dict[str, float]:
    metrics = DisparityMetrics(maxdisp)
    metrics.update(torch.from_numpy(pred)[None, None], torch.from_numpy(gt)[None, None])
    result = metrics.compute()
    return {k: result[k] for k in ("epe", "bad1", "bad2", "bad3", "d1", "pixels")}


def comparison_picture(
    left: np.ndarray,
    gt: np.ndarray,
    methods: list[tuple[str, np.ndarray, dict[str, float]]],
) -> np.ndarray:
    """A grid: left image and ground truth in the first column, then per method its disparity
    (same colour range as the ground truth) above its error map."""
    gt_ok = np.isfinite(gt)
    lo, hi = 0.0, float(gt[gt_ok].max())

    def disp_pic(d: np.ndarray, ok: np.ndarray) -> np.ndarray:
        return colormap.with_legend(colormap.colorize(d, ok, lo, hi), lo, hi, "px")

    columns = [[("left image", left), ("ground truth disparity", disp_pic(gt, gt_ok))]]
    for name, pred, m in methods:
        err = np.abs(pred - np.where(gt_ok, gt, 0))
        err_pic = colormap.with_legend(
            colormap.colorize(err, gt_ok, 0.0, ERROR_CLIP_PX), 0.0, ERROR_CLIP_PX, "px",
            clipped_top=True,
        )
        columns.append([
            (f"{name}: EPE {m['epe']:.2f} px, bad-2 {m['bad2']:.1f} %",
             disp_pic(pred, np.isfinite(pred))),
            (f"{name}: |error| (black: no ground truth)", err_pic),
        ])
    for column in columns:  # pad each column to one width so the rows line up
        width = max(p.shape[1] for _, p in column)
        column[:] = [(t, np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)),
                                constant_values=255)) for t, p in column]
    footer = ("Middlebury 2014 motorcycle (741x500, from scikit-image); every disparity panel "
              "uses the ground truth's colour range")
    rows = [overview.compose([col[0] for col in columns]),
            overview.compose([col[1] for col in columns], footer=footer)]
    return np.concatenate(rows, axis=0)


class Comparison(NamedTuple):
    """One model's run on the pair, SGBM's beside it, scored."""

    left: np.ndarray
    gt: np.ndarray
    scale: float
    maxdisp: int
    disparities: dict[str, np.ndarray]
    """Per method (the network alone, refined as ``stereoq infer`` writes it, SGBM), px."""
    results: dict[str, dict[str, float]]
    regions: dict[str, dict]
    summary: dict
    """``stereoq infer``'s summary of its run."""
    sgbm: SgbmParams


def compare(cfg: ExperimentConfig, out: Path, stage: str = "float", checkpoint: Path | None = None,
            weights_name: str | None = None, refine: bool = True) -> Comparison:
    """Run ``stereoq infer`` (stage, checkpoint or shipped weights) on the pair into
    ``out/infer``, the network alone beside it when ``refine``, and SGBM; score each."""
    maxdisp = cfg.model.maxdisp
    left, right, gt, scale = fit_to_maxdisp(*load_motorcycle(), maxdisp)
    inputs = out / "inputs"
    write_png(inputs / "im0.png", left)
    write_png(inputs / "im1.png", right)
    camera = Camera(BASELINE_M, FOCAL_PX * scale, CX_PX * scale, CY_PX * scale, DOFFS_PX * scale)
    settings = InferSettings(stage=stage, ply=True, checkpoint=checkpoint, weights=weights_name,
                             refine=refine)
    summary = run_pairs(cfg, [Pair("motorcycle", inputs / "im0.png", inputs / "im1.png")],
                        camera, out / "infer", settings)
    write_json(out / "infer" / "summary.json", summary)
    model_disp = read_pfm(out / "infer" / "disparity.pfm")

    sgbm_params = SgbmParams.covering(maxdisp)
    model_label = f"stereoq {weights_name or stage}"
    disparities = {model_label: model_disp}
    if refine:  # infer's output is refined: the network's own beside it
        network = DisparityEstimator(cfg, stage, checkpoint, weights=weights_name)
        disparities = {model_label: network(left, right),
                       f"{model_label} + refinement": model_disp}
    disparities["OpenCV SGBM"] = sgbm_disparity(left, right, sgbm_params)
    return Comparison(
        left, gt, scale, maxdisp, disparities,
        results={name: score(d, gt, maxdisp) for name, d in disparities.items()},
        regions={name: region_scores(d, gt, maxdisp) for name, d in disparities.items()},
        summary=summary, sgbm=sgbm_params,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", "-c", default=None, help="config file or shipped name")
    parser.add_argument("--stage", default="float", help="float | adapt | calibration | qat | "
                        "int_infer | deployed")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="float checkpoint (default: <run_dir>/float/best.pt)")
    parser.add_argument("--weights", default=None,
                        help="a shipped model (stereoq.weights) instead of a stage's")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: <run_dir>/examples/motorcycle)")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="KEY.PATH=VALUE config override (as stereoq's --set)")
    parser.add_argument("--no-refine", dest="refine", action="store_false",
                        help="infer without its photometric refinement (one stereoq row)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(resolve_config(args.config), sets=args.sets)
        if args.weights is not None:
            if args.stage != "float" or args.checkpoint is not None:
                raise StereoqError("--weights runs a shipped model: no --stage or --checkpoint",
                                   exit_code=2)
            cfg = weights.configure(cfg, args.weights)  # its maxdisp decides the downscale
        out = args.out or cfg.run_dir / "examples" / "motorcycle"
        run = compare(cfg, out, args.stage, args.checkpoint, args.weights, args.refine)
    except StereoqError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code

    gt, results, regions = run.gt, run.results, run.regions
    picture = comparison_picture(
        run.left, gt, [(name, d, results[name]) for name, d in run.disparities.items()]
    )
    write_png(out / "comparison.png", picture)
    report = {
        "pair": "Middlebury 2014 motorcycle via skimage.data.stereo_motorcycle (741x500)",
        "config": cfg.name,
        "stage": None if args.weights else args.stage,
        "weights": args.weights,
        "refine": run.summary["refine"],
        "artifact": run.summary["artifact"],
        "downscale": run.scale,
        "size": list(gt.shape),
        "maxdisp_px": run.maxdisp,
        "gt_max_px": float(gt[np.isfinite(gt)].max()),
        "valid_pixels": "finite ground truth with 0 < gt < maxdisp",
        "sgbm": {"num_disparities": run.sgbm.num_disparities,
                 "block_size": run.sgbm.block_size, "holes": "filled from the left"},
        "inference_s": run.summary["pairs"][0]["timings_s"]["inference"],
        "metrics": results,
        "regions": regions,
        "regions_note": REGIONS_NOTE,
        "doffs_px": DOFFS_PX * run.scale,
    }
    write_json(out / "motorcycle.json", report)
    print_table(
        f"motorcycle {gt.shape[1]}x{gt.shape[0]}"
        + (f" (downscaled x{run.scale:.3f})" if run.scale != 1.0 else "")
        + f", {cfg.name}",
        ["method", "EPE px", "bad-1 %", "bad-2 %", "bad-3 %", "D1 %"],
        [(k, v["epe"], v["bad1"], v["bad2"], v["bad3"], v["d1"]) for k, v in results.items()],
    )
    print_table(
        "by region (occluded: the right camera cannot see them), EPE px / bad-2 %",
        ["region", "share %", *regions],
        region_rows(regions),
    )
    print(f"saved {out}/motorcycle.json, {out}/comparison.png and {out}/infer/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
