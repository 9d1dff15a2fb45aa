import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stereoq.deploy.ort_runner import postprocess, resize_bilinear
from stereoq.models.postprocess import StereoNetPostProcess


@pytest.mark.parametrize("size", [(8, 16), (7, 5), (32, 64), (3, 3)])
def test_numpy_resize_matches_torch_bilinear(size: tuple[int, int]) -> None:
    x = torch.rand(2, 1, 4, 8)
    ref = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(resize_bilinear(x.numpy(), *size), ref.numpy(), atol=1e-6)


def test_numpy_postprocess_matches_the_model_post_processing() -> None:
    half = torch.rand(1, 1, 16, 32) * 0.5
    offset = torch.randn(1, 1, 32, 64) * 0.1
    ref = StereoNetPostProcess(maxdisp=96).final(half, offset)
    got = postprocess(half.numpy(), offset.numpy(), 96)
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-5)
    assert got.min() >= 0.0
