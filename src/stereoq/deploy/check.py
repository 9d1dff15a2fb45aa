"""Which precision each op of a deployed graph runs in on a backend, and why it falls back."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

INT8 = "int8"
INT16_FLOAT = "int16 storage, float compute"
FLOAT = "float"
BF16 = "bfloat16"
INT8_DATA = "int8 data movement"
FLOAT_DATA = "float data movement"
CONVERT = "quantize/dequantize"
FLOAT_MODEL = "float model (no Q/DQ nodes)"

FALLBACK_PRECISIONS = (FLOAT, BF16, INT16_FLOAT)
"""Compute that does not run in an integer kernel on the backend."""


@dataclass(frozen=True)
class NodeVerdict:
    """One node of the backend's optimized graph: its op, where it runs, and why if float."""

    op_type: str
    name: str
    precision: str
    reason: str = ""
    scope: str = ""
    """The PyTorch module the node comes from, when the exporter recorded it."""

    @property
    def fallback(self) -> bool:
        return self.precision in FALLBACK_PRECISIONS


@dataclass
class CheckReport:
    """A backend's verdict on every node of its optimized graph."""

    backend: str
    model: str
    nodes: list[NodeVerdict] = field(default_factory=list)
    overrides: dict[str, str] = field(default_factory=dict)
    """Layers whose precision was set by name (config or accuracy budget), from the stage's
    precision report: layer -> int8 | int16 | float."""
    warnings: list[str] = field(default_factory=list)
    """What may make the backend compute differently from PyTorch's integer model here."""

    @property
    def fallbacks(self) -> list[NodeVerdict]:
        return [n for n in self.nodes if n.fallback]

    def rows(self) -> list[tuple[str, int, str, str]]:
        """(op type, count, precision, reason) grouped; fallbacks first, then by count."""
        counts = Counter((n.op_type, n.precision, n.reason) for n in self.nodes)
        rows = [(op, count, prec, why) for (op, prec, why), count in counts.items()]
        return sorted(rows, key=lambda r: (r[2] not in FALLBACK_PRECISIONS, -r[1], r[0]))

    def conv_summary(self) -> tuple[int, int]:
        """(integer convolutions, all convolutions) on the backend."""
        convs = [n for n in self.nodes if "Conv" in n.op_type]
        return sum(n.precision == INT8 for n in convs), len(convs)

    def to_json(self) -> dict[str, Any]:
        int_convs, convs = self.conv_summary()
        return {
            "backend": self.backend,
            "model": self.model,
            "integer_convolutions": int_convs,
            "convolutions": convs,
            "fallbacks": len(self.fallbacks),
            "by_op": [
                {"op_type": op, "count": c, "precision": p, "reason": r}
                for op, c, p, r in self.rows()
            ],
            "fallback_nodes": [asdict(n) for n in self.fallbacks],
            "overrides": self.overrides,
            "warnings": self.warnings,
        }
