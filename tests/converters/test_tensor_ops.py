"""Per-op forward checks of the general tensor ops: reductions (reduce.py), tensor ops (tensor.py) and
indexing (indexing.py), each in a small module checked against torch and layer by layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import converters
from tests.converters.helpers import assert_converts


class Lambda(torch.nn.Module):
    """``fn`` applied to a Linear of the float input (so weights are involved); extra inputs passed on."""

    def __init__(self, fn, width=12):
        super().__init__()
        self.fc = torch.nn.Linear(width, width)
        self.fn = fn

    def forward(self, x, *extra):
        return self.fn(self.fc(x), *extra)


def per_row(fn):
    """Apply a whole-tensor op to each row on its own (the batch of one sees exactly its row)."""
    return lambda h: torch.stack([fn(row) for row in h])


def v3(h):
    return h.view(-1, 3, 4)


def v4(h):
    return h.view(-1, 2, 3, 2)


def flat_cat(*tensors):
    """Several per-row results of any shapes as one (N, k) output."""
    return torch.cat([t.flatten(1) for t in tensors], 1)


def _const(values, dtype=torch.long):
    return torch.tensor(values, dtype=dtype)


def _batched(values, h):
    """A constant integer index with a batch axis matching h's (one row when exported)."""
    index = _const(values)
    return index.expand(h.shape[0], *index.shape[1:])


def _setitem(h):
    h = h.clone()
    h[:, 1:3] += 1.0  # slice_scatter and copy
    h[:, 5] = 0.0  # select_scatter
    return h


def _index_put(h):
    h = v3(h).clone()
    h[:, _const([0, 2])] = h[:, :2] * 2  # index_put with a None entry
    h[h > 0.5] = 0.5  # index_put with a boolean mask and one value
    rows = torch.arange(h.shape[0])[:, None]
    return h.index_put((rows, _const([0, 0, 1]), _const([2, 2, 3])), h[:, 0, :3] * 3, accumulate=True)


def _rows(fn):
    """Like per_row, with the per-row result as a column to add to (N, k) results."""
    return lambda h: per_row(fn)(h)[:, None]


REDUCE = {
    "mean": lambda h: flat_cat(
        v3(h).mean(-1),
        _rows(lambda r: r.mean())(h),
        v3(h).mean(1, dtype=torch.float32),
        v3(h) - v3(h).mean((1, 2), keepdim=True),
    ),
    "sum": lambda h: flat_cat(
        v3(h).sum(-1),
        _rows(lambda r: r.sum())(h),
        v3(h).sum(1),
        v3(h) * v3(h).sum((1, 2), keepdim=True),
        v3(h).sum(-1, dtype=torch.float32),
        (v3(h) > 0).sum(-1).float(),
    ),
    "max_min_amax_amin": lambda h: flat_cat(
        v3(h).max(1).values,
        v3(h).max(1).indices.float(),
        *v3(h).min(-1, keepdim=True),
        _rows(lambda r: r.max())(h),
        _rows(lambda r: r.min())(h),
        v3(h).amax((1, 2), keepdim=True),
        v3(h).amin(-1, keepdim=True),
    ),
    "argmax_argmin": lambda h: flat_cat(
        v3(h).argmax(-1).float(),
        v3(h).argmin(1, keepdim=True).float(),
        per_row(lambda r: r.argmax())(h).float()[:, None],
    ),
    "var_std": lambda h: flat_cat(
        v3(h).var(1),
        v3(h).std(-1, unbiased=False),
        torch.var(v3(h), (1, 2), correction=0, keepdim=True),
        _rows(lambda r: r.var())(h),
        _rows(lambda r: r.std())(h),
        *torch.var_mean(v3(h), -1),
        *torch.std_mean(v3(h), 1, correction=0),
    ),
    "prod_logsumexp_all_any": lambda h: flat_cat(
        v3(h).prod(-1),
        v3(h).logsumexp(-1),
        (v3(h) > -1).all(-1).float(),
        (v3(h) > 1).any(-1).float(),
    ),
}

TENSOR = {
    "einsum": lambda h: flat_cat(
        torch.einsum("bij,bkj->bik", v3(h), v3(h)),
        torch.einsum("b i j , j k -> b i k", v3(h), _const(np.linspace(-1, 1, 12).reshape(4, 3), torch.float32)),
        torch.einsum("...ij->...ji", v3(h)),
    ),
    "expand_repeat": lambda h: flat_cat(
        v3(h)[:, :1].expand(-1, 5, -1),
        v3(h)[:, :1, 1:2].expand(h.shape[0], 5, 4),
        h.expand(2, -1, -1).permute(1, 0, 2),  # a new leading axis
        v3(h).repeat(1, 2, 3),
        h.repeat(2, 1, 1).permute(1, 0, 2),  # a new leading axis
    ),
    "split_chunk": lambda h: flat_cat(
        *v3(h).split(3, dim=-1)[::-1], *v3(h).split([1, 3], dim=-1)[::-1], *v3(h).chunk(3, -1), v3(h).chunk(2, 1)[1]
    ),
    "unbind_stack": lambda h: flat_cat(torch.stack(v3(h).unbind(1)[::-1], 1), torch.stack([v3(h), 2 * v3(h)], -1)),
    "pad_constant": lambda h: flat_cat(
        F.pad(v3(h), (1, 2)),
        F.pad(v3(h), (1, 2, 0, 1), value=3.5),
        torch.nn.ZeroPad2d((1, 0, 2, 1))(v4(h)),
        torch.constant_pad_nd(v3(h), (1, -1, -1, 2), 2.0),  # negative pads crop
    ),
    "pad_reflect": lambda h: flat_cat(F.pad(v3(h), (1, 2), mode="reflect"), F.pad(v4(h), (1, 1, 1, 1), mode="reflect")),
    "pad_replicate": lambda h: flat_cat(
        F.pad(v3(h), (2, 1), mode="replicate"), F.pad(v4(h), (1, 0, 0, 2), mode="replicate")
    ),
    "pad_circular": lambda h: flat_cat(
        F.pad(v3(h), (1, 2), mode="circular"), F.pad(v4(h), (1, 1, 2, 0), mode="circular")
    ),
    "where": lambda h: flat_cat(
        torch.where(h > 0, h, h * 3),
        torch.where(h > 0.1, h, 0.0),
        torch.where(h > 0.2, 1.0, h),
        torch.where(h > 0.3, 1.0, -2.0) * h,
    ),
    "pow": lambda h: flat_cat(h**2, h.abs().pow(0.5), h**3, h.abs() ** h, 2**h),
    "unary_math": lambda h: flat_cat(
        h.abs().sqrt(),
        (h.abs() + 1).rsqrt(),
        h.exp(),
        (h.abs() + 0.1).log(),
        h.abs().log1p(),
        h.expm1(),
        (h.abs() + 0.1).log2(),
        (h.abs() + 0.1).log10(),
        h.exp2(),
        h.abs(),
        h.sign(),
        h.square(),
        (h.abs() + 0.5).reciprocal(),
        torch.erf(h),
    ),
    "trig_rounding": lambda h: flat_cat(
        h.sin(),
        h.cos(),
        (0.3 * h).tan(),
        torch.atan2(h, h.roll(1, -1)),
        (3 * h).floor(),
        (3 * h).ceil(),
        (3 * h).round(),
        (3 * h).trunc(),
    ),
    "maximum_minimum": lambda h: flat_cat(
        torch.maximum(h, h.flip(-1)), torch.minimum(h, 0.5 * h), torch.max(h, h.flip(-1)), torch.min(h, -h)
    ),
    "cumsum_cumprod": lambda h: flat_cat(
        v3(h).cumsum(-1), v3(h).cumsum(1), (v3(h) > 0).cumsum(-1).float(), v3(h).cumprod(-1)
    ),
    "masked_fill": lambda h: flat_cat(h.masked_fill(h > 0.2, -1e4), h.masked_fill(h < 0, torch.tensor(2.0))),
    "arange": lambda h: flat_cat(
        v3(h) + torch.arange(4),
        v3(h) * torch.arange(1, 9, 2, dtype=torch.float32),
        v3(h) + torch.arange(0.5, 2.5, 0.5),
        v3(h) + torch.arange(2, 6),
    ),
    "made_from_tensors": lambda h: flat_cat(
        torch.full_like(v3(h), 2.5) * v3(h),
        v3(h) + h.new_ones(4) + h.new_zeros((3, 4)) + h.new_full((4,), 0.5),
        torch.ones_like(v3(h)).fill_(3.0) * v3(h),
        torch.zeros_like(v3(h)).fill_(torch.tensor(2.0)) * v3(h),
    ),
    "comparisons": lambda h: flat_cat(
        (h > 0).float(),
        (h >= 0.5).float(),
        (h < -0.2).float(),
        (h <= 0.1).float(),
        (h > h.flip(-1)).float(),
        (h <= h.roll(1, -1)).float(),
        ((3 * h).round() == 0).float(),
        ((3 * h).round() != 1).float(),
        (h == h.flip(-1)).float(),
    ),
    "logic": lambda h: flat_cat(
        (((h > 0) & (h < 1)) | ~(h > -0.5) ^ (h < 0.3)).float(),
        torch.logical_and(h > 0, h < 1).float(),
        torch.logical_or(h > 1, h < -1).float(),
        torch.logical_xor(h > 0, h > 0.5).float(),
        torch.logical_not(h > 0).float(),
    ),
    "dtype_conversions": lambda h: flat_cat(
        (h > 0).type_as(h) * h, (3 * h).to(torch.int64).to(h), (h > 0).to(h.dtype), h.double().float()
    ),
    "flip_roll_tril_triu": lambda h: flat_cat(
        v3(h).flip(1), v3(h).roll(1, -1), v3(h).roll((1, -2), (1, 2)), v3(h).tril(), v3(h).triu(1)
    ),
    "setitem_slice_select": _setitem,
}

INDEXING = {
    "index_select_gather_take": lambda h: flat_cat(
        v3(h).index_select(2, _const([0, 3, 3])),
        v3(h).gather(2, _batched([[[0, 3], [1, 1], [2, 0]]], h)),
        v3(h).gather(1, _batched([[[2, 0], [0, 1]]], h)),  # index smaller than the input
        torch.take_along_dim(v3(h), _batched([[[1], [3], [0]]], h), 2),
        torch.take_along_dim(v3(h), _const([[[1, 2]]]), 2),  # broadcast over the rows
    ),
    "index_one_tensor": lambda h: flat_cat(
        v3(h)[:, _const([0, 2])],
        v3(h)[:, _const([-1, 0])],
        v3(h)[..., _const([3, 0, 1])],
        v3(h)[:, :, _const([[0, 1], [3, 2]])],
    ),
    "index_several_tensors": lambda h: flat_cat(
        v3(h)[:, _const([0, 2]), _const([1, 3])],
        v3(h)[:, _const([[0], [2]]), _const([1, 3])],
        v4(h)[:, _const([1, 0]), :, _const([0, 1])].permute(1, 0, 2),  # separated: index axes go first
    ),
    "index_put": _index_put,
    "scatter": lambda h: flat_cat(
        v3(h).scatter(2, _batched([[[0], [3], [1]]], h), 1.5),
        v3(h).scatter(2, _batched([[[0, 2], [3, 1], [1, 0]]], h), v3(h) * 10),
        v3(h).scatter_add(2, _batched([[[0, 0, 1, 1], [3, 3, 3, 0], [1, 2, 1, 2]]], h), v3(h)),
    ),
}

OPS = {**REDUCE, **TENSOR, **INDEXING}


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_matches_torch(name):
    torch.manual_seed(0)
    model = Lambda(OPS[name])
    x = torch.randn(4, 12)
    assert_converts(model, x)


# -- integer inputs ------------------------------------------------------------------------------------------------


class TokenClassifier(torch.nn.Module):
    def __init__(self, vocab=10, dim=4, padding_idx=None):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim, padding_idx=padding_idx)
        self.fc = torch.nn.Linear(dim, 3)

    def forward(self, tokens):
        return self.fc(self.emb(tokens).mean(1))


@pytest.mark.parametrize("padding_idx", [None, 0])
def test_embedding_token_input(padding_idx):
    torch.manual_seed(0)
    tokens = torch.randint(0, 10, (5, 7))
    tokens[0, :2] = 0
    converted = assert_converts(TokenClassifier(padding_idx=padding_idx), tokens)
    assert any(p.op.startswith("aten.embedding") for p in converted.ops)


class GatherByInput(torch.nn.Module):
    """A float input and an integer input: the integer one picks what is read."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(6, 5)
        self.fc = torch.nn.Linear(5, 5)

    def forward(self, x, idx):
        h = self.fc(x)
        picked = h.gather(1, idx) + torch.take_along_dim(h, idx, 1)
        return picked * self.emb(idx).sum(-1) + h.index_select(1, _const([4, 0]))[:, :1]


def test_float_and_integer_inputs():
    torch.manual_seed(0)
    x = torch.randn(4, 5)
    idx = torch.randint(0, 5, (4, 3))
    assert_converts(GatherByInput(), x, idx)


def test_boolean_mask_indexing_is_refused():
    """x[mask] has a data-dependent shape: refused at conversion (or at the latest when called)."""
    model = Lambda(lambda h: h[:, _const([True, False] * 6, torch.bool)])
    x = torch.randn(2, 12)
    with pytest.raises((converters.ConversionError, NotImplementedError)):
        converters.from_torch(model, x)(x)


def test_registered_names():
    from converters.registry import supported_ops

    ops = set(supported_ops())
    for name in [
        "aten.mean.dim",
        "aten.sum.dim_IntList",
        "aten.max.dim",
        "aten.einsum",
        "aten.pad",
        "aten.index.Tensor",
    ]:
        assert name in ops
