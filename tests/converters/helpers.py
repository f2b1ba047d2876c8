"""Shared checks for converter tests: forward equal to torch's, and the layer-by-layer validation."""

from __future__ import annotations

import numpy as np
import torch

import converters


def assert_converts(model: torch.nn.Module, *inputs: torch.Tensor, rtol: float = 1e-5) -> converters.Converted:
    """Convert ``model`` and check its JAX forward equals torch's within ``rtol`` (max |diff| / max |torch|)."""
    model = model.eval()
    converted = converters.from_torch(model, inputs)
    with torch.no_grad():
        expected = model(*inputs).numpy()
    actual = np.asarray(converted(*inputs))
    assert actual.shape == expected.shape
    scale = max(np.max(np.abs(expected)), 1e-30)
    assert np.max(np.abs(actual - expected)) / scale <= rtol, np.max(np.abs(actual - expected)) / scale
    report = converted.validate(*inputs)
    assert report.ok, str(report)
    return converted
