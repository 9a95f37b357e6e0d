"""Grid maps -> frame maps: the Gaussian is scipy's gaussian_filter (kernel and borders)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from model.postprocess import gaussian_smooth


@pytest.mark.parametrize("shape", [(37, 53), (5, 90), (200, 3)])
def test_gaussian_smoothing_equals_scipy(shape):
    values = np.random.default_rng(1).random(shape).astype(np.float32)
    ours = gaussian_smooth(torch.from_numpy(values)[None], 4.0)[0].numpy()
    np.testing.assert_allclose(ours, gaussian_filter(values, sigma=4), atol=1e-5)
