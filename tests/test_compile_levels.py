"""How xshap chooses a chunk's output form on a CPU (xshap.explain.explainer.vmap_outputs, row_flops): models that
do little work per row vmap one pullback over the outputs, where compiling is all the cost; real CNNs keep the
unrolled loop, which runs faster."""

from __future__ import annotations

import torch

import xshap
from xshap.explain.explainer import CPU_VMAP_ROW_FLOPS, row_flops, vmap_outputs


def test_row_flops_counts_products_and_elementwise_results():
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)).eval()
    explainer = xshap.DeepExplainer(model, torch.randn(4, 16))
    flops = row_flops(explainer._deeplift.program)
    products, weights = 2 * 16 * 32 + 2 * 32 * 1, 16 * 32 + 32 + 32 + 1
    assert products <= flops <= products + 2 * weights + 10 * (32 + 32 + 1)  # the products, then elementwise results
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(8 * 64, 2)
    ).eval()
    explainer = xshap.DeepExplainer(conv, torch.randn(4, 3, 8, 8))
    products = 2 * (8 * 8 * 8) * (3 * 3 * 3) + 2 * 8 * 64 * 2
    assert products <= row_flops(explainer._deeplift.program) <= products + 10 * 8 * 64


def test_small_models_vmap_their_outputs_on_a_cpu_and_real_cnns_unroll():
    small = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)).eval()
    explainer = xshap.DeepExplainer(small, torch.randn(4, 16))
    assert row_flops(explainer._deeplift.program) < CPU_VMAP_ROW_FLOPS
    assert vmap_outputs("cpu", explainer._deeplift)
    wide = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(64, 64, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 10),
    ).eval()
    explainer = xshap.DeepExplainer(wide, torch.randn(2, 3, 32, 32))
    assert row_flops(explainer._deeplift.program) > CPU_VMAP_ROW_FLOPS  # 2 * 32*32*64 * 64*9 = 7.5e7 a row
    assert not vmap_outputs("cpu", explainer._deeplift)
    assert vmap_outputs("gpu", explainer._deeplift)
