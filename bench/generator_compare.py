"""What the generated data buys: the quick start's model and budget trained on each synthetic
generator (``data.synthetic.kind``), scored on both generators' validation scenes and on the real
Middlebury motorcycle pair (741x500, full size, against its ground truth), next to OpenCV SGBM.

    OMP_WAIT_POLICY=PASSIVE python bench/generator_compare.py --out /work/gen14_results
    python bench/generator_compare.py --out DIR --skip-train     # score existing runs
    python bench/generator_compare.py --out DIR --set stages.float.epochs=7   # a reduced budget

Runs go to ``OUT/runs/<kind>/`` (config ``stereonet_synthetic``, ``name=<kind>``, scenes rendered
on the fly); a run whose ``float/best.pt`` exists is not retrained. Per-image EPE averaging on
the validation scenes (as ``stereoq predict``: the network alone). On the motorcycle each model
is scored twice, by examples/motorcycle.py: the network alone, and refined as ``stereoq infer``
writes it (its photometric refinement, the same for both models). Writes
``OUT/generator_compare.json``, ``OUT/motorcycle_<kind>/`` (each model's `stereoq infer`
outputs) and ``OUT/motorcycle_errors.png`` (ground truth, both models in both forms and SGBM,
disparity above |error|).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from stereoq.cli.output import print_table, write_json
from stereoq.cli.progress import RichReporter
from stereoq.data.images import write_png
from stereoq.engine.evaluate import evaluate, evaluate_sgbm
from stereoq.errors import StereoqError
from stereoq.settings import load_config
from stereoq.stages import get_stage, run_stage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import motorcycle  # noqa: E402

KINDS = ("planes", "scenes")
FORMS = ("network", "refined")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", dest="sets", action="append", default=[], help="KEY=VALUE, "
                        "applied to every run (the same budget for both)")
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    try:
        compare_generators(args)
    except StereoqError as err:  # a bad --set, a missing run with --skip-train: one line
        sys.exit(f"error: {err}")


def compare_generators(args: argparse.Namespace) -> None:
    """Train (unless there) and score both generators' models; print and save the results."""
    reporter = RichReporter()

    def config(model_kind: str, data_kind: str):
        return load_config(None, sets=[f"output_dir={args.out / 'runs'}", f"name={model_kind}",
                                       f"data.synthetic.kind={data_kind}", *args.sets])

    results: dict = {"sets": args.sets, "train_wall_s": {}, "val": {}, "motorcycle": {}}
    best = {kind: config(kind, kind).run_dir / "float" / "best.pt" for kind in KINDS}
    if args.skip_train:  # before any scoring: a missing run stops the script at once
        missing = [str(path) for path in best.values() if not path.exists()]
        if missing:
            raise StereoqError(f"--skip-train: no trained run at {', '.join(missing)}")
    for kind in KINDS:
        cfg = config(kind, kind)
        if not args.skip_train and not best[kind].exists():
            start = time.perf_counter()
            # An interrupted run (a last.pt, no best.pt yet) continues.
            run_stage(cfg, "float", reporter=reporter,
                      resume=(cfg.run_dir / "float" / "last.pt").exists())
            results["train_wall_s"][kind] = time.perf_counter() - start

    for data_kind in KINDS:
        cfg = config("planes", data_kind)
        results["val"][f"sgbm/{data_kind}"] = evaluate_sgbm(cfg, reporter)
        for model_kind in KINDS:
            cfg = config(model_kind, data_kind)
            results["val"][f"{model_kind}/{data_kind}"] = evaluate(
                cfg, get_stage(cfg, "float"), reporter=reporter,
                batch_size=cfg.stages.float_.val_batch_size)

    # Each model on the pair as `stereoq infer` writes it (refined) and the network alone.
    methods, left, gt = [], None, None
    cfg = load_config(None, sets=args.sets)
    for kind in KINDS:
        run = motorcycle.compare(cfg, args.out / f"motorcycle_{kind}", checkpoint=best[kind])
        network, refined, sgbm = run.disparities.values()
        left, gt = run.left, run.gt
        for form, disp in (("network", network), ("refined", refined)):
            results["motorcycle"][f"{kind}/{form}"] = motorcycle.score(disp, gt, run.maxdisp)
            methods.append((f"{kind}, {form}", disp, results["motorcycle"][f"{kind}/{form}"]))
    results["motorcycle"]["sgbm"] = run.results["OpenCV SGBM"]
    methods.append(("OpenCV SGBM", sgbm, results["motorcycle"]["sgbm"]))
    write_png(args.out / "motorcycle_errors.png", motorcycle.comparison_picture(left, gt, methods))

    rows = []
    for name in (*KINDS, "sgbm"):
        cells = [results["val"][f"{name}/{k}"] for k in KINDS]
        pair = [results["motorcycle"][f"{name}/{f}"] for f in FORMS] if name != "sgbm" else \
            [results["motorcycle"]["sgbm"]] * 2
        rows.append((name if name == "sgbm" else f"float on {name}",
                     *(f"{m['epe']:.2f} / {m['bad2']:.1f}" for m in (*cells, *pair))))
    print_table(
        "quick start float model by training generator: EPE px / bad-2 %",
        ["model", "planes val", "scenes val", "motorcycle 741x500, network",
         "motorcycle, refined (infer)"],
        rows,
    )
    results["motorcycle_reduction"] = {}
    for form in FORMS:
        old, new = (results["motorcycle"][f"{k}/{form}"] for k in KINDS)
        cut = {k: 1.0 - new[k] / old[k] for k in ("epe", "bad2")}
        results["motorcycle_reduction"][form] = cut
        print(f"motorcycle, {form}, scenes vs planes: EPE {-100 * cut['epe']:+.1f} %, "
              f"bad-2 {-100 * cut['bad2']:+.1f} %")
    print(f"saved {write_json(args.out / 'generator_compare.json', results)}")


if __name__ == "__main__":
    main()
