"""Forward checks of the norms (converters/ops/linalg.py) and of addcmul / addcdiv / lerp (arithmetic.py):
converted JAX forward == torch forward within 1e-5, and layer by layer. Each case checks one op's variants side
by side: every ``ord`` / ``p`` (1, 2, inf, -inf, 0, fractional, negative, 3), one axis, several, none, keepdim
both ways, a dtype argument, complex inputs, and rows of zeros (the norm of 0)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from converters.registry import supported_ops
from tests.converters.helpers import assert_converts

INF = math.inf
ORDS = [1, 2, INF, -INF, 0, 0.5, 3, -1.5]


class Lambda(torch.nn.Module):
    """``fn(Linear(x))`` with every result flattened per row and concatenated."""

    def __init__(self, fn, width=12):
        super().__init__()
        self.fc = torch.nn.Linear(width, width)
        self.fn = fn

    def forward(self, x):
        out = self.fn(self.fc(x))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return torch.cat([o.reshape(o.shape[0], -1) for o in out], 1)


def v3(h):  # (N, 3, 4)
    return h.view(-1, 3, 4)


def rows(fn):
    """A whole-tensor norm applied to each row alone (the batch of one sees exactly its row)."""
    return lambda h: torch.stack([fn(row) for row in h])[:, None]


def spectrum(h):
    return torch.complex(v3(h)[:, :, :2], v3(h)[:, :, 2:])


CASES = {
    "vector_norm_ords": lambda h: [
        torch.linalg.vector_norm(v3(h), ord=p, dim=dim, keepdim=keepdim)
        for p in ORDS
        for dim, keepdim in [(-1, False), ((1, 2), True)]
    ],
    "vector_norm_variants": lambda h: [
        rows(lambda r: torch.linalg.vector_norm(r))(h),  # every axis
        rows(lambda r: torch.linalg.vector_norm(r, ord=INF))(h),
        torch.linalg.vector_norm(v3(h), dim=1, dtype=torch.float64).float(),
        torch.linalg.vector_norm(spectrum(h), dim=-1),  # complex input
        torch.linalg.vector_norm(spectrum(h), ord=1, dim=(1, 2)),
    ],
    "torch_norm_and_x_norm": lambda h: [
        torch.norm(v3(h), p=2, dim=(1, 2), keepdim=True),
        torch.norm(v3(h), p="fro", dim=(1, 2)),
        torch.norm(v3(h), p=1, dim=-1),
        torch.norm(v3(h), p=INF, dim=1),
        torch.norm(v3(h), p=0.5, dim=-1),
        v3(h).norm(dim=-1, keepdim=True),
        rows(torch.norm)(h),
    ],
    "normalize_and_zero_rows": lambda h: [
        F.normalize(v3(h), dim=-1),
        F.normalize(v3(h), p=1, dim=1),
        F.normalize(v3(h) * (h[:, :4] > 0).unsqueeze(1), dim=-1),  # some rows of zeros: eps clamps the norm
        F.normalize(0 * v3(h), dim=-1),  # the norm of 0 is 0, never NaN
        torch.norm(0 * h, dim=-1),
        torch.linalg.vector_norm(0 * h, 0.5, -1),
    ],
    "linalg_norm": lambda h: [
        torch.linalg.norm(v3(h), dim=-1),
        torch.linalg.norm(v3(h), ord=3, dim=1, keepdim=True),
        torch.linalg.norm(v3(h), dim=(1, 2)),  # matrix: Frobenius
        torch.linalg.norm(v3(h), ord="fro", dim=(1, 2)),
        *[torch.linalg.norm(v3(h), ord=p, dim=(1, 2)) for p in (1, -1, INF, -INF)],
        torch.linalg.norm(v3(h), ord=INF, dim=(2, 1), keepdim=True),  # rows and columns swapped
        rows(lambda r: torch.linalg.norm(r))(h),  # no dim, no ord: every entry
        rows(lambda r: torch.linalg.norm(r.view(12), ord=1))(h),  # no dim, a vector
        rows(lambda r: torch.linalg.norm(r.view(3, 4), ord=-INF))(h),  # no dim, a matrix
    ],
    "matrix_norms": lambda h: [
        torch.linalg.matrix_norm(v3(h)),
        torch.linalg.matrix_norm(v3(h), ord=1, keepdim=True),
        torch.linalg.matrix_norm(v3(h), ord="nuc"),
        torch.linalg.matrix_norm(v3(h), ord=2),
        torch.linalg.matrix_norm(v3(h), ord=-2, dim=(2, 1), keepdim=True),
        torch.linalg.matrix_norm(spectrum(h), ord=INF),
    ],
    "frobenius_legacy_norm_renorm": lambda h: [
        torch.frobenius_norm(v3(h), (1, 2)),
        torch.frobenius_norm(v3(h), (2,), keepdim=True),
        torch.ops.aten.norm.ScalarOpt_dim(v3(h), 3, [2], True),  # what older torch versions export
        torch.ops.aten.norm.ScalarOpt_dim(v3(h), None, [1, 2]),
        torch.ops.aten.norm.ScalarOpt_dim_dtype(v3(h), 1, [1], False, dtype=torch.float64).float(),
        torch.renorm(v3(h), 2, 0, 1.0),  # the whole row, by the batch axis
        torch.stack([torch.renorm(r, 1, 0, 0.7) for r in v3(h)]),  # per slice of each row
    ],
    "addcmul_addcdiv": lambda h: [
        torch.addcmul(h, h.flip(-1), h.roll(1, -1)),
        torch.addcmul(h, h, h.sigmoid(), value=-0.5),
        torch.addcdiv(h, h.flip(-1), h.abs() + 0.5),
        torch.addcdiv(h, h, 2 + h.tanh(), value=3.0),
    ],
    "lerp": lambda h: [
        torch.lerp(h, h.flip(-1), 0.3),
        torch.lerp(h, h.flip(-1), 0.8),  # the other side of torch's two formulas
        torch.lerp(h, 2 * h, h.sigmoid()),
        torch.lerp(h, torch.ones(12), torch.linspace(0, 1, 12)),
    ],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_matches_torch(name):
    torch.manual_seed(0)
    assert_converts(Lambda(CASES[name]), torch.randn(4, 12))


def test_registered_names():
    ops = set(supported_ops())
    for name in ["linalg_vector_norm", "linalg_norm", "linalg_matrix_norm", "frobenius_norm", "norm", "renorm"]:
        assert f"aten.{name}" in ops
    assert {"aten.addcmul", "aten.addcdiv", "aten.lerp.Scalar", "aten.lerp.Tensor"} <= ops
