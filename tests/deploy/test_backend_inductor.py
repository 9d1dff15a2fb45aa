"""The inductor backend: the graph rewrite it compiles, the reading of inductor's generated code,
and (slow) the AOTInductor package of a tiny int_infer model in a process without stereoq."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from stereoq.deploy.check import FLOAT, INT8, INT8_DATA
from stereoq.errors import StereoqError

from .qdq_models import W_MAX


def _qd():  # noqa: ANN202
    import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers the ops)

    return torch.ops.quantized_decomposed


class QdqNet(nn.Module):
    """A converted-style graph: uint8 conv2d (qconv-lowerable), an int16 tensor, a conv fed by
    it, and a Conv3d, each conv with an int8 per-channel weight dequantized in the graph."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        for name, shape in (("w2", (4, 3, 3, 3)), ("w16", (4, 4, 3, 3)), ("w3", (2, 1, 3, 3, 3))):
            self.register_buffer(name, torch.randint(-W_MAX, W_MAX + 1, shape, generator=g,
                                                     dtype=torch.int8))
            self.register_buffer(f"{name}_s", torch.rand(shape[0], generator=g) * 0.01 + 1e-3)
            self.register_buffer(f"{name}_zp", torch.zeros(shape[0], dtype=torch.int64))
            self.register_buffer(f"{name}_b", torch.randn(shape[0], generator=g))

    def _w(self, name: str) -> torch.Tensor:
        q = _qd()
        return q.dequantize_per_channel(getattr(self, name), getattr(self, f"{name}_s"),
                                        getattr(self, f"{name}_zp"), 0, -W_MAX, W_MAX, torch.int8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = _qd()
        u8 = (0, 255, torch.uint8)
        i16 = (-(2**15), 2**15 - 1, torch.int16)
        a = q.dequantize_per_tensor(q.quantize_per_tensor(x, 0.02, 128, *u8), 0.02, 128, *u8)
        y = torch.relu(nn.functional.conv2d(a, self._w("w2"), self.w2_b, padding=1))
        y16 = q.dequantize_per_tensor(q.quantize_per_tensor(y, 3e-4, 0, *i16), 3e-4, 0, *i16)
        z = nn.functional.conv2d(y16, self._w("w16"), self.w16_b, padding=1)
        v = q.quantize_per_tensor(z[:, :1].unsqueeze(1), 0.05, 100, *u8)
        v = q.dequantize_per_tensor(v, 0.05, 100, *u8)
        out3 = nn.functional.conv3d(v, self._w("w3"), self.w3_b, padding=1)
        return z, out3


def _wide(gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    q = _qd()
    ops = {q.quantize_per_tensor.default, q.dequantize_per_tensor.default}
    return [n for n in gm.graph.nodes if n.target in ops and n.args[5] == torch.int16]


def test_lowering_rewrites_int16_and_folds_unlowerable_weights_bit_exactly() -> None:
    from stereoq.quant.lowering import FLOAT_CONV, INT8_QCONV, lower_for_inductor, output_quant

    x = torch.randn(1, 3, 8, 12) * 2
    gm = torch.export.export(QdqNet().eval(), (x,)).module()
    assert len(_wide(gm)) == 2
    assert output_quant(gm) == [None, None]
    with torch.no_grad():
        before = gm(x)
    lowered, report = lower_for_inductor(gm)
    with torch.no_grad():
        after = lowered(x)
    for a, b in zip(after, before, strict=True):
        assert torch.equal(a, b)  # the same arithmetic, not an approximation
    assert _wide(lowered) == []
    assert (report.wide_quantize, report.wide_dequantize) == (1, 1)
    by_dims = {(c.dims, c.precision): c for c in report.convs}
    assert by_dims[(2, INT8_QCONV)].scope == "w2_b"  # named after its bias constant
    assert "conv3d" in by_dims[(3, FLOAT_CONV)].reason
    float2d = [c for c in report.convs if c.dims == 2 and c.precision == FLOAT_CONV]
    assert len(float2d) == 1 and "16-bit" in float2d[0].reason
    assert report.folded_weights == 2 and report.int8_convs == 1
    # the qconv-lowerable conv keeps its runtime weight dequantize for inductor's pattern
    per_channel = [n for n in lowered.graph.nodes
                   if n.target == _qd().dequantize_per_channel.default]
    assert len(per_channel) == 1


def test_lowering_rounds_ties_and_clamps_like_the_quantize_op() -> None:
    from stereoq.quant.lowering import lower_for_inductor

    class Edge(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q = _qd()
            args = (0.5, 3, -(2**15), 2**15 - 1, torch.int16)
            return q.dequantize_per_tensor(q.quantize_per_tensor(x, *args), *args)

    x = torch.tensor([[0.25, 0.75, -0.25, 1e6, -1e6, 1.2499999]])
    gm = torch.export.export(Edge(), (x,)).module()
    ref = gm(x)
    lowered, _ = lower_for_inductor(gm)
    assert torch.equal(lowered(x), ref)
    assert ref[0, 3].item() == (2**15 - 1 - 3) * 0.5  # clamped at the int16 maximum


WRAPPER = """
    cpp_fused_quantize_per_tensor_0((const float*)(arg1_1.data_ptr()), (uint8_t*)(buf0.data_ptr()));
    AOTI_TORCH_ERROR_CODE_CHECK(aoti_torch_cpu__qconv_pointwise_tensor(buf0, x_scale, x_zp, _frozen_param1, net__scale_0, net__zero_point_0, &temporary_reference(net_model_neck_stem_0_0_bias.get()), std::array<int64_t, 2>{2L, 2L}.cbegin(), 2, 1L, 0.0036, 0L, &var_0, "relu", &buf1_handle));
    cpp_fused_add_dequantize_per_tensor_quantize_per_tensor_relu_1((uint8_t*)(buf1.data_ptr()), (const uint8_t*)(buf0.data_ptr()));
    AOTI_TORCH_ERROR_CODE_CHECK(aoti_torch_cpu_cat(std::array<AtenTensorHandle, 2>{buf1.get(), buf0.get()}.cbegin(), 2, 1L, &buf2_handle));
    AOTI_TORCH_ERROR_CODE_CHECK(aoti_torch_cpu_mkldnn__convolution_pointwise(buf3, _frozen_param19, &temporary_reference(net_model_head_aggregation_0_0_bias.get()), 3, 1L, "relu", &buf4_handle));
"""  # noqa: E501  (lines as AOTInductor writes them, shortened)


def test_classify_reads_precisions_from_generated_code() -> None:
    from stereoq.deploy.backends.inductor import classify

    lowering = {"convs": [
        {"scope": "net.model.neck.stem.0.0", "reason": ""},
        {"scope": "net.model.head.aggregation.0.0",
         "reason": "inductor has no int8 conv3d lowering"},
    ]}
    verdicts = classify(WRAPPER, lowering)
    assert [v.precision for v in verdicts] == [FLOAT, INT8, FLOAT, INT8_DATA, FLOAT]
    qconv, fused, conv3d = verdicts[1], verdicts[2], verdicts[4]
    assert qconv.scope == "net.model.neck.stem.0.0"
    assert "8-bit in/out" in fused.reason
    assert "float/uint8" in verdicts[0].reason
    assert conv3d.scope == "net.model.head.aggregation.0.0"
    assert conv3d.reason == "inductor has no int8 conv3d lowering"


def test_inductor_backend_is_registered_and_refuses_fake_quant_stages(deploy_cfg) -> None:
    from stereoq.deploy.backends import backend_names, get_backend

    assert "inductor" in backend_names()
    backend = get_backend("inductor")
    assert backend.consumes == "program"
    with pytest.raises(StereoqError) as err:
        backend.stage_source(deploy_cfg, "qat", 64, 128)
    from stereoq.stages import stage_classes

    built = [s.name for s in stage_classes() if s.deployable]
    assert err.value.exit_code == 2 and "qat" in str(err.value)
    assert "float" in built and "int_infer" in built and "qat" not in built
    assert all(name in str(err.value) for name in built)


FRESH_NO_STEREOQ = (
    "import sys, runpy; sys.modules['stereoq'] = None; "
    "sys.argv = ['run_stereo.py'] + sys.argv[1:]; "
    "runpy.run_path({script!r}, run_name='__main__')"
)


@pytest.mark.slow
def test_int_infer_compiles_to_int8_qconv_package_that_runs_without_stereoq(
    int_run: Path, tmp_path: Path,
) -> None:
    from stereoq.deploy.backends import get_backend
    from stereoq.deploy.compile import compile_stage, validate
    from stereoq.deploy.onnx_export import compare, run_torch, stage_graph

    from .conftest import int_run_copy

    cfg = int_run_copy(int_run, tmp_path)  # calibration -> int_infer done (conftest)

    result = compile_stage(cfg, "int_infer", "inductor", 64, 128, runs=2, warmup=1, threads=1)
    result.commit()
    out = result.artifact_dir
    assert sorted(p.name for p in out.iterdir()) == [
        "lowering.json", "metadata.json", "model.pt2", "report.json", "run_stereo.py"]
    lowering = json.loads((out / "lowering.json").read_text())
    # every 2-D conv fed by an 8-bit tensor runs oneDNN's int8 kernel in the generated code
    assert lowering["generated_int8_convs"] == lowering["int8_convs"] > 0
    assert lowering["generated_convs"] == len(lowering["convs"])
    assert result.performance["median_ms"] > 0 and result.performance["top_layers"]

    x = torch.randn(1, 6, 64, 128).clamp(-1, 1)
    np.save(tmp_path / "x.npy", x.numpy())
    cmd = [sys.executable, "-c", FRESH_NO_STEREOQ.format(script=str(out / "run_stereo.py")),
           str(out), "predict", "--raw", str(tmp_path / "x.npy"), str(tmp_path / "raw.npz")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    raw = np.load(tmp_path / "raw.npz")
    steps = {o.name: o.agreement_step for o in result.metadata.outputs}
    assert all(steps.values())
    agreement = compare([(raw["disparity_half"], raw["offset"])],
                        run_torch(stage_graph(cfg, "int_infer"), [x]), steps, True,
                        min_int_pct=99.0)
    assert min(agreement.within_pct.values()) >= 99.0, agreement.within_pct

    report = validate(cfg, get_backend("inductor"), out, result.metadata, max_samples=1)
    assert report["agreement"]["disparity_within_step_pct"] >= 99.0
    assert abs(report["deployed"]["epe"] - report["reference"]["epe"]) < 0.5
