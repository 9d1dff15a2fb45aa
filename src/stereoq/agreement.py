"""When two computations of one model's output agree: the rule every comparison uses (the
integer program against its fake-quant model, an export or a deployed artifact against
PyTorch).

A quantized output agrees within one quantization step; ``STEP_MARGIN`` absorbs the rounding
of the scale products themselves (a difference of exactly one step computes as 1.0000x steps).
A float output agrees within ``FLOAT_TOLERANCE`` relative to the reference, and as much
absolute (normalised outputs sit in [0, 1]).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

A = TypeVar("A")

STEP_MARGIN = 1.001
FLOAT_TOLERANCE = 1e-4


def within(diff: A, step: float | None, reference: A | None = None) -> A:
    """Elementwise: ``diff`` (absolute, numpy or torch) is within one ``step``, or within the
    float tolerance of ``reference`` when there is no step (``None`` or 0)."""
    if step:
        return diff <= step * STEP_MARGIN
    scale = 1.0 if reference is None else 1.0 + abs(reference)
    return diff <= FLOAT_TOLERANCE * scale


def within_pct(diff: np.ndarray, step: float | None, reference: np.ndarray | None = None) -> float:
    """% of ``diff``'s elements ``within`` (100 for none)."""
    if diff.size == 0:
        return 100.0
    return float(100.0 * np.mean(within(diff, step, reference)))
