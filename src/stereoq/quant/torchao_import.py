"""Quiet, lazy import of torchao's PT2E quantization API.

On a CPU-only machine importing torchao logs "Failed to load ... _C_cutlass_90a" / "_C_mxfp8"
warnings and a ``register_constant`` deprecation from torch's pytree; none of it matters for
CPU quantization, so those two loggers are held at ERROR while it is imported.
"""

from __future__ import annotations

import functools
import logging
import warnings
from types import ModuleType

_NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


@functools.cache
def pt2e() -> ModuleType:
    """The ``torchao.quantization.pt2e`` module, imported once without log noise."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchao.quantization.pt2e as module
            import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401
            import torchao.quantization.pt2e.quantizer  # noqa: F401
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    return module
