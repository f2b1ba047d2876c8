"""Forward checks for the normalisation ops (converters/ops/norm.py) and the extra activations
(converters/ops/activation_extra.py): converted JAX forward == torch forward, and layer-by-layer validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import converters
from converters.registry import lookup
from tests.converters.helpers import assert_converts


class Lambda(nn.Module):
    """``fn(Linear(x))``: the Linear acts on the last axis, so weights are involved and values are mixed."""

    def __init__(self, fn, width=6):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.fc(x))


def _randomise_affine(module: nn.Module) -> nn.Module:
    """Give a norm layer's weight and bias values other than their ones / zeros defaults."""
    with torch.no_grad():
        if getattr(module, "weight", None) is not None:
            module.weight.uniform_(0.5, 1.5)
        if getattr(module, "bias", None) is not None:
            module.bias.normal_()
    return module


def _with_running_stats(module: nn.Module, row_shape: tuple[int, ...]) -> nn.Module:
    """A few train-mode forwards on shifted, scaled data, so the running statistics are non-trivial."""
    module.train()
    with torch.no_grad():
        for _ in range(3):
            module(torch.randn(8, *row_shape) * 3.0 + 1.5)
    return _randomise_affine(module).eval()


def _set_stats(module: nn.Module) -> nn.Module:
    """Set running statistics directly (mean far from zero, variance far from one)."""
    with torch.no_grad():
        module.running_mean.uniform_(-2.0, 2.0)
        module.running_var.uniform_(0.2, 5.0)
    return _randomise_affine(module).eval()


# -- normalisations: (module factory, row shape) ------------------------------------------------------------

_RM = torch.linspace(-1.0, 1.0, 4)
_RV = torch.linspace(0.5, 2.0, 4)
_W4 = torch.linspace(0.5, 1.5, 4)
_B4 = torch.linspace(-0.3, 0.3, 4)
_W6 = torch.linspace(0.5, 1.5, 6)
_B6 = torch.linspace(-0.3, 0.3, 6)

NORMS = {
    # batch norm, eval mode, with running statistics from training forwards or set directly
    "batchnorm1d_2d_input": (lambda: _with_running_stats(nn.BatchNorm1d(6), (6,)), (6,)),
    "batchnorm1d_3d_input": (lambda: _with_running_stats(nn.BatchNorm1d(4), (4, 6)), (4, 6)),
    "batchnorm3d": (lambda: _with_running_stats(nn.BatchNorm3d(2), (2, 3, 4, 6)), (2, 3, 4, 6)),
    "batchnorm2d_set_stats_eps": (lambda: _set_stats(nn.BatchNorm2d(3, eps=0.1)), (3, 4, 6)),
    "batchnorm2d_no_affine": (lambda: _set_stats(nn.BatchNorm2d(3, affine=False)), (3, 4, 6)),
    "batch_norm_functional": (lambda: Lambda(lambda h: F.batch_norm(h, _RM, _RV, _W4, _B4, eps=1e-3), width=4), (4,)),
    # layer norm
    "layernorm_last": (lambda: _randomise_affine(nn.LayerNorm(6)), (6,)),
    "layer_norm_functional": (lambda: Lambda(lambda h: F.layer_norm(h, (6,), _W6, _B6)), (3, 6)),
    "layernorm_two_axes": (lambda: _randomise_affine(nn.LayerNorm([4, 6])), (4, 6)),
    "layernorm_three_axes_4d": (lambda: _randomise_affine(nn.LayerNorm([3, 4, 6], eps=1e-3)), (3, 4, 6)),
    "layernorm_no_affine": (lambda: nn.LayerNorm([4, 6], elementwise_affine=False), (4, 6)),
    "layernorm_no_bias": (lambda: _randomise_affine(nn.LayerNorm(6, bias=False)), (4, 6)),
    # group norm
    "groupnorm": (lambda: _randomise_affine(nn.GroupNorm(2, 4)), (4, 6)),
    "groupnorm_2d": (lambda: _randomise_affine(nn.GroupNorm(3, 6)), (6, 4, 6)),
    "groupnorm_one_group": (lambda: _randomise_affine(nn.GroupNorm(1, 4)), (4, 3, 6)),
    "groupnorm_no_affine": (lambda: nn.GroupNorm(2, 4, affine=False), (4, 3, 6)),
    "group_norm_functional": (lambda: Lambda(lambda h: F.group_norm(h, 2, _W4, _B4, eps=1e-3)), (4, 6)),
    # instance norm
    "instancenorm1d": (lambda: nn.InstanceNorm1d(4), (4, 6)),
    "instancenorm2d_affine": (lambda: _randomise_affine(nn.InstanceNorm2d(3, affine=True)), (3, 4, 6)),
    "instancenorm3d": (lambda: nn.InstanceNorm3d(2), (2, 3, 4, 6)),
    "instancenorm2d_running_stats": (
        lambda: _with_running_stats(nn.InstanceNorm2d(3, affine=True, track_running_stats=True), (3, 4, 6)),
        (3, 4, 6),
    ),
    # RMS norm
    "rmsnorm": (lambda: _randomise_affine(nn.RMSNorm(6)), (4, 6)),
    "rmsnorm_two_axes_eps": (lambda: _randomise_affine(nn.RMSNorm([4, 6], eps=1e-3)), (4, 6)),
    "rms_norm_functional": (lambda: Lambda(lambda h: F.rms_norm(h, (6,))), (6,)),
}


class _Front(nn.Module):
    """A Linear on the last axis in front of the module under test."""

    def __init__(self, module: nn.Module, width: int):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.norm = module

    def forward(self, x):
        return self.norm(self.fc(x))


@pytest.mark.parametrize("name", sorted(NORMS))
def test_norm_matches_torch(name):
    torch.manual_seed(0)
    factory, row_shape = NORMS[name]
    module = factory()
    model = module if isinstance(module, Lambda) else _Front(module, row_shape[-1])
    x = torch.randn(5, *row_shape) * 2.0 + 0.5
    assert_converts(model, x)


@pytest.mark.parametrize("row_shape", [(3, 6), (3, 4, 6)])
def test_batchnorm_without_running_stats_is_refused_by_name(row_shape):
    """track_running_stats=False normalises with batch statistics even in eval mode: a row's output depends on
    the other rows, which per-row DeepSHAP cannot honour, so the converter refuses it and names the layer."""
    norm = (
        nn.BatchNorm1d(3, track_running_stats=False)
        if len(row_shape) == 2
        else nn.BatchNorm2d(3, affine=False, track_running_stats=False)
    )
    model = _Front(norm, row_shape[-1]).eval()
    with pytest.raises(converters.BatchDependenceError, match=r"norm \[BatchNorm[12]d\] has track_running_stats=False"):
        converters.from_torch(model, torch.randn(4, *row_shape))


# -- activations -------------------------------------------------------------------------------------------

_LO = torch.linspace(-2.0, 0.0, 6)
_HI = torch.linspace(0.5, 3.0, 6)


def _inplace(fn):
    """Apply an in-place op to a copy of the input (so the other forms in a family see the input unchanged)."""

    def apply(h):
        h = h.clone()
        out = fn(h)
        return h if out is None else out

    return apply


class Family(nn.Module):
    """Several forms of one op (module, in-place module, functional, torch.*) on the same input, concatenated
    on the last axis. ``validate`` checks every op of the graph on its own scale, so none hides behind another."""

    def __init__(self, fns, width=6):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.fns = fns
        for i, fn in enumerate(fns):  # register the modules so that they are named in the provenance
            if isinstance(fn, nn.Module):
                self.add_module(f"f{i}", fn)

    def forward(self, x):
        h = self.fc(x)
        return torch.cat([fn(h) for fn in self.fns], dim=-1)


ACTIVATIONS = {
    "gelu": [nn.GELU(), F.gelu],
    "gelu_tanh": [nn.GELU(approximate="tanh"), lambda h: F.gelu(h, approximate="tanh")],
    "silu": [nn.SiLU(), _inplace(nn.SiLU(inplace=True)), F.silu],
    "mish": [nn.Mish(), _inplace(nn.Mish(inplace=True)), F.mish],
    "hardtanh": [
        nn.Hardtanh(),
        nn.Hardtanh(-0.5, 2.0),
        _inplace(lambda h: F.hardtanh_(h, -1.5, 0.5)),
        lambda h: F.hardtanh(h, -2, 3),
    ],
    "relu6": [nn.ReLU6(), _inplace(nn.ReLU6(inplace=True)), F.relu6],
    "hardswish": [nn.Hardswish(), _inplace(nn.Hardswish(inplace=True)), F.hardswish],
    "hardsigmoid": [nn.Hardsigmoid(), _inplace(nn.Hardsigmoid(inplace=True)), F.hardsigmoid],
    "logsigmoid": [nn.LogSigmoid(), F.logsigmoid],
    "selu": [nn.SELU(), _inplace(nn.SELU(inplace=True)), torch.selu],
    "celu": [nn.CELU(), nn.CELU(alpha=0.5), _inplace(lambda h: F.celu_(h, 2.0))],
    "threshold": [
        nn.Threshold(0.1, 20.0),
        _inplace(nn.Threshold(-0.5, -3.0, inplace=True)),
        lambda h: F.threshold(h, 1.0, 0.0),
    ],
    "clamp_scalar": [
        lambda h: torch.clamp(h, -0.5, 0.5),
        lambda h: torch.clamp(h, min=-0.5),
        lambda h: torch.clamp(h, max=0.7),
        lambda h: torch.clamp(h, 1.0, -1.0),  # min > max: torch returns max everywhere
        lambda h: torch.clamp_min(h, -0.5),
        lambda h: torch.clamp_max(h, 0.5),
        _inplace(lambda h: h.clamp_(0.0, 1.0)),
        lambda h: torch.clip(h, -1.0, 1.0),
    ],
    "clamp_tensor": [
        lambda h: torch.clamp(h, _LO, _HI),
        lambda h: torch.clamp(h, max=_HI),
        lambda h: torch.clamp(h, min=_LO),
        lambda h: torch.clamp_min(h, _LO),
        lambda h: torch.clamp_max(h, _HI),
    ],
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_matches_torch(name):
    torch.manual_seed(0)
    model = Family(ACTIVATIONS[name])
    x = torch.randn(5, 6) * 4.0  # wide enough to reach every piece of the piecewise activations
    converted = assert_converts(model, x)
    assert len(converted.ops) >= len(ACTIVATIONS[name])


def test_softsign_matches_torch():
    torch.manual_seed(0)
    assert_converts(Family([nn.Softsign(), F.softsign]), torch.randn(5, 6) * 4.0)


@pytest.mark.parametrize(
    ("make", "row_shape"),
    [
        (lambda: nn.PReLU(), (6,)),
        (lambda: nn.PReLU(init=0.1), (4, 3, 6)),
        (lambda: nn.PReLU(4), (4,)),
        (lambda: nn.PReLU(4), (4, 6)),
        (lambda: nn.PReLU(4), (4, 3, 6)),
    ],
    ids=["single_2d", "single_4d", "per_channel_2d", "per_channel_3d", "per_channel_4d"],
)
def test_prelu_matches_torch(make, row_shape):
    torch.manual_seed(0)
    prelu = make()
    with torch.no_grad():
        prelu.weight.uniform_(-0.5, 0.5)
    model = _Front(prelu, row_shape[-1])
    assert_converts(model, torch.randn(5, *row_shape) * 2.0)


def test_prelu_functional():
    torch.manual_seed(0)
    weight = torch.tensor([0.1, -0.2, 0.3, 0.4])
    assert_converts(Lambda(lambda h: F.prelu(h.view(h.shape[0], 4, 6), weight), width=24), torch.randn(5, 24))


# softmax / log_softmax on every non-batch axis. Axis 0 is the batch axis, which xshap maps over one row at a
# time (a softmax across rows would tie the rows together), so it is not tested.
@pytest.mark.parametrize("dim", [1, 2, 3, -1, -2])
def test_softmax_matches_torch(dim):
    torch.manual_seed(0)
    forms = [
        lambda h: F.softmax(h, dim=dim),
        nn.Softmax(dim=dim),
        lambda h: torch.softmax(h, dim),
        lambda h: F.log_softmax(h, dim=dim),
        nn.LogSoftmax(dim=dim),
    ]
    assert_converts(Family(forms), torch.randn(4, 3, 5, 6) * 3.0)


def test_softmax_other_forms():
    torch.manual_seed(0)
    forms = [nn.Softmax2d(), lambda h: torch.log_softmax(h, -3), lambda h: h.softmax(-2), lambda h: h.log_softmax(1)]
    assert_converts(Family(forms), torch.randn(4, 3, 5, 6) * 3.0)


# -- ops torch.export does not emit here (other decompositions, other devices): against torch.ops.aten ------

aten = torch.ops.aten
_X = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(1)) * 2.0 + 0.5
_C = dict(
    w=torch.linspace(0.5, 1.5, 4),
    b=torch.linspace(-0.5, 0.5, 4),
    rm=torch.linspace(-1, 1, 4),
    rv=torch.linspace(0.3, 3, 4),
)

DIRECT = {
    "native_layer_norm": (aten.native_layer_norm.default, (_X, [3, 5], None, None, 1e-5)),
    "native_layer_norm_affine": (aten.native_layer_norm.default, (_X, [5], torch.linspace(0.5, 1.5, 5), None, 1e-5)),
    "native_group_norm": (aten.native_group_norm.default, (_X, _C["w"], _C["b"], 2, 4, 15, 2, 1e-5)),
    "native_batch_norm_eval": (
        aten.native_batch_norm.default,
        (_X, _C["w"], _C["b"], _C["rm"], _C["rv"], False, 0.1, 1e-5),
    ),
    "batch_norm": (aten.batch_norm.default, (_X, _C["w"], _C["b"], _C["rm"], _C["rv"], False, 0.1, 1e-5, False)),
    "batch_norm_no_update": (aten._batch_norm_no_update.default, (_X, None, _C["b"], _C["rm"], _C["rv"], 0.1, 1e-5)),
    "native_batch_norm_legit_no_stats": (aten._native_batch_norm_legit.no_stats, (_X, _C["w"], None, True, 0.1, 1e-5)),
    "fused_rms_norm": (aten._fused_rms_norm.default, (_X, [3, 5], None, 1e-6)),
    "softmax_internal": (aten._softmax.default, (_X, 2, False)),
    "log_softmax_internal": (aten._log_softmax.default, (_X, -1, False)),
    "prelu_kernel": (aten._prelu_kernel.default, (_X, _C["w"].view(1, 4, 1, 1) - 1.0)),
    "log_sigmoid_forward": (aten.log_sigmoid_forward.default, (_X,)),
}


@pytest.mark.parametrize("name", sorted(DIRECT))
def test_registered_op_matches_aten(name):
    op, args = DIRECT[name]
    impl = lookup(op)
    assert impl is not None
    expected = op(*args)
    actual = impl(*(np.asarray(a) if isinstance(a, torch.Tensor) else a for a in args))
    expected = expected if isinstance(expected, tuple) else (expected,)
    actual = actual if isinstance(actual, tuple) else (actual,)
    assert len(actual) == len(expected)
    # the first output is the value; the statistics (mean, rstd) follow, shaped as torch shapes them
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert tuple(np.shape(a)) == tuple(e.shape), (i, np.shape(a), e.shape)
        if e.numel() and not (name == "log_sigmoid_forward" and i == 1):  # that one is backward scratch space
            e = e.numpy()
            assert np.max(np.abs(np.asarray(a) - e)) <= 1e-5 * max(np.max(np.abs(e)), 1.0), i


def test_ops_registered():
    names = set(converters.supported_ops())
    for op in [
        "aten.gelu",
        "aten.silu",
        "aten.softmax.int",
        "aten._native_batch_norm_legit_no_training",
        "aten.layer_norm",
    ]:
        assert op in names
