"""What each refinement level buys: a float model's outputs, each upsampled (bilinear) to
full size and scored against the ground truth, on validation scenes and on the Middlebury
motorcycle pair (741x500, when scikit-image is installed).

The first row is the cost-volume estimate (at 1/stride of the neck), the last the final
disparity; a level whose row is no better than the one above it learnt nothing. This is how the
refinement's disparity unit (``model.refinement.disparity_unit_px``, README "The model") was
found and measured.

    python bench/refinement_levels.py                                  # the quick start's run
    python bench/refinement_levels.py --checkpoint runs/x/float/best.pt --frames 16 \\
        --set data.synthetic.kind=scenes --json levels.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from stereoq.cli.common import config_argument
from stereoq.cli.output import print_table, write_json
from stereoq.data.datasets import build_dataset
from stereoq.data.transforms import prepare_pair
from stereoq.engine.metrics import DisparityMetrics
from stereoq.engine.predictor import load_model
from stereoq.errors import StereoqError
from stereoq.models.padding import pad_to, padded_size
from stereoq.settings import load_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))


def level_disparities(model: torch.nn.Module, x: Tensor) -> list[Tensor]:
    """(1, 6, H, W) -> the outputs in px (refine_levels + 1), each upsampled to (1, 1, H, W)."""
    height, width = x.shape[-2:]
    size = padded_size(height, width, model.size_multiple, model.min_size)
    with torch.no_grad():
        raw = model.raw(pad_to(x, *size))
    return [F.interpolate(o, size=size, mode="bilinear", align_corners=False)
            [..., :height, :width] for o in model.postprocess(raw)]


def score(model: torch.nn.Module, pairs: list[tuple[Tensor, Tensor]], maxdisp: float
          ) -> list[dict[str, float]]:
    """Per output level: EPE and bad-k over ``pairs`` of ((1, 6, H, W), (1, 1, H, W) gt)."""
    metrics = [DisparityMetrics(maxdisp) for _ in range(len(model.refinement.levels) + 1)]
    for x, gt in pairs:
        for m, disp in zip(metrics, level_disparities(model, x), strict=True):
            m.update(disp, gt)
    return [m.compute() for m in metrics]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", "-c", default=None, type=config_argument)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="float checkpoint (default: <run_dir>/float/best.pt)")
    parser.add_argument("--frames", type=int, default=16, help="validation scenes to score")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    try:
        cfg = load_config(args.config, sets=args.sets)
        checkpoint = args.checkpoint or cfg.run_dir / "float" / "best.pt"
        model = load_model(cfg.model, checkpoint, "train the float stage first").eval()
        val = build_dataset(cfg.data, "val", crop=False)
    except StereoqError as err:
        raise SystemExit(f"error: {err}") from None
    frames = [val[i] for i in range(min(args.frames, len(val)))]
    sets: dict[str, list[tuple[Tensor, Tensor]]] = {"validation": [
        (torch.cat([s["left"], s["right"]])[None], s["disp"].reshape(1, 1, *s["disp"].shape[-2:]))
        for s in frames
    ]}
    try:
        import motorcycle

        left, right, gt = motorcycle.load_motorcycle()
        x = prepare_pair(left, right, cfg.data)[None]
        sets["motorcycle"] = [(x, torch.from_numpy(gt)[None, None])]
    except StereoqError as err:
        print(f"motorcycle pair skipped: {err}")
    names = [f"1/{cfg.model.size_multiple} (cost volume)"] + [
        f"level {i + 1}" for i in range(cfg.model.refine_levels)]
    results = {key: score(model, pairs, cfg.model.maxdisp) for key, pairs in sets.items()}
    rows = [[name] + [f"{results[k][i]['epe']:.3f} / {results[k][i]['bad2']:.1f}"
                      for k in results] for i, name in enumerate(names)]
    print_table(f"{checkpoint}: EPE px / bad-2 % of each output, upsampled to full size",
                ["output", *results], rows)
    if args.json:
        write_json(args.json, {"checkpoint": str(checkpoint), "frames": len(frames),
                               "outputs": names, "results": results})
        print(f"saved {args.json}")


if __name__ == "__main__":
    main()
