"""Per-layer cost from ONNX Runtime's profiler trace (Chrome trace JSON)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from stereoq.deploy.qdq_graph import scope_of


def top_layers(
    trace: list[dict[str, Any]], top: int, scopes: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The ``top`` nodes by mean kernel time per run.

    Every node runs once per ``run()``; its first run is dropped as warm-up when there are
    several. ``share_pct`` is the node's part of all kernel time, ``scope`` the PyTorch module
    it comes from when known.
    """
    durations: dict[str, list[float]] = defaultdict(list)
    op_of: dict[str, str] = {}
    for event in trace:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name.removesuffix("_kernel_time")
        durations[node].append(float(event.get("dur", 0)) / 1000.0)
        op_of[node] = event.get("args", {}).get("op_name", "")
    mean_ms = {
        node: sum(d[1:] if len(d) > 1 else d) / max(len(d) - 1, 1) for node, d in durations.items()
    }
    total = sum(mean_ms.values()) or 1.0
    ranked = sorted(mean_ms.items(), key=lambda kv: -kv[1])[:top]
    scopes = scopes or {}
    return [
        {
            "node": node,
            "op": op_of[node],
            "scope": scope_of(node, scopes),
            "ms": round(ms, 3),
            "share_pct": round(100.0 * ms / total, 1),
        }
        for node, ms in ranked
    ]
