"""Engine tests run single-threaded: on a shared 2-core machine OpenMP spinning across
oversubscribed cores makes tiny convolutions an order of magnitude slower."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
