"""Mixed precision of the training step: autocast of forward and loss, fp16's gradient scaler.

Weights, gradients and optimizer state stay fp32 whatever the precision; only the operations
autocast lists run in bf16 or fp16. fp16's narrow exponent needs the loss scaled up before
backward (``GradScaler``), and PyTorch scales gradients only on CUDA; bf16 has fp32's exponent
and needs no scaler.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

from stereoq.errors import StereoqError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device, key: str) -> None:
    """A one-line error (exit 2) when ``device`` cannot train in ``precision``; ``key`` is the
    config field that chose it (``stages.float.precision``)."""
    if precision == "fp16" and device.type != "cuda":
        raise StereoqError(
            f"{key}: fp16 trains only on a CUDA GPU (its gradient scaler) and none is available; "
            "use bf16",
            exit_code=2,
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise StereoqError(f"{key}: this GPU has no bf16; use fp16", exit_code=2)


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """The context the forward pass and the loss run in (disabled for fp32)."""
    return torch.autocast(device.type, dtype=DTYPES.get(precision, torch.bfloat16),
                          enabled=precision in DTYPES)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """fp16's loss scaler; for other precisions a disabled one, whose ``scale`` returns the loss
    as it is and whose ``step`` is the optimizer's."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
