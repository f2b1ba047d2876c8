"""Layer and neuron attributions (issue 17): xshap.LayerExplainer, xshap.NeuronExplainer and the xshap.captum
drop-in, against Captum where its hooks are exact, and against exact properties (completeness against torch's
forward, the held values' reference computed in torch) where something goes around the layer."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import xshap
import xshap.captum as xc
from xshap.errors import InputError

RTOL = 1e-4


def close(mine, theirs, rtol=RTOL):
    mine, theirs = np.asarray(mine, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert mine.shape == theirs.shape, (mine.shape, theirs.shape)
    assert np.max(np.abs(mine - theirs), initial=0.0) <= rtol * max(1.0, np.max(np.abs(theirs)))


class Net(torch.nn.Module):
    """stem -> body, and a second input (a mask-like row scale) that multiplies the body's input."""

    def __init__(self, around: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.ReLU())
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
        self.around = around

    def forward(self, x, scale):
        z = self.stem(x)
        if self.around:  # a residual from the input around the stem
            z = z + x[:, :1]
        return self.body(z * scale)


@pytest.fixture(scope="module")
def rows():
    g = torch.Generator().manual_seed(1)
    x, bg = torch.randn(4, 5, generator=g), torch.randn(6, 5, generator=g)
    scale = torch.rand(4, 6, generator=g) + 0.5
    return x, bg, scale


def test_layer_output_equals_captum_with_a_per_row_argument(rows):
    """The stem's output, the scale given per row as an additional argument (held at the row's value, as Captum
    holds it): xshap's drop-in equals Captum's LayerDeepLiftShap and adds up to f(x) - f(baseline) per pair."""
    from captum.attr import LayerDeepLiftShap

    x, bg, scale = rows
    model = Net().eval()
    mine = xc.LayerDeepLiftShap(model, model.stem)
    model_copy = copy.deepcopy(model)
    theirs = LayerDeepLiftShap(model_copy, model_copy.stem)
    for target in range(3):
        a, delta = mine.attribute(x, bg, target=target, additional_forward_args=(scale,), return_convergence_delta=True)
        b = theirs.attribute(x, bg, target=target, additional_forward_args=(scale,))
        close(a.numpy(), b.detach().numpy())
        assert delta.shape == (len(x) * len(bg),) and float(delta.abs().max()) < 1e-5


def test_layer_explainer_holds_what_goes_around_the_layer(rows):
    """With a residual around the layer, the values add up to f(x) - mean_j tail(stem(bg_j), x's own residual):
    that reference is recomputed here in torch, and DeepExplainer((model, layer)) (shap's form) still refuses."""
    x, bg, scale = rows
    model = Net(around=True).eval()
    scale_bg = torch.ones(len(bg), 6)
    explainer = xshap.LayerExplainer(model, model.stem, [bg, scale_bg])
    result = explainer.explain([x, scale])
    assert result.values[0].shape == (4, 3, 6) and result.held
    with torch.no_grad():
        f = model(x, scale).numpy()
        z_bg = model.stem(bg)
        reference = np.stack(
            [model.body((z_bg + x[i, :1]) * scale[i]).mean(axis=0).numpy() for i in range(len(x))]
        )  # fmt: skip
    close(result.outputs, f, rtol=1e-5)
    close(result.reference_outputs, reference, rtol=1e-5)
    close(result.values[0].sum(axis=2), f - reference, rtol=1e-5)
    with pytest.raises(Exception, match="does not determine the output(.|\n)*LayerExplainer"):
        xshap.DeepExplainer((model, model.stem), [bg, scale_bg])  # the scale goes around the stem


class Shared(torch.nn.Module):
    """One Linear applied to two inputs: a module called twice."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.shared = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, a, b):
        return self.head(torch.relu(torch.cat([self.shared(a), self.shared(b)], dim=1)))


def test_a_module_called_twice_each_call_or_their_sum():
    g = torch.Generator().manual_seed(3)
    a, b, bg_a, bg_b = (torch.randn(n, 4, generator=g) for n in (3, 3, 5, 5))
    model = Shared().eval()
    with pytest.raises(InputError, match="called 2 times"):
        xshap.LayerExplainer(model, "shared", [bg_a, bg_b])
    each = xshap.LayerExplainer(model, "shared", [bg_a, bg_b], call="each").explain([a, b])
    assert [r.call for r in each] == [0, 1]
    for result in each:  # each call complete on its own, the other call held at the row's value
        close(result.values[0].sum(axis=2), result.outputs - result.reference_outputs, rtol=1e-5)
    with pytest.raises(InputError, match="call must be"):
        xshap.LayerExplainer(model, "shared", [bg_a, bg_b], call="all")
    total = xshap.LayerExplainer(model, "shared", [bg_a, bg_b], call="sum").explain([a, b])
    close(total.values[0], each[0].values[0] + each[1].values[0], rtol=1e-6)


class Wrapped(torch.nn.Module):
    """An identity module on the input (it emits no op) and a module whose result is never used."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.inputs = torch.nn.Identity()
        self.unused = torch.nn.ReLU()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))

    def forward(self, x):
        h = self.inputs(x)
        self.unused(h)
        return self.net(h)


def test_identity_and_unused_layers():
    g = torch.Generator().manual_seed(5)
    x, bg = torch.randn(3, 3, generator=g), torch.randn(4, 3, generator=g)
    model = Wrapped().eval()
    at_identity = xshap.LayerExplainer(model, model.inputs, bg).shap_values(x)
    close(at_identity, xshap.DeepExplainer(model, bg).shap_values(x), rtol=1e-6)
    unused = xshap.LayerExplainer(model, model.unused, bg).explain(x)
    assert np.all(unused.values[0] == 0)


def test_jax_pair_and_neurons(rows):
    """A JAX (first, rest) pair at first's output equals DeepExplainer on rest over first's values; a neuron of
    the torch stem equals Captum's NeuronDeepLiftShap and adds up to neuron(x) - E neuron(bg)."""
    import jax.numpy as jnp
    from captum.attr import NeuronDeepLiftShap

    x, bg, _ = rows
    w1, w2 = jnp.asarray(np.random.default_rng(0).normal(size=(5, 4))), jnp.asarray(np.ones((4, 2)))

    def first(v):
        return jnp.tanh(v @ w1)

    def rest(h):
        return jnp.maximum(h, 0.0) @ w2

    pair = xshap.LayerExplainer(first, rest, bg.numpy()).explain(x.numpy())
    direct = xshap.DeepExplainer(rest, np.asarray(first(bg.numpy()))).explain(np.asarray(first(x.numpy())))
    close(pair.values[0], direct.values[0], rtol=1e-5)

    model = Net().eval()
    stem = model.stem
    neuron = xshap.NeuronExplainer(stem, stem[1], 2, bg)
    phi = neuron.shap_values(x)
    with torch.no_grad():
        picked, picked_bg = stem(x)[:, 2].numpy(), stem(bg)[:, 2].numpy()
    close(phi.reshape(len(x), -1).sum(axis=1), picked - picked_bg.mean(), rtol=1e-5)
    stem_copy = copy.deepcopy(stem)
    theirs = NeuronDeepLiftShap(stem_copy, stem_copy[1]).attribute(x, 2, bg)
    close(phi.reshape(len(x), -1), theirs.detach().numpy())


def test_captum_dropin_options(rows):
    """multiply_by_inputs=False, custom_attribution_func, callable baselines and tuple targets behave as Captum's."""
    from captum.attr import DeepLift, DeepLiftShap

    x, bg, _ = rows
    net = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4)).eval()
    grid = torch.nn.Sequential(net, torch.nn.Unflatten(1, (2, 2))).eval()  # (N, 2, 2) outputs: tuple targets
    for mine, theirs, kwargs in [
        (xc.DeepLift(net, multiply_by_inputs=False), DeepLift(net, multiply_by_inputs=False), {"target": 1}),
        (xc.DeepLiftShap(net), DeepLiftShap(net), {"target": [0, 1, 2, 3], "baselines": lambda: bg}),
        (xc.DeepLift(grid), DeepLift(grid), {"target": (1, 0), "baselines": bg[:1]}),
        (
            xc.DeepLiftShap(net),
            DeepLiftShap(net),
            {"target": 2, "baselines": bg, "custom_attribution_func": lambda m, i, b: tuple(t * 2 for t in m)},
        ),
    ]:
        close(mine.attribute(x, **kwargs).numpy(), theirs.attribute(x, **kwargs).detach().numpy())


def test_captum_dropin_converts_once_and_again_after_an_edit(rows, monkeypatch):
    """The conversion is cached across calls (the same shapes), shared with a new object of an equal model (as
    Captum's tests build them), and redone when the weights change."""
    import converters

    x, bg, scale = rows
    model = Net().eval()
    calls = []
    real = converters.from_torch
    monkeypatch.setattr(converters, "from_torch", lambda *a, **k: calls.append(1) or real(*a, **k))
    xc.clear_cache()
    dl = xc.LayerDeepLift(model, model.stem)
    first = [dl.attribute(x, bg[:1], target=1, additional_forward_args=(scale,)) for _ in range(3)]
    assert len(calls) == 1 and all(torch.equal(first[0], a) for a in first)
    equal = Net().eval()  # the same class and weights: the same program
    again_equal = xc.LayerDeepLift(equal, equal.stem).attribute(x, bg[:1], target=1, additional_forward_args=(scale,))
    assert len(calls) == 1 and torch.allclose(again_equal, first[0], atol=1e-6)
    with torch.no_grad():
        model.body[0].weight.mul_(2.0)
    again = dl.attribute(x, bg[:1], target=1, additional_forward_args=(scale,))
    assert len(calls) == 2 and not torch.allclose(again, first[0])


class PaddedNet(torch.nn.Module):
    """The mask (0 pads a row's last features) flows into the stem and beside it: Captum's semantics matter."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.stem = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.ReLU())
        self.head = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))

    def forward(self, x, mask):
        return self.head(self.stem(x * mask) * mask.mean(1, keepdim=True))


def test_rows_of_other_inputs_is_captums_additional_forward_args():
    """Masks that differ per row (padded rows), given as rows_of_other_inputs: held at the row's own value on both
    sides of each pair (the background's layer values computed under the row's mask), equal to Captum's
    LayerDeepLiftShap with the mask as additional_forward_args, and complete."""
    from captum.attr import LayerDeepLiftShap

    g = torch.Generator().manual_seed(8)
    x, bg = torch.randn(3, 5, generator=g), torch.randn(4, 5, generator=g)
    mask = torch.ones(3, 5)
    mask[1, -2:] = 0
    mask[2, -1:] = 0
    model = PaddedNet().eval()
    explainer = xshap.LayerExplainer(model, model.stem, [bg, torch.ones(4, 5)])
    result = explainer.explain([x], rows_of_other_inputs=[mask])
    model_copy = copy.deepcopy(model)
    theirs = LayerDeepLiftShap(model_copy, model_copy.stem)
    for target in range(2):
        b = theirs.attribute(x, bg, target=target, additional_forward_args=(mask,))
        close(result.values[0][:, target], b.detach().numpy())
    with torch.no_grad():
        f = model(x, mask).numpy()
        under_row = np.stack([model(bg, m.expand(4, -1)).mean(0).numpy() for m in mask])
    close(result.outputs, f)
    close(result.reference_outputs, under_row)  # the background under each row's own mask
    totals = result.values[0].sum(axis=2)
    close(totals, result.outputs - result.reference_outputs)  # complete
    plain = explainer.explain([x, mask])  # the mask from X: the background's layer values under its own mask
    assert np.abs(plain.values[0] - result.values[0]).max() > 1e-3
    one_row = explainer.explain(x[1:2], rows_of_other_inputs=mask[1:2])
    close(one_row.values[0], result.values[0][1:2])
    with pytest.raises(InputError, match="X gives 2 and rows_of_other_inputs 1"):
        explainer.explain([x, mask], rows_of_other_inputs=[mask])
    with pytest.raises(InputError, match=r"rows_of_other_inputs\[0\] has shape \(2, 5\)"):
        explainer.explain([x], rows_of_other_inputs=[mask[:2]])
