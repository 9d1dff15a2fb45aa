"""From a float StereoNet to PT2E graphs: BN folding, export, prepare, calibrate, convert.

Every quantized stage works on the same exported graph: the float model with every BatchNorm
folded into its convolution, exported once with a dynamic batch and dynamic height/width
(multiples of the network's stride, ``ModelConfig.size_multiple``), returning the five raw
(normalised) outputs. QAT needs all five for its loss; the deployed model only keeps the last
two, which are intermediate values of the same graph.

Folding BN before QAT (instead of PT2E's simulated conv-BN fusion) is deliberate: PT2E's QAT
fusion covers only 1-D/2-D convolutions, so BN3d would leave the Conv3d layers unfused in ONNX
Runtime, and QAT at batch 4 would update BN statistics from very few samples anyway.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.fx import GraphModule
from torch.nn.utils.fusion import fuse_conv_bn_eval

from stereoq.models.stereonet import StereoNet
from stereoq.quant.op_kinds import CONV, RELU
from stereoq.quant.quantizer import QuantRecipe, StereoQuantizer
from stereoq.quant.torchao_import import pt2e

#: Export bounds: batch 1..MAX_BATCH, height/width up to size multiple * MAX_UNITS_* pixels.
MAX_BATCH = 64
MAX_UNITS_H = 256
MAX_UNITS_W = 512
EXAMPLE_HEIGHT = 64
NUM_CANDIDATES_KEY = "stereoq_num_candidates"
SIZE_MULTIPLE_KEY = "stereoq_size_multiple"


class RawOutputs(nn.Module):
    """(B, 6, H, W) -> the five normalised outputs of ``StereoNet.raw`` (coarse ... offset)."""

    def __init__(self, model: StereoNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.model.raw(x))


class LastTwo(nn.Module):
    """Keeps the deployed outputs of a five-output graph: (1/2 disparity, full-res offset)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net  # not "graph": that name is GraphModule's own attribute once exported

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        outputs = self.net(x)
        return outputs[-2], outputs[-1]


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with each Conv+BN pair of a Sequential fused into a conv.

    Gains of modules with a ``fold_gain`` method (the refinement's disparity unit) move into
    their weights first, so the exported graph has no multiplies for them.
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        fold_gain = getattr(module, "fold_gain", None)
        if callable(fold_gain):
            fold_gain()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, bn = module[i], module[i + 1]
            if isinstance(conv, (nn.Conv2d, nn.Conv3d)) and isinstance(
                bn, (nn.BatchNorm2d, nn.BatchNorm3d)
            ):
                module[i] = fuse_conv_bn_eval(conv, bn)
                module[i + 1] = nn.Identity()
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules()):
        raise ValueError("a BatchNorm layer does not follow a convolution and cannot be folded")
    return folded


def dynamic_shapes(multiple: int) -> dict:
    """Dynamic batch, and height/width as multiples of ``multiple`` (the network's stride)."""
    dim = torch.export.Dim
    return {
        "x": {
            0: dim("batch", min=1, max=MAX_BATCH),
            2: multiple * dim(f"h{multiple}", min=1, max=MAX_UNITS_H),
            3: multiple * dim(f"w{multiple}", min=1, max=MAX_UNITS_W),
        }
    }


def min_input_size(num_candidates: int, multiple: int) -> tuple[int, int]:
    """The smallest (H, W) in px the exported graphs run on; any larger multiple of
    ``multiple`` (the network's stride) runs too.

    torch.export assumes a dynamic dimension is never 0 or 1 and guards on it, so the
    1/stride height must be at least 2 and so must each cost-volume plane's width after its
    shift (W/stride - d for d < num_candidates): smaller inputs fail with "Guard failed".
    """
    return multiple * 2, multiple * (num_candidates + 1)


def example_input(num_candidates: int, multiple: int, batch: int = 2) -> Tensor:
    """A (B, 6, 64, W) export example, wider at 1/stride than the cost volume's candidates.

    Narrower examples trace the cost volume's shifts past the image edge and export a graph
    that only accepts such narrow inputs.
    """
    return torch.zeros(batch, 6, EXAMPLE_HEIGHT, multiple * max(8, num_candidates + 2))


def export_graph(module: nn.Module, num_candidates: int, multiple: int) -> GraphModule:
    """``torch.export`` of a (B, 6, H, W) -> outputs module at dynamic batch/height/width."""
    example = (example_input(num_candidates, multiple),)
    return torch.export.export(module, example, dynamic_shapes=dynamic_shapes(multiple)).module()


def exported_model(model: StereoNet) -> GraphModule:
    """``export_graph`` of the BN-folded model's five raw outputs.

    Exporting takes seconds, and a budget search or a pipeline run in one process exports
    models of one architecture several times (each calibration try, each fresh fake-quant
    graph). A model built by ``build_model`` carries its config: the last export of that
    config (and of the same module tree, parameter shapes and constant buffers) is copied and
    given this model's weights instead of exporting again; the outputs are the same, bit for
    bit (tested).
    """
    wrapped = RawOutputs(fold_batchnorm(model))
    key = _export_key(model, wrapped)
    cached = _EXPORTED.get(key) if key is not None else None
    if cached is None:
        cached = export_graph(wrapped, model.head.num_candidates, model.size_multiple)
        _EXPORTED.clear()
        if key is not None:
            _EXPORTED[key] = cached
    graph = deepcopy_graph(cached)  # always a copy: prepare and calibration change it in place
    graph.load_state_dict(wrapped.state_dict(), strict=True)
    return graph


_EXPORTED: dict[tuple, GraphModule] = {}


def _export_key(model: StereoNet, wrapped: nn.Module) -> tuple | None:
    """What the exported graph depends on besides the weights; None: not known (no cache)."""
    built_from = getattr(model, "built_from", None)
    if built_from is None:
        return None
    persistent = wrapped.state_dict()
    shapes = tuple((k, tuple(v.shape), str(v.dtype)) for k, v in persistent.items())
    constants = tuple((k, v.detach().cpu().numpy().tobytes()) for k, v in wrapped.named_buffers()
                      if k not in persistent)
    return built_from, repr(wrapped), shapes, constants


def prepare(model: StereoNet, recipe: QuantRecipe) -> GraphModule:
    """Fold BN, export the five-output graph and insert observers (PTQ) or fake quants (QAT).

    The result switches with ``.train()`` / ``.eval()`` like a module; use
    ``set_observers`` to freeze or release the quantization ranges.
    """
    q = pt2e()
    num_candidates = model.head.num_candidates
    multiple = model.size_multiple
    graph = exported_model(model)
    quantizer = StereoQuantizer(recipe)
    if recipe.is_qat:
        prepared = q.quantize_pt2e.prepare_qat_pt2e(graph, quantizer)
    else:
        prepared = q.quantize_pt2e.prepare_pt2e(graph, quantizer)
    q.allow_exported_model_train_eval(prepared)
    prepared.meta[NUM_CANDIDATES_KEY] = num_candidates  # GraphModule.meta survives deepcopy
    prepared.meta[SIZE_MULTIPLE_KEY] = multiple
    return prepared


def observers(graph: nn.Module) -> dict[str, nn.Module]:
    """Observer / fake-quant submodules of a prepared graph by name."""
    q = pt2e()
    kinds = (q.ObserverBase, q.FakeQuantizeBase)
    return {
        name: mod
        for name, mod in graph._modules.items()
        if isinstance(mod, kinds) and name.startswith("activation_post_process")
    }


def set_observers(graph: nn.Module, enabled: bool, activations: bool = True) -> None:
    """Let fake quants update their ranges (QAT training) or freeze them (evaluation).

    ``activations=False`` releases only the weights' (per-channel) ranges, which follow the
    weights as they train; the ranges of the tensors computed at run time stay as they are.
    """
    q = pt2e()
    graph.apply(q.disable_observer)
    if not enabled:
        return
    for mod in observers(graph).values():
        if activations or getattr(mod, "is_per_channel", False):
            q.enable_observer(mod)


@torch.no_grad()
def calibrate(
    observed: GraphModule, batches: Iterable[Tensor], on_batch: Callable[[], None] | None = None
) -> int:
    """Run (B, 6, H, W) batches through a PTQ-prepared graph; returns the number of batches."""
    count = 0
    for x in batches:
        observed(x)
        count += 1
        if on_batch is not None:
            on_batch()
    return count


def _observer_keys(graph: GraphModule) -> dict[str, str]:
    """Observer name -> a key naming the tensor it watches (producer and its users)."""
    keys: dict[str, str] = {}
    for node in graph.graph.nodes:
        if node.op == "call_module" and str(node.target).startswith("activation_post_process"):
            src = node.args[0]
            users = ",".join(sorted(u.name for u in node.users))
            keys[str(node.target)] = f"{getattr(src, 'name', src)}->{users}"
    return keys


@torch.no_grad()
def load_calibration(observed: GraphModule, fake_quant: GraphModule) -> int:
    """Copy calibrated ranges and weights from a PTQ graph into a QAT graph of the same model.

    Both graphs come from the same export, so each observer has a fake quant watching the same
    tensor. Activation ranges take the observer's (percentile-clipped) range, weights are copied
    and their per-channel ranges observed once; all observers end frozen. Returns the number of
    activation ranges copied.
    """
    q = pt2e()
    src_keys, dst_keys = _observer_keys(observed), _observer_keys(fake_quant)
    by_key = {key: name for name, key in src_keys.items()}
    missing = sorted(set(dst_keys.values()) - set(by_key))
    if missing:
        raise RuntimeError(f"calibration graph lacks observers for {missing[:3]}")
    float_weights = {
        k: v for k, v in observed.state_dict().items() if "activation_post_process" not in k
    }
    result = fake_quant.load_state_dict(float_weights, strict=False)
    if result.unexpected_keys or any(
        "activation_post_process" not in k for k in result.missing_keys
    ):
        raise RuntimeError(f"calibration and QAT graphs differ: {result}")
    copied = 0
    for name, key in dst_keys.items():
        fq, obs = getattr(fake_quant, name), getattr(observed, by_key[key])
        if type(fq) is not q.FakeQuantize or fq.is_per_channel:
            continue
        low, high = obs.clipped_range() if hasattr(obs, "clipped_range") else (
            obs.min_val, obs.max_val
        )
        fq.activation_post_process.min_val.copy_(low)
        fq.activation_post_process.max_val.copy_(high)
        scale, zero_point = fq.calculate_qparams()
        fq.scale.resize_(scale.shape).copy_(scale)
        fq.zero_point.resize_(zero_point.shape).copy_(zero_point)
        fq.disable_observer()
        copied += 1
    _observe_weights(fake_quant)
    return copied


@torch.no_grad()
def _observe_weights(fake_quant: GraphModule) -> None:
    """One forward with only the per-channel (weight) observers enabled, then freeze them."""
    set_observers(fake_quant, True, activations=False)
    meta = fake_quant.meta
    fake_quant(example_input(meta[NUM_CANDIDATES_KEY], meta[SIZE_MULTIPLE_KEY], batch=1))
    set_observers(fake_quant, False)


def convert(fake_quant: GraphModule, min_channels: int | None = None) -> GraphModule:
    """The Q/DQ graph (integer weights, quantize/dequantize around every op) of a prepared one,
    convolutions narrower than ``min_channels`` (default ``MIN_CONV_CHANNELS``, 0: none)
    padded with ``pad_narrow_convs``."""
    q = pt2e()
    graph = copy_graph(fake_quant)
    graph.apply(q.disable_observer)
    converted = q.quantize_pt2e.convert_pt2e(graph)
    pad_narrow_convs(converted, MIN_CONV_CHANNELS if min_channels is None else min_channels)
    q.allow_exported_model_train_eval(converted)
    return converted


MIN_CONV_CHANNELS = 16
"""Output channels below which ``pad_narrow_convs`` pads a quantized convolution."""


def pad_narrow_convs(converted: GraphModule, channels: int = MIN_CONV_CHANNELS) -> int:
    """Pad quantized convs with fewer than ``channels`` outputs with zero filters; returns the
    number padded.

    ONNX Runtime's int8 convolution kernels (x86 AVX2 / AVX-512 VNNI) work on blocks of 16
    output channels; a narrower QLinearConv takes a generic path that ran 3x slower than a
    16-channel one (StereoNet's 1-channel offset convs at full resolution: ~70 ms against
    ~22 ms at 256x512, 2 threads). The padded conv's integer output is sliced back to the
    real channels before its dequantize, so values are unchanged: the pattern becomes
    DQ -> Conv -> Q -> Slice -> DQ, which ORT runs as QLinearConv then a uint8 Slice.
    """
    graph = converted.graph
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in CONV:
            continue
        weight_dq = node.args[1]
        if not (isinstance(weight_dq, torch.fx.Node) and "dequantize_per_channel" in str(
                weight_dq.target)):
            continue
        weight, scale, zero_point = weight_dq.args[:3]
        attrs = [weight, scale, zero_point]
        bias = node.args[2] if len(node.args) > 2 else None
        if isinstance(bias, torch.fx.Node):
            attrs.append(bias)
        if not all(isinstance(a, torch.fx.Node) and a.op == "get_attr" for a in attrs):
            continue
        out_channels = getattr(converted, str(weight.target)).shape[0]
        quantize = _output_quantize(node)
        if out_channels >= channels or quantize is None:
            continue
        for attr, fill in zip(attrs, (0, 1, 0, 0), strict=False):
            owner, name = _owner(converted, str(attr.target))
            value = getattr(owner, name)
            pad = value.new_full((channels - out_channels, *value.shape[1:]), fill)
            padded = torch.cat([value, pad])
            if isinstance(value, nn.Parameter):
                padded = nn.Parameter(padded, requires_grad=value.requires_grad)
            setattr(owner, name, padded)
        users = list(quantize.users)
        with graph.inserting_after(quantize):
            sliced = graph.call_function(
                torch.ops.aten.slice.Tensor, (quantize, 1, 0, out_channels)
            )
        sliced.meta = dict(quantize.meta)  # the real channels' shape, module stack, ...
        for user in users:
            user.replace_input_with(quantize, sliced)
        count += 1
    if count:
        graph.lint()
        converted.recompile()
    return count


def _owner(module: nn.Module, target: str) -> tuple[nn.Module, str]:
    """The submodule holding a dotted ``get_attr`` target, and the attribute's name."""
    *path, name = target.split(".")
    for part in path:
        module = getattr(module, part)
    return module, name


def _output_quantize(conv: torch.fx.Node) -> torch.fx.Node | None:
    """The quantize node of a conv's output (through a fused ReLU), if it is the only user."""
    node = conv
    while len(node.users) == 1:
        (user,) = node.users
        if user.op == "call_function" and "quantize_per_tensor" in str(user.target) and (
            "dequantize" not in str(user.target)
        ):
            return user
        if user.op != "call_function" or user.target not in RELU:
            return None
        node = user
    return None


def deepcopy_graph(graph: GraphModule) -> GraphModule:
    """``copy.deepcopy`` of an exported graph, without the pytree LeafSpec deprecation warning
    that it trips inside torch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return copy.deepcopy(graph)


def copy_graph(graph: GraphModule) -> GraphModule:
    """A deep copy of a prepared graph that still switches with ``.train()`` / ``.eval()``."""
    copied = deepcopy_graph(graph)
    pt2e().allow_exported_model_train_eval(copied)  # a copy gets GraphModule's own train/eval
    return copied


def export_program(
    module: nn.Module, num_candidates: int, multiple: int
) -> torch.export.ExportedProgram:
    """Export a converted graph (wrapped) as a self-contained program at dynamic shapes."""
    example = (example_input(num_candidates, multiple),)
    return torch.export.export(module, example, dynamic_shapes=dynamic_shapes(multiple))


def output_scales(converted: GraphModule) -> list[float]:
    """Scale of each graph output's final dequantize (normalised units per integer step)."""
    (outputs,) = [n.args[0] for n in converted.graph.nodes if n.op == "output"]
    scales = []
    for node in outputs:
        scale = node.args[1] if isinstance(node, torch.fx.Node) and len(node.args) > 1 else None
        if isinstance(scale, torch.fx.Node):
            scale = getattr(converted, str(scale.target))
        scales.append(float(scale) if scale is not None else float("nan"))
    return scales
