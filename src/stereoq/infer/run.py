"""The core of ``stereoq infer``: load a model once, run pairs, write every output, summarise."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stereoq import staging
from stereoq.data.image_size import header_size
from stereoq.data.images import read_rgb, write_png
from stereoq.data.pairs import Pair
from stereoq.engine.report import Reporter
from stereoq.errors import StereoqError
from stereoq.infer import DEPLOYED, colormap, overview
from stereoq.infer.depth import (
    DEPTH_PNG_MAX_MM,
    MIN_DISPARITY_PX,
    depth_to_mm_uint16,
    disparity_to_depth,
    value_range,
)
from stereoq.infer.pointcloud import depth_to_ply
from stereoq.settings.config import ExperimentConfig
from stereoq.stages import first_stage

MAX_PIXELS = 2048 * 2048
"""Largest input run at full size (about 4.2 MP): above it, refuse unless --max-size is given."""

FLOAT32_MAX = float(np.finfo(np.float32).max)

DEPTH_DISPLAY_PERCENTILE = 98.0
"""Depth pictures colour up to this percentile of the valid depths; farther pixels saturate."""

SUMMARY_FILE = "summary.json"
"""The run's summary in the output folder, written by the caller once every pair is done."""

OUTPUT_FILES = {
    "disparity_pfm": "disparity.pfm",
    "disparity_png": "disparity.png",
    "depth_png": "depth_mm.png",
    "depth_color_png": "depth.png",
    "overview_png": "overview.png",
    "ply": "pointcloud.ply",
}


@dataclass(frozen=True)
class Camera:
    """Rectified pair geometry: baseline in metres; focal length, principal point and the views'
    principal-point offset ``doffs`` in pixels."""

    baseline_m: float
    focal_px: float
    cx_px: float | None = None
    cy_px: float | None = None
    doffs_px: float = 0.0

    def __post_init__(self) -> None:
        values = {"--baseline": self.baseline_m, "--f": self.focal_px, "--cx": self.cx_px,
                  "--cy": self.cy_px, "--doffs": self.doffs_px}
        for option, value in values.items():
            if value is not None and not math.isfinite(value):
                raise StereoqError(f"{option} {value}: not a finite number", exit_code=2)
        if not self.baseline_m > 0:
            raise StereoqError(f"--baseline {self.baseline_m}: must be positive", exit_code=2)
        if not self.focal_px > 0:
            raise StereoqError(f"--f {self.focal_px}: must be positive", exit_code=2)
        # Depth maps are float32: the farthest valid depth, f x baseline / MIN_DISPARITY_PX,
        # must fit, or depth (and summary.json) would hold infinity.
        if not self.focal_px * self.baseline_m / MIN_DISPARITY_PX <= FLOAT32_MAX:
            raise StereoqError(
                f"--baseline {self.baseline_m:g} x --f {self.focal_px:g}: depths overflow "
                "(give the baseline in metres and f in pixels)",
                exit_code=2,
            )
        for option, value in values.items():
            if value is not None and abs(value) > FLOAT32_MAX:
                raise StereoqError(f"{option} {value:g}: out of range", exit_code=2)


@dataclass(frozen=True)
class InferSettings:
    """What to run and write: stage, size limit (longest side, px), point cloud and its format."""

    stage: str = field(default_factory=first_stage)
    max_size: int | None = None
    ply: bool = False
    ply_ascii: bool = False
    min_disparity_px: float = MIN_DISPARITY_PX
    checkpoint: Path | None = None
    backend: str = "ort"
    """Whose artifact the ``deployed`` stage runs."""
    weights: str | None = None
    """A shipped model (``stereoq.weights``) to run instead of the stage's."""
    refine: bool = True
    """Refine the network's disparity photometrically (``stereoq.infer.refine``)."""

    @property
    def model_label(self) -> str:
        """The model in one phrase, for pictures and tables."""
        model = f"shipped model {self.weights}" if self.weights else f"stage {self.stage}"
        return model + (" + photometric refinement" if self.refine else "")


class DisparityEstimator:
    """A stage's model (or a shipped one: ``weights``) loaded once; maps an RGB uint8 pair of
    any size to disparity in px. A shipped model brings its model section and input
    normalisation into ``cfg`` (``stereoq.weights.configure``). With ``refine``, the model's
    disparity is refined photometrically (``stereoq.infer.refine``, config section ``refine``)."""

    def __init__(
        self, cfg: ExperimentConfig, stage: str, checkpoint: Path | None = None,
        backend: str = "ort", weights: str | None = None, refine: bool = False,
    ) -> None:
        start = time.perf_counter()
        if weights is not None:
            from stereoq import weights as shipped

            cfg = shipped.configure(cfg, weights)
            self.model, self.artifact = shipped.eval_model(weights), shipped.model_file(weights)
        else:
            self.model, self.artifact = _load(cfg, stage, checkpoint, backend)
        self.load_s = time.perf_counter() - start
        self.cfg = cfg
        self.stage = stage
        self.refine = refine

    def __call__(self, left_rgb: np.ndarray, right_rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB pair -> (H, W) float32 disparity of the left view in px."""
        import torch

        from stereoq.data.transforms import prepare_pair
        from stereoq.infer.refine import refine

        x = prepare_pair(left_rgb, right_rgb, self.cfg.data)[None]
        with torch.inference_mode():
            disp = self.model(x)
            if self.refine:
                disp = refine(x, disp, self.cfg.data, self.cfg.refine)
        return disp[0, 0].float().numpy()


def _load(
    cfg: ExperimentConfig, stage: str, checkpoint: Path | None, backend: str
) -> tuple[Any, Path]:
    """The stage's predictor (or the deployed artifact's) and the file it came from."""
    if stage == DEPLOYED:
        from stereoq.infer.deployed import load_deployed

        return load_deployed(cfg, backend)
    from stereoq.stages import get_stage

    found = get_stage(cfg, stage)
    return found.predictor(checkpoint), found.artifact(checkpoint)


def estimate(
    estimator: Callable[[np.ndarray, np.ndarray], np.ndarray],
    left_rgb: np.ndarray,
    right_rgb: np.ndarray,
    max_size: int | None = None,
    label: str = "input",
) -> tuple[np.ndarray, float]:
    """Disparity (H, W) px at the input's size, and the scale the model ran at (1.0 = full).

    Inputs with a longest side above ``max_size`` run downscaled (area filter); the disparity is
    upsampled back and divided by the scale so it stays in full-resolution pixels. Without
    ``max_size``, inputs above ``MAX_PIXELS`` are refused.
    """
    height, width = left_rgb.shape[:2]
    scale = 1.0
    if max_size is not None and max(height, width) > max_size:
        scale = max_size / max(height, width)
    elif max_size is None:
        check_full_size(width, height, label)
    if scale == 1.0:
        return estimator(left_rgb, right_rgb), scale
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small_l = cv2.resize(left_rgb, size, interpolation=cv2.INTER_AREA)
    small_r = cv2.resize(right_rgb, size, interpolation=cv2.INTER_AREA)
    disp_small = estimator(small_l, small_r)
    disp = cv2.resize(disp_small, (width, height), interpolation=cv2.INTER_LINEAR)
    return disp * np.float32(width / size[0]), scale


def check_full_size(width: int, height: int, label: str) -> None:
    """Refuse an input above ``MAX_PIXELS`` (run without --max-size) with the way out."""
    if height * width > MAX_PIXELS:
        raise StereoqError(
            f"{label}: {width}x{height} ({height * width / 1e6:.1f} MP) is above the "
            f"{MAX_PIXELS / 1e6:.1f} MP full-size limit; pass --max-size N to run downscaled to a "
            "longest side of N px (disparity is rescaled to full resolution)"
        )


def check_headers(pair: Pair, max_size: int | None) -> bool:
    """Check the pair from its file headers (no decode: a huge picture takes seconds and
    gigabytes to decode first): size limit of each, one size; -> whether both were read."""
    sizes = [header_size(path) for path in (pair.left, pair.right)]
    if max_size is None:
        for path, size in zip((pair.left, pair.right), sizes, strict=True):
            if size is not None:
                check_full_size(*size, label=f"image {path}")
    if None in sizes:
        return False
    if sizes[0] != sizes[1]:
        (wl, hl), (wr, hr) = sizes
        _size_mismatch(pair, wl, hl, wr, hr)
    return True


def check_pair(pair: Pair, max_size: int | None) -> None:
    """Raise what ``infer_pair`` would before writing: unreadable, mismatched or too large.

    Sizes come from the file headers where they can (no decode); other files are decoded.
    """
    if check_headers(pair, max_size):
        return
    left, right = read_rgb(pair.left), read_rgb(pair.right)
    _check_same_size(pair, left, right)
    if max_size is None:
        check_full_size(left.shape[1], left.shape[0], label=f"image {pair.left}")


def _check_same_size(pair: Pair, left: np.ndarray, right: np.ndarray) -> None:
    if left.shape != right.shape:
        _size_mismatch(pair, left.shape[1], left.shape[0], right.shape[1], right.shape[0])


def _size_mismatch(pair: Pair, wl: int, hl: int, wr: int, hr: int) -> None:
    raise StereoqError(
        f"pair {pair.name}: left {pair.left} is {wl}x{hl} but right {pair.right} is "
        f"{wr}x{hr}; a rectified pair has one size"
    )


def infer_pair(
    estimator: DisparityEstimator,
    pair: Pair,
    camera: Camera,
    out_dir: Path,
    settings: InferSettings,
) -> dict[str, Any]:
    """Run one pair and write its outputs into ``out_dir``; -> the pair's summary."""
    t0 = time.perf_counter()
    check_headers(pair, settings.max_size)
    left, right = read_rgb(pair.left), read_rgb(pair.right)
    _check_same_size(pair, left, right)
    t1 = time.perf_counter()
    disp, scale = estimate(estimator, left, right, settings.max_size, label=f"image {pair.left}")
    t2 = time.perf_counter()
    depth_m, valid = disparity_to_depth(
        disp, camera.baseline_m, camera.focal_px, settings.min_disparity_px, camera.doffs_px
    )
    outputs = write_outputs(out_dir, left, disp, depth_m, valid, camera, settings)
    t3 = time.perf_counter()
    return {
        "name": pair.name,
        "left": str(pair.left),
        "right": str(pair.right),
        "height": int(left.shape[0]),
        "width": int(left.shape[1]),
        "model_scale": scale,
        "timings_s": {"read": t1 - t0, "inference": t2 - t1, "write": t3 - t2},
        "disparity_px": value_range(disp, valid),
        "depth_m": value_range(depth_m, valid),
        "valid_depth_fraction": float(valid.mean()),
        "outputs": {k: str(v) for k, v in outputs.items()},
    }


def _infer_into_folder(
    estimator: DisparityEstimator, pair: Pair, camera: Camera, target: Path,
    settings: InferSettings,
) -> dict[str, Any]:
    """``infer_pair`` into a staging folder swapped in as ``target`` once complete."""
    staged = staging.new_dir(target)
    try:
        result = infer_pair(estimator, pair, camera, staged, settings)
        staging.swap_dir(staged, target)
    except BaseException:
        staging.discard(staged)
        raise
    result["outputs"] = {k: str(target / Path(v).name) for k, v in result["outputs"].items()}
    return result


def _naming(pair: Pair, err: StereoqError) -> str:
    message = str(err)
    return message if message.startswith(f"pair {pair.name}:") else f"pair {pair.name}: {message}"


def _part_way(err: StereoqError, pair: Pair, done: int, total: int) -> StereoqError:
    """A pair's error, saying what the folder holds when it is one of several."""
    if total == 1:
        return err
    return StereoqError(
        f"{_naming(pair, err)}; {done} of {total} pair folders written (each complete), no "
        f"{SUMMARY_FILE}",
        err.exit_code,
    )


def write_outputs(
    out_dir: Path,
    left_rgb: np.ndarray,
    disp_px: np.ndarray,
    depth_m: np.ndarray,
    valid: np.ndarray,
    camera: Camera,
    settings: InferSettings,
) -> dict[str, Path]:
    """Write disparity (PFM, colour PNG), depth (uint16 mm PNG, colour PNG), overview, PLY."""
    from stereoq.data.pfm import write_pfm

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {key: out_dir / name for key, name in OUTPUT_FILES.items()}
    if not settings.ply:
        del paths["ply"]
    write_pfm(paths["disparity_pfm"], disp_px.astype(np.float32))

    disp_ok = np.isfinite(disp_px)
    d_lo, d_hi, _ = colormap.display_range(disp_px, disp_ok)
    disp_pic = colormap.with_legend(
        colormap.colorize(disp_px, disp_ok, d_lo, d_hi), d_lo, d_hi, "px"
    )
    write_png(paths["disparity_png"], disp_pic)

    write_png(paths["depth_png"], depth_to_mm_uint16(depth_m, valid))
    z_lo, z_hi, clipped = colormap.display_range(depth_m, valid, DEPTH_DISPLAY_PERCENTILE)
    # Reversed JET: near is red in both the disparity and the depth picture.
    depth_pic = colormap.with_legend(
        colormap.colorize(depth_m, valid, z_lo, z_hi, reverse=True),
        z_lo, z_hi, "m", reverse=True, clipped_top=clipped,
    )
    write_png(paths["depth_color_png"], depth_pic)

    footer = (
        f"{settings.model_label} | baseline {camera.baseline_m:g} m | f {camera.focal_px:g} px | "
        + ("depth = f * baseline / disparity" if not camera.doffs_px else
           f"depth = f * baseline / (disparity + {camera.doffs_px:g})")
        + f" | black: invalid (disparity <= "
        f"{settings.min_disparity_px:g} px)"
    )
    picture = overview.compose(
        [("left image", left_rgb), ("disparity (px)", disp_pic), ("depth (m)", depth_pic)],
        footer=footer,
    )
    write_png(paths["overview_png"], picture)
    if "ply" in paths:
        depth_to_ply(
            paths["ply"], depth_m, valid, left_rgb, camera.focal_px, camera.cx_px, camera.cy_px,
            binary=not settings.ply_ascii,
        )
    return paths


def run_pairs(
    cfg: ExperimentConfig,
    pairs: list[Pair],
    camera: Camera,
    out_dir: Path,
    settings: InferSettings,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Load the stage's model once, run every pair, write its outputs; -> the run summary.

    One pair writes into ``out_dir``; several write into ``out_dir/<pair name>/`` and report
    progress through ``reporter``. Several pairs are all checked (readable, one size, size
    limit) before anything is written, and each pair's folder is built beside it and swapped in
    whole, so a failure or a kill part-way leaves every pair folder complete, old or new. The
    previous run's ``SUMMARY_FILE`` is removed before the first write: until the caller writes
    the new one, none claims to describe a half-updated folder.
    """
    reporter = reporter or Reporter()
    if out_dir.exists() and not out_dir.is_dir():
        raise StereoqError(f"--save-path {out_dir}: exists and is not a folder", exit_code=2)
    several = len(pairs) > 1
    for pair in pairs if several else []:
        try:
            check_pair(pair, settings.max_size)
        except StereoqError as err:
            raise StereoqError(f"{_naming(pair, err)}; nothing written", err.exit_code) from None
    estimator = DisparityEstimator(cfg, settings.stage, settings.checkpoint, settings.backend,
                                   settings.weights, settings.refine)
    results: list[dict[str, Any]] = []
    if several:
        reporter.task(f"infer ({settings.weights or settings.stage})", total=len(pairs))
    try:
        for pair in pairs:
            target = out_dir / pair.name if several else out_dir
            try:
                if not results and out_dir.is_dir():
                    (out_dir / SUMMARY_FILE).unlink(missing_ok=True)
                if several:
                    results.append(_infer_into_folder(estimator, pair, camera, target, settings))
                else:
                    results.append(infer_pair(estimator, pair, camera, target, settings))
            except OSError as err:  # full disk, no permission: the user's to fix, not a bug
                where = target if several else err.filename or target
                failed = StereoqError(f"cannot write {where}: {err.strerror or err}")
                raise _part_way(failed, pair, len(results), len(pairs)) from None
            except StereoqError as err:
                raise _part_way(err, pair, len(results), len(pairs)) from None
            reporter.advance()
    finally:
        reporter.done()
    times = [r["timings_s"]["inference"] for r in results]
    return {
        "config": cfg.name,
        "stage": settings.stage,
        "weights": settings.weights,
        "artifact": str(estimator.artifact),
        "maxdisp_px": estimator.cfg.model.maxdisp,
        "camera": {
            "baseline_m": camera.baseline_m,
            "focal_px": camera.focal_px,
            "cx_px": camera.cx_px,
            "cy_px": camera.cy_px,
            "doffs_px": camera.doffs_px,
            "principal_point": "given" if camera.cx_px is not None else "image centre",
        },
        "depth_units": "metres (baseline in m, focal length in px)",
        "depth_png": f"uint16 millimetres, 0 = invalid, clipped at {DEPTH_PNG_MAX_MM} mm",
        "min_disparity_px": settings.min_disparity_px,
        "max_size": settings.max_size,
        "refine": estimator.cfg.refine.model_dump() if settings.refine else None,
        "timings_s": {
            "load": estimator.load_s,
            "inference_mean": float(np.mean(times)) if times else None,
        },
        "pairs": results,
    }
