"""AOTInductor on x86 CPUs: the stage's ``torch.export`` program compiled ahead of time.

Source: the int_infer program (``int_infer/model.pt2``) or the float ``DeployGraph``, lowered
by ``stereoq.quant.lowering`` (16-bit Q/DQ as the identical float arithmetic, weights of convs
without an int8 lowering folded) and re-exported at the deployment size. ``compile`` runs
``torch._inductor.aoti_compile_and_package`` with freezing on (under ``no_grad``: inductor
applies its x86 quantization passes only then), which turns every ``dequantize(uint8) -> conv2d
-> quantize`` into a oneDNN ``qconv_pointwise`` kernel. The package (``model.pt2``: generated
C++ compiled to a shared library, weights inside) loads with ``torch._inductor.aoti_load_package``
in a process without stereoq; ``run_stereo.py`` (``stereoq.deploy.aoti_runner``) is the runner.

``check`` compiles the program and reads the generated wrapper code: which convolutions call
oneDNN's int8 ``qconv``, which call a float oneDNN conv (and why, from the lowering), and what
the generated elementwise loops read, write and compute in (they load 8-bit values, compute in
float registers and store 8-bit values: reported as float compute).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from stereoq.atomic import atomic_write_json
from stereoq.deploy import aoti_runner
from stereoq.deploy.backends.base import (
    BACKENDS,
    Backend,
    RawRunner,
    StageSource,
    run_artifact_bench,
)
from stereoq.deploy.check import FLOAT, FLOAT_DATA, INT8, INT8_DATA, CheckReport, NodeVerdict
from stereoq.deploy.metadata import OUTPUT_NAMES, DeployMetadata, describe
from stereoq.errors import StereoqError
from stereoq.quiet import quiet
from stereoq.settings.config import ExperimentConfig

RUNNER_SCRIPT = "run_stereo.py"
LOWERING_FILE = "lowering.json"
NO_OPSET = 0
"""``DeployMetadata.opset`` of an artifact that is not an ONNX model."""

INT8_CONV_CALLS = ("aoti_torch_cpu__qconv_pointwise", "aoti_torch_cpu__qconv2d_pointwise")
FLOAT_CONV_CALLS = ("aoti_torch_cpu_mkldnn__convolution_pointwise", "aoti_torch_cpu_convolution")
DATA_CALLS = ("aoti_torch_cpu_cat",)
_CALL = re.compile(r"\b(aoti_torch_cpu_\w+|cpp_fused_\w+)\((.*)$")
_POINTER = re.compile(r"\((const )?(\w+)\*\)\((\w+)\.data_ptr\(\)\)")
_BUFFER = re.compile(r"\b(buf\d+)\.get\(\)|\{(buf\d+)")
_BIAS = re.compile(r"temporary_reference\((\w+)\.get\(\)\)")
EIGHT_BIT_C = {"uint8_t", "int8_t"}
QUIET_LOGGERS = ("torch._inductor", "torch._export", "torch.export", "torch._dynamo")


def _program_path(cfg: ExperimentConfig, stage: str, height: int, width: int) -> Path:
    return cfg.run_dir / "deploy" / f"{stage}_inductor_{height}x{width}.pt2"


def lower_stage(
    cfg: ExperimentConfig, stage: str, height: int, width: int
) -> tuple[torch.export.ExportedProgram, dict[str, Any], DeployMetadata]:
    """The stage's graph lowered for inductor and exported at (1, 6, height, width)."""
    from stereoq.stages import get_stage, stage_classes

    found = get_stage(cfg, stage)
    if not found.deployable:
        names = [s.name for s in stage_classes() if s.deployable]
        built = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
        raise StereoqError(
            f"the inductor backend builds finished models ({built}), not stage {stage!r}",
            exit_code=2,
        )
    return lower_module(cfg, stage, found.graph(), height, width)


def lower_module(
    cfg: ExperimentConfig, stage: str, module: torch.nn.Module, height: int, width: int
) -> tuple[torch.export.ExportedProgram, dict[str, Any], DeployMetadata]:
    """``module`` (a converted Q/DQ GraphModule, or a float module) lowered and exported."""
    from stereoq.quant.lowering import lower_for_inductor, output_quant

    quant: dict[str, tuple[float, int] | None] = {}
    report: dict[str, Any] = {}
    if isinstance(module, torch.fx.GraphModule):
        quant = dict(zip(OUTPUT_NAMES, output_quant(module), strict=True))
        module, lowering = lower_for_inductor(module)
        report = lowering.to_json()
    precision = "int8-qdq" if any(quant.values()) else "float32"
    metadata = describe(cfg, stage, precision, NO_OPSET, height, width, quant)
    with quiet(*QUIET_LOGGERS):
        program = torch.export.export(module, (torch.zeros(1, 6, height, width),))
    return program, report, metadata


def save_source(path: Path, program: torch.export.ExportedProgram, lowering: dict[str, Any],
                metadata: DeployMetadata) -> Path:
    """The lowered program and, beside it (``.json``), its lowering report and metadata."""
    from stereoq.quant.artifacts import save_program

    save_program(path, program)
    side = {"lowering": lowering, "metadata": metadata.model_dump()}
    atomic_write_json(path.with_suffix(".json"), side)
    return path


def _compile_package(program: torch.export.ExportedProgram, package: Path) -> float:
    """AOTInductor package of ``program`` with freezing (x86 int8 passes); returns seconds."""
    import torch._inductor.config as inductor_config

    start = time.perf_counter()
    with quiet(*QUIET_LOGGERS), torch.no_grad(), inductor_config.patch(freezing=True):
        torch._inductor.aoti_compile_and_package(
            program, package_path=str(package), inductor_configs={"freezing": True}
        )
    return time.perf_counter() - start


def generated_code(package: Path) -> str:
    """The C++ wrapper (the kernel call sequence) inside an AOTInductor package."""
    with zipfile.ZipFile(package) as archive:
        names = [n for n in archive.namelist() if n.endswith(".wrapper.cpp")]
        if not names:
            raise StereoqError(f"{package} holds no generated wrapper code")
        return archive.read(names[0]).decode("utf-8", errors="replace")


def classify(code: str, lowering: dict[str, Any]) -> list[NodeVerdict]:
    """Every kernel call of the generated wrapper and the precision it computes in."""
    convs = lowering.get("convs", [])
    dotted = {c["scope"].replace(".", "_"): c["scope"] for c in convs}
    float_reasons = {c["scope"]: c["reason"] for c in convs if c["reason"]}
    dtypes: dict[str, str] = {}
    verdicts: list[NodeVerdict] = []
    index = 0
    for line in code.splitlines():
        match = _CALL.search(line)
        if not match:
            continue
        call, rest = match.groups()
        pointers = _POINTER.findall(rest)
        for _const, ctype, buf in pointers:
            dtypes.setdefault(buf, ctype)
        bias = _BIAS.search(rest)
        raw_scope = bias.group(1).removesuffix("_bias") if bias else ""
        scope = dotted.get(raw_scope, raw_scope)
        index += 1
        name = f"{call}_{index}"
        if call.startswith(INT8_CONV_CALLS):
            verdicts.append(NodeVerdict("QConv (oneDNN int8)", name, INT8, "", scope))
        elif call.startswith(FLOAT_CONV_CALLS):
            reason = float_reasons.get(scope, "float conv in the source graph")
            verdicts.append(NodeVerdict("Conv (oneDNN float)", name, FLOAT, reason, scope))
        elif call.startswith(DATA_CALLS):
            bufs = [a or b for a, b in _BUFFER.findall(rest)]
            eight = bufs and all(dtypes.get(b) in EIGHT_BIT_C for b in bufs)
            verdicts.append(NodeVerdict(call.removeprefix("aoti_torch_cpu_"), name,
                                        INT8_DATA if eight else FLOAT_DATA))
        elif call.startswith("cpp_fused_"):
            types = {c for _const, c, _b in pointers}
            io = "8-bit" if types <= EIGHT_BIT_C else "/".join(sorted(
                t.removesuffix("_t") for t in types))
            verdicts.append(NodeVerdict(
                "fused loop (inductor C++)", call, FLOAT,
                f"generated elementwise loop: {io} in/out, float arithmetic"))
    return verdicts


@BACKENDS.register("inductor")
class InductorBackend(Backend):
    name = "inductor"
    description = "AOTInductor package (oneDNN int8 convs on x86 CPUs), runs with torch only"
    consumes = "program"
    profiler = "ops (torch profiler)"
    model_file = aoti_runner.PACKAGE_FILE

    def stage_source(
        self, cfg: ExperimentConfig, stage: str, height: int, width: int, strict: bool = False
    ) -> StageSource:
        """The lowered program at this size, saved as ``deploy/<stage>_inductor_<H>x<W>.pt2``
        with its lowering report and metadata beside it (rebuilt on every call: seconds;
        nothing is exported, so ``strict`` changes nothing here)."""
        program, report, metadata = lower_stage(cfg, stage, height, width)
        path = save_source(_program_path(cfg, stage, height, width), program, report, metadata)
        return StageSource(path, metadata)

    def scopes(self, source: Path) -> dict[str, str]:
        return {}

    def _load_source(self, source: Path) -> tuple[torch.export.ExportedProgram, dict[str, Any]]:
        from stereoq.quant.artifacts import load_program

        side_path = Path(source).with_suffix(".json")
        if not side_path.is_file():
            raise StereoqError(f"{side_path} is missing: rebuild {source} with stereoq compile")
        return load_program(source), json.loads(side_path.read_text(encoding="utf-8"))

    def check(self, source: Path) -> CheckReport:
        program, side = self._load_source(source)
        with tempfile.TemporaryDirectory(prefix="stereoq-aoti-") as tmp:
            package = Path(tmp) / aoti_runner.PACKAGE_FILE
            _compile_package(program, package)
            code = generated_code(package)
        return CheckReport(self.name, str(source), classify(code, side["lowering"]))

    def compile(self, source: Path, metadata: DeployMetadata, out_dir: Path) -> Path:
        """``model.pt2`` (AOTInductor package), ``metadata.json``, ``lowering.json`` (what
        was rewritten, compile seconds, int8/float convs in the generated code) and
        ``run_stereo.py``."""
        program, side = self._load_source(source)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        package = out_dir / aoti_runner.PACKAGE_FILE
        seconds = _compile_package(program, package)
        verdicts = classify(generated_code(package), side["lowering"])
        convs = [v for v in verdicts if "Conv" in v.op_type]
        summary = {
            **side["lowering"],
            "compile_s": seconds,
            "generated_int8_convs": sum(v.precision == INT8 for v in convs),
            "generated_convs": len(convs),
            "torch": torch.__version__,
        }
        (out_dir / aoti_runner.METADATA_FILE).write_text(
            metadata.model_dump_json(indent=2) + "\n", encoding="utf-8"
        )
        (out_dir / LOWERING_FILE).write_text(json.dumps(summary, indent=2) + "\n",
                                             encoding="utf-8")
        shutil.copyfile(aoti_runner.__file__, out_dir / RUNNER_SCRIPT)
        return out_dir

    def benchmark(
        self,
        artifact_dir: Path,
        runs: int,
        warmup: int,
        threads: int | None,
        top: int,
        scopes: dict[str, str] | None = None,
        profile_runs: int = 3,
    ) -> dict[str, Any]:
        artifact_dir = Path(artifact_dir)
        result = run_artifact_bench(artifact_dir, RUNNER_SCRIPT, [
            "--runs", str(runs), "--warmup", str(warmup), "--threads", str(threads or 0),
            "--profile", str(profile_runs),
        ])
        profile = result.pop("profile")
        total = sum(r["ms"] for r in profile) or 1.0
        result["top_layers"] = [
            {"node": f"{r['op']} x{r['calls']}", "op": r["op"], "scope": "",
             "ms": round(r["ms"], 3), "share_pct": round(100.0 * r["ms"] / total, 1)}
            for r in profile[:top]
        ]
        result["memory_method"] = (
            "peak resident set size (Linux VmHWM, else getrusage ru_maxrss) of a fresh "
            "Python process that imports torch, loads the package and runs it; "
            "rss_before_session_mib is the same figure after the imports"
        )
        return result

    def load(self, artifact_dir: Path, threads: int | None = None) -> RawRunner:
        return self.runner(artifact_dir, threads).raw

    def runner(self, artifact_dir: Path, threads: int | None = None) -> aoti_runner.StereoRunner:
        return aoti_runner.StereoRunner(artifact_dir, threads)

