"""The aten ops the quantization passes match on, by kind (one table for the quantizer, its
report, the conversions and the lowering)."""

from __future__ import annotations

import torch

aten = torch.ops.aten

CONV = frozenset({aten.conv2d.default, aten.conv3d.default})
"""The convolutions StereoNet's exported graphs contain (2-D and 3-D)."""
RELU = frozenset({aten.relu.default, aten.relu_.default})
ANY_CONV = CONV | {aten.conv1d.default, aten.convolution.default}
"""Every spelling of a convolution a program can hold after ``torch.export``."""
