"""Evaluate a quantized graph the way the deployment runtime computes it.

A Q/DQ graph (or a frozen fake-quant graph) fixes every rounding of the integer model, but run op
by op in PyTorch it computes the in-between float arithmetic its own way. Three places decide
roundings differently from ONNX Runtime, and a trained network carries the resulting one-LSB
flips forward to the outputs:

- 8-bit convolutions: integer kernels (int32 bias, exact sums, float32 requantization):
  ``stereoq.quant.integer_conv``;
- 16-bit quantization (standalone ``QuantizeLinear`` in ONNX Runtime): ``round(x / scale)``,
  not PyTorch's multiplication by the reciprocal: ``stereoq.quant.quantize_linear``;
- bilinear resizes: ONNX Runtime's float order, ``stereoq.quant.bilinear``.

``runtime_eval`` returns an evaluation copy with all three; the saved graphs (and their ONNX
exports) are unchanged. Every quantized stage is evaluated this way: ``predict``, the int_infer
agreement, ``export`` and ``compile --validate``.
"""

from __future__ import annotations

import copy
import warnings

from torch import nn
from torch.fx import GraphModule

from stereoq.quant.bilinear import runtime_resizes
from stereoq.quant.integer_conv import RENAMED_KEY, rewrite_convs
from stereoq.quant.quantize_linear import division_quantizes


def runtime_eval(graph: nn.Module) -> nn.Module:
    """An eval-only copy of a quantized graph computing as the deployment runtime does.

    ``graph`` is a converted Q/DQ ``GraphModule``, a frozen fake-quant one (calibration / QAT)
    or either wrapped as ``LastTwo(graph)``; anything else is returned unchanged.
    """
    inner = getattr(graph, "net", None)
    if not isinstance(graph, GraphModule) and isinstance(inner, GraphModule):
        wrapper = copy.copy(graph)
        wrapper._modules = dict(graph._modules)
        wrapper._modules["net"] = runtime_eval(inner)
        wrapper.training = False
        return wrapper
    if not isinstance(graph, GraphModule):
        return graph
    with warnings.catch_warnings():
        # deepcopy of an exported graph trips a pytree LeafSpec deprecation inside torch
        warnings.simplefilter("ignore", FutureWarning)
        copied = copy.deepcopy(graph)
    fake = False
    for module in copied.modules():
        if _is_fake_quant(module):
            module.disable_observer()
            fake = True
    rewrite_convs(copied, fake)
    copied.meta[RENAMED_KEY].update(division_quantizes(copied, fake))
    runtime_resizes(copied)
    return _eval_mode(copied)


def _eval_mode(module: nn.Module) -> nn.Module:
    """``module.eval()`` for graphs too (an exported program's module refuses ``eval()``)."""
    for sub in module.modules():
        sub.training = False
    return module


def _is_fake_quant(module: nn.Module) -> bool:
    return hasattr(module, "fake_quant_enabled") and hasattr(module, "scale")
