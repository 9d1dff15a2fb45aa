"""What the accuracy budget (``stereoq.quant.budget``) learns of a graph's latency, and the slot
the deploy layer fills with its measurement (``stereoq.deploy.layer_latency``).

Light on purpose (no torchao, no runtime): ``stereoq train`` imports the measurement for every
stage, and the stages cannot import the deploy layer, which sits above them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from stereoq.errors import StereoqError

if TYPE_CHECKING:
    from torch import Tensor
    from torch.fx import GraphModule


@dataclass
class Timing:
    """A fake-quant graph's latency on a deployment backend, ms per run."""

    median_ms: float
    layer_ms: dict[str, float]
    """Layer name -> mean time of the nodes that come from it."""
    other_ms: float
    """Nodes no layer claims (the input's quantization, data movement)."""
    where: str
    """Backend, threads and input size."""


MeasureLatency = Callable[["GraphModule"], Timing]
"""Times a fake-quant graph on the deployment backend."""


class LatencyProvider(Protocol):
    def __call__(
        self,
        cfg: Any,
        fake_quant: GraphModule,
        example: Tensor,
        backend_name: str,
        names: list[str],
        threads: int | None = None,
    ) -> Timing: ...


_PROVIDER: list[LatencyProvider] = []


def provide_latency(measure: LatencyProvider) -> None:
    """Install the latency measurement (``stereoq.deploy.layer_latency`` does when imported;
    ``stereoq train`` imports it)."""
    _PROVIDER[:] = [measure]


def latency_provider() -> LatencyProvider:
    """The installed latency measurement; a one-line error when there is none."""
    if not _PROVIDER:
        raise StereoqError(
            "stages.calibration.budget.cost: latency needs the deploy layer's measurement; "
            "import stereoq.deploy.layer_latency first (stereoq train does), or set cost: macs"
        )
    return _PROVIDER[0]
