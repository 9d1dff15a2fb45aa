"""Quiet, lazy import of torchao's PT2E quantization API.

On a CPU-only machine importing torchao logs "Failed to load ... _C_cutlass_90a" / "_C_mxfp8"
warnings and a ``register_constant`` deprecation from torch's pytree; none of it matters for
CPU quantization, so those two loggers are held at ERROR while it is imported.
"""

from __future__ import annotations

import functools
from types import ModuleType

from stereoq.quiet import quiet

_NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


@functools.cache
def pt2e() -> ModuleType:
    """The ``torchao.quantization.pt2e`` module, imported once without log noise."""
    with quiet(*_NOISY_LOGGERS):
        import torchao.quantization.pt2e as module
        import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401
        import torchao.quantization.pt2e.quantizer  # noqa: F401
    return module
