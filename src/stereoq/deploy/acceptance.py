"""Is a deployment healthy? Judged on what a user sees: the final disparity and its accuracy.

A deployed model (an ONNX export, a compiled artifact) is compared with the PyTorch model it
came from on the same frames, after the same post-processing:

- the share of final-disparity pixels within ``pixel_tol_px`` (1 px) of PyTorch's, and the
  largest difference (reported, not judged: one pixel can flip anywhere);
- where ground truth is known, EPE and D1 of both: the deployed model's scores may not differ
  from PyTorch's by more than ``epe_abs_px + epe_rel x EPE`` px of EPE or ``d1_pp`` points of D1.

Bit-level agreement (per output step, per quantized tensor) is a diagnostic beside this
(``stereoq export --explain``; ``--strict`` makes it the exit criterion), because one-LSB
rounding differences between runtimes, CPUs and trained models are normal and invisible.

Thresholds, placed from ``bench/bench_acceptance.py`` on two trained quick-start models (seeds 0
and 1, 48 validation frames each): healthy deployments kept 99.80-100 % of pixels within 1 px
(ONNX Runtime >= 99.998 %, inductor 99.80-99.88 %, max 2.0 px), EPE within 0.0024 px and D1
within 0.03 points of PyTorch's; the same models broken on purpose (one activation's scale
doubled, one zero point moved by 16, one bias dropped, the views swapped) kept at most 50.8 %
of pixels within 1 px and moved EPE by 0.68-12.8 px and D1 by 5.6-70 points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from stereoq.engine.metrics import DisparityMetrics


@dataclass(frozen=True)
class Thresholds:
    """What a healthy deployment keeps, against the PyTorch model it came from."""

    pixel_tol_px: float = 1.0
    min_within_pct: float = 99.0
    """% of final-disparity pixels within ``pixel_tol_px`` of PyTorch's."""
    epe_abs_px: float = 0.05
    epe_rel: float = 0.02
    """EPE may differ from PyTorch's by ``epe_abs_px + epe_rel x`` PyTorch's EPE."""
    d1_pp: float = 0.5
    """D1 may differ from PyTorch's by this many percentage points."""
    basis: str = "the runtime computes the integer model's roundings"
    """Why these thresholds apply (reported with the verdict)."""

    def epe_allowance(self, reference_epe: float) -> float:
        return self.epe_abs_px + self.epe_rel * reference_epe


DEFAULT = Thresholds()
"""For runtimes that compute the integer model's roundings (ONNX Runtime, inductor)."""

OWN_ROUNDING = Thresholds(min_within_pct=90.0, d1_pp=1.5,
                          basis="the runtime rounds its own way")
"""For runtimes that round their own way (OpenVINO).

OpenVINO computes each quantization as ``FakeQuantize`` (``(x - low) * levels / range`` in
float32), which rounds values near a half step differently from ``x / scale``: ~1e-5 of an
activation's elements one LSB off, and a trained StereoNet carries such flips to 1-3 % of its
final pixels moving more than 1 px, in either direction, while its accuracy does not change.
Placed from ``bench/bench_acceptance.py --backend openvino --backend openvino-bf16`` on three
trained quick-start models (seeds 0-2, 48 validation frames each): healthy artifacts kept
96.7-98.7 % of pixels within 1 px, EPE 0.015-0.034 px and D1 0.19-0.69 points from PyTorch's
(all lower); the same models broken on purpose kept at most 58.5 % within 1 px and moved EPE by
0.58-12.8 px and D1 by 2.8-69.8 points. The EPE allowance is the default one.

On the deep reference network (``stereonet_sceneflow`` trained 10 epochs, 16 frames) healthy
artifacts kept 99.77 % (``openvino``) and 95.98-96.01 % (``openvino-bf16``, with and without
int16 convolutions), and one dropped bias kept 91.7-93.6 % while moving EPE by -0.002 to
+0.047 px and D1 by at most 0.33 points: accepted. The pixel share cannot separate a bfloat16
deployment from that breakage with a margin on such a network, and its effect on accuracy is
below what a user sees; the grosser breakages kept at most 40.8 %."""


FLOAT_CONVS = Thresholds(min_within_pct=97.0,
                         basis="convolutions at 16 bits or float are summed the runtime's way")
"""For runtimes that compute the integer model's roundings, on a model with convolutions they
compute in float (``for_model``).

No runtime has int16 convolution kernels: each dequantizes, sums in float in its own order and
rounds, so such convolutions are not bit-exact to PyTorch's (the reference network's budget
model: 12 % of its two int16 convolutions' outputs one LSB off, every other tensor exact given
the same inputs), and a deep network carries the flips forward. Placed from
``bench/bench_acceptance.py`` on ONNX Runtime (validation frames): healthy mixed models kept
99.97 and 100 % of pixels within 1 px (two quick-start budget models, 4 and 2 such
convolutions, 48 frames), 99.36 % (the reference network's budget model, 2, 16 frames; 98.94 % on
the export's 4 verification frames) and 99.77 % (the reference network with 13 convolutions
raised by hand, 16 frames), EPE within 0.0012 px and D1 within 0.05 points of PyTorch's; the same
models broken on purpose kept at most 93.8 % (a dropped bias in the deep reference network,
which moved EPE by only 0.045-0.048 px: within the EPE allowance, so the pixel share must
catch it; ``OWN_ROUNDING``'s 90 % would not) and otherwise at most 47.9 %."""


def for_model(base: Thresholds, float_convs: Sequence[str]) -> Thresholds:
    """What a runtime judged by ``base`` must keep on a quantized model whose ``float_convs``
    (``DeployMetadata.float_convs``) it computes in float: ``FLOAT_CONVS`` unless ``base`` is
    already looser."""
    if not float_convs or base.min_within_pct <= FLOAT_CONVS.min_within_pct:
        return base
    return replace(FLOAT_CONVS, basis=f"{len(float_convs)} convolution(s) at 16 bits or float, "
                                      "summed the runtime's own way")


@dataclass
class DisparityAgreement:
    """Deployed vs reference final disparity (px) over a set of frames."""

    frames: int
    pixels: int
    within_pct: float
    mean_abs_px: float
    max_abs_px: float
    pixel_tol_px: float
    deployed: dict[str, float] | None = None
    """EPE, D1, bad-k of the deployed model (frames with ground truth only)."""
    reference: dict[str, float] | None = None
    problems: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    """The thresholds it was judged by (``Thresholds`` as a dict)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        text = (
            f"{self.within_pct:.2f}% of {self.frames} frames' pixels within "
            f"{self.pixel_tol_px:g} px, max {self.max_abs_px:.3g} px"
        )
        if self.deployed and self.reference:
            text += (
                f"; EPE {self.deployed['epe']:.4f} vs {self.reference['epe']:.4f} px, "
                f"D1 {self.deployed['d1']:.2f} vs {self.reference['d1']:.2f} %"
            )
        return text

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


class DisparityComparison:
    """Accumulates frames (deployed px, reference px, optional ground truth), then judges."""

    def __init__(self, maxdisp: float, thresholds: Thresholds = DEFAULT) -> None:
        self.thresholds = thresholds
        self.deployed = DisparityMetrics(maxdisp)
        self.reference = DisparityMetrics(maxdisp)
        self.frames = self.with_gt = self.pixels = self.within = 0
        self.abs_sum = self.max_abs = 0.0

    def update(self, deployed: np.ndarray, reference: np.ndarray, gt: Any = None) -> None:
        """``deployed``, ``reference``: (1, 1, H, W) px; ``gt``: (1, 1, H, W) px or None."""
        diff = np.abs(np.asarray(deployed, np.float64) - np.asarray(reference, np.float64))
        # NaN differences count as outside the tolerance and as an infinite maximum
        finite = np.isfinite(diff)
        self.frames += 1
        self.pixels += diff.size
        self.within += int((finite & (diff <= self.thresholds.pixel_tol_px)).sum())
        self.abs_sum += float(np.where(finite, diff, 0.0).sum())
        worst = float(diff[finite].max()) if finite.any() else 0.0
        self.max_abs = max(self.max_abs, worst if finite.all() else float("inf"))
        if gt is not None:
            gt_t = torch.as_tensor(np.asarray(gt, np.float32))
            self.deployed.update(torch.from_numpy(np.asarray(deployed, np.float32)), gt_t)
            self.reference.update(torch.from_numpy(np.asarray(reference, np.float32)), gt_t)
            self.with_gt += 1

    def result(self) -> DisparityAgreement:
        t = self.thresholds
        agreement = DisparityAgreement(
            frames=self.frames,
            pixels=self.pixels,
            within_pct=100.0 * self.within / self.pixels if self.pixels else 100.0,
            mean_abs_px=self.abs_sum / self.pixels if self.pixels else 0.0,
            max_abs_px=self.max_abs,
            pixel_tol_px=t.pixel_tol_px,
            thresholds=asdict(t),
        )
        if self.with_gt:
            agreement.deployed = self.deployed.compute()
            agreement.reference = self.reference.compute()
        agreement.problems = judge(agreement, t)
        return agreement


def judge(agreement: DisparityAgreement, t: Thresholds = DEFAULT) -> list[str]:
    """What is off, one phrase each (empty when the deployment is healthy)."""
    problems = []
    if agreement.within_pct < t.min_within_pct:
        problems.append(
            f"only {agreement.within_pct:.2f}% of disparity pixels within {t.pixel_tol_px:g} px "
            f"of PyTorch's (needs {t.min_within_pct:g}%; max difference "
            f"{agreement.max_abs_px:.3g} px)"
        )
    dep, ref = agreement.deployed, agreement.reference
    if dep and ref and ref.get("images"):
        allowed = t.epe_allowance(ref["epe"])
        # either way: a deployment that scores differently is not the model that was validated
        if not abs(dep["epe"] - ref["epe"]) <= allowed:  # NaN fails too
            problems.append(
                f"EPE {dep['epe']:.4f} px against PyTorch's {ref['epe']:.4f} "
                f"(allowed ±{allowed:.3f})"
            )
        if not abs(dep["d1"] - ref["d1"]) <= t.d1_pp:
            problems.append(
                f"D1 {dep['d1']:.2f}% against PyTorch's {ref['d1']:.2f}% (allowed ±{t.d1_pp:g})"
            )
    return problems
