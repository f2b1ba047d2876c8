"""A float32 difference that is only a reference's rounding is rechecked in float64 before it is called DISAGREE.

The net (found by tests/test_random_nets.py): Captum's float32 secant over |Delta z| = 9.5e-7 at a sigmoid is off
by percents and multiplies contributions that cancel, so Captum differs from xshap by 3.6e-4 in float32; in
float64 the two agree to 1e-11."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import xshap


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.fc0, self.act0 = nn.Linear(8, 8), nn.Tanh()
        self.fc1, self.act1 = nn.Linear(8, 8), nn.Sigmoid()
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        h = x + self.act0(self.fc0(x))
        h = h + self.act1(self.fc1(h))
        return self.head(h)


def test_reference_rounding_is_not_a_disagreement():
    pytest.importorskip("captum")
    rng = np.random.default_rng(3)
    background = torch.tensor(rng.standard_normal((4, 8)), dtype=torch.float32)
    X = torch.tensor(1.5 * rng.standard_normal((2, 8)), dtype=torch.float32)
    report = xshap.crosscheck(Net().eval(), background, X, references=["captum"])
    captum = report.reference("captum")
    assert np.max(captum.max_abs_diff) > np.max(report.tolerance)  # a real float32 difference ...
    assert captum.verdict == "AGREE"  # ... that is not a disagreement
    assert captum.float64_diff is not None and np.max(captum.float64_diff) < 1e-9
    assert any("vanish in float64" in note for note in report.notes)
