"""``int_infer`` (one pass): the QAT model (or the calibration model, with
``stages.int_infer.source: calibration``) converted into the integer Q/DQ program
``int_infer/model.pt2`` (``torch.export.save``; see ``stereoq.quant.artifacts``), with its
``precision.json`` and ``agreement.json`` (the program against the fake-quant model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stereoq.agreement import within
from stereoq.atomic import atomic_write_json
from stereoq.engine.report import Reporter
from stereoq.stages.quantized import QuantizedStage, fake_quant_source, padded_predictor

if TYPE_CHECKING:
    from torch import nn

    from stereoq.settings.config import ExperimentConfig

AGREEMENT_IMAGES = 8


class IntInferStage(QuantizedStage):
    """Conversion to the integer program, the model every backend deploys."""

    name = "int_infer"
    summary = "convert the QAT (or calibration) model to the integer model"
    trains = False
    deployable = True
    artifact_name = "model.pt2"

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.previous = cfg.stages.int_infer.source

    def graph(self) -> nn.Module:
        from stereoq.quant.artifacts import load_program_module

        return load_program_module(self.artifact(), hint=self.hint)

    def run(self, reporter: Reporter) -> dict[str, Any]:
        from stereoq.quant.artifacts import save_program
        from stereoq.quant.prepare import LastTwo, convert, export_program

        cfg, source = self.cfg, self.previous
        fake_quant = fake_quant_source(cfg, source).fake_quant()
        reporter.note(f"converting the {source} model and exporting the integer program")
        converted = convert(fake_quant)
        program = export_program(
            LastTwo(converted), cfg.model.num_candidates, cfg.model.size_multiple
        )
        report = self.write_precision_report(converted)
        path = save_program(self.artifact(), program)
        summary = {
            "stage": self.name,
            "source": source,
            "model": str(path),
            "precision_report": str(report),
        }
        agreement = self.agreement(LastTwo(fake_quant), program.module(), converted, reporter)
        summary.update(agreement)
        atomic_write_json(self.dir / "agreement.json", agreement)
        return summary

    def agreement(
        self, fake_quant: nn.Module, program: nn.Module, converted: nn.Module, reporter: Reporter
    ) -> dict[str, Any]:
        """Integer program vs fake-quant model on the first validation images, in px.

        Both are evaluated as the deployment runtime computes them (as every quantized stage is,
        ``stereoq.quant.runtime_eval``), each from its own quantization parameters.
        One quantization step = the coarser of the two output quantizers' steps (the 1/2
        disparity, int16, and the offset, uint8 as every conv output) times maxdisp.
        """
        import torch

        from stereoq.engine.evaluate import pair_input
        from stereoq.quant.prepare import output_scales
        from stereoq.quant.runtime_eval import runtime_eval

        cfg = self.cfg
        step_px = max(output_scales(converted)[-2:]) * cfg.model.maxdisp
        dataset = self.data("val", crop=False)
        count = min(AGREEMENT_IMAGES, len(dataset))
        a = padded_predictor(cfg, runtime_eval(fake_quant))
        b = padded_predictor(cfg, runtime_eval(program))
        diffs = []
        reporter.task(f"{self.name} vs fake-quant", count)
        with torch.no_grad():
            for i in range(count):
                item = dataset[i]
                x = pair_input({k: item[k][None] for k in ("left", "right")})
                diffs.append((a(x) - b(x)).abs().flatten())
                reporter.advance(1)
        reporter.done()
        diff = torch.cat(diffs)
        return {
            "agreement_images": count,
            "step_px": step_px,
            "within_one_step_pct": 100.0 * within(diff, step_px).float().mean().item(),
            "within_1px_pct": 100.0 * (diff <= 1.0).float().mean().item(),
            "max_abs_diff_px": diff.max().item(),
            "mean_abs_diff_px": diff.mean().item(),
        }
