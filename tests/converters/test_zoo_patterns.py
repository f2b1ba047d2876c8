"""Patterns of model-zoo architectures that once failed to convert, rebuilt in plain torch (torchvision does not
load beside this project's CPU torch; benchmarks/model_families.py runs the real models in their own environment).

Each: the JAX forward equals torch's, and DeepSHAP through it is complete (sum phi = f(x) - E f).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

import xshap
from tests.converters.helpers import assert_converts


def assert_complete(model: torch.nn.Module, background: torch.Tensor, x: torch.Tensor) -> None:
    values = xshap.DeepExplainer(model, background).shap_values(x)  # xshap's own completeness check runs too
    with torch.no_grad():
        f, expected = model(x).double().numpy(), model(background).double().numpy().mean(axis=0)
    totals = np.asarray(values, np.float64).reshape(x.shape[0], -1, f.shape[1]).sum(axis=1)
    np.testing.assert_allclose(totals, f - expected, rtol=1e-4, atol=1e-5 * np.abs(f).max())


class CosineWindowAttention(torch.nn.Module):
    """torchvision's Swin V2 attention, one window: the key third of the qkv bias zeroed on a clone
    (``aten.zero`` once functionalised), cosine attention (``F.normalize``), a clamped exp logit scale, the
    continuous position bias through ``16 * sigmoid``."""

    def __init__(self, dim: int = 8, heads: int = 2, tokens: int = 4):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.logit_scale = torch.nn.Parameter(torch.log(10 * torch.ones(heads, 1, 1)))
        self.bias = torch.nn.Parameter(torch.randn(heads, tokens, tokens))
        self.head = torch.nn.Linear(tokens * dim, 3)

    def forward(self, x):
        b, n, c = x.shape
        qkv_bias = self.qkv.bias.clone()
        length = qkv_bias.numel() // 3
        qkv_bias[length : 2 * length].zero_()
        qkv = F.linear(x, self.qkv.weight, qkv_bias).reshape(b, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        attn = (attn + 16 * torch.sigmoid(self.bias)).softmax(dim=-1)
        out = self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))
        return self.head(out.flatten(1))


def test_zeroed_bias_slice_and_cosine_attention():
    torch.manual_seed(0)
    model = CosineWindowAttention().eval()
    background, x = torch.randn(6, 4, 8), torch.randn(3, 4, 8)
    converted = assert_converts(model, x)
    assert any(p.op.startswith("aten.zero.") for p in converted.ops)
    assert_complete(model, background, x)
