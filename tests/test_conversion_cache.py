"""A second explainer of the same torch model reuses its conversion and compiled programs
(``xshap.explain.model.CONVERSIONS``), and an edited model is never served the old one: a weight edited in place,
a replaced submodule or a changed attribute gives the new model's attributions (those of a fresh conversion, and
complete against the edited model's own forward)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import converters
import xshap
from xshap.errors import ModelChangedError
from xshap.explain import model as explained_model


class _Scaled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        self.scale = 1.0

    def forward(self, x):
        return self.body(x) * self.scale


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return _Scaled().eval()


def _rows():
    rng = np.random.default_rng(0)
    return rng.standard_normal((6, 5)).astype(np.float32), rng.standard_normal((3, 5)).astype(np.float32)


@pytest.fixture
def conversions(monkeypatch):
    """Count the conversions made (``converters.from_torch`` calls), on an empty cache."""
    explained_model.CONVERSIONS.clear()
    calls = []
    original = converters.from_torch

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(converters, "from_torch", counted)
    yield calls
    explained_model.CONVERSIONS.clear()


def _explain(model, background, X):
    return xshap.DeepExplainer(model, background).explain(X)


def _check_against_forward(model, attribution, X):
    """Complete against the model's own torch forward: sum(phi) = f(x) - E f with f as torch computes it now."""
    with torch.no_grad():
        fx = model(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(attribution.outputs, fx, rtol=1e-5, atol=1e-6)
    total = attribution.values[0].reshape(len(X), attribution.outputs.shape[1], -1).sum(axis=2)
    np.testing.assert_allclose(total, fx - attribution.expected_value, rtol=1e-4, atol=1e-5)


def test_a_second_explainer_reuses_the_conversion_and_its_programs(conversions):
    model = _net()
    background, X = _rows()
    first = xshap.DeepExplainer(model, background)
    a = first.explain(X)
    second = xshap.DeepExplainer(model, background)
    b = second.explain(X)
    assert len(conversions) == 1
    assert second._chunk is first._chunk  # the compiled chunk itself
    assert second.model is not first.model  # each explainer checks its own model's fingerprint
    np.testing.assert_array_equal(a.values[0], b.values[0])
    # an equal model in another object: the same content, the same conversion
    xshap.DeepExplainer(_net(), background).explain(X)
    assert len(conversions) == 1
    # another background is another conversion (it is checked on its own example rows)
    xshap.DeepExplainer(model, background[::-1].copy())
    assert len(conversions) == 2


@pytest.mark.parametrize("edit", ["weight in place", "weight through .data", "submodule", "attribute"])
def test_an_edited_model_is_converted_again(conversions, edit):
    model = _net()
    background, X = _rows()
    before = _explain(model, background, X)
    with torch.no_grad():
        if edit == "weight in place":
            model.body[0].weight.mul_(-2.0)
        elif edit == "weight through .data":
            model.body[2].weight.data[0] += 1.0
        elif edit == "submodule":
            model.body[1] = torch.nn.Tanh().eval()
        else:
            model.scale = 3.0
    after = _explain(model, background, X)
    assert len(conversions) == 2
    assert not np.allclose(before.values[0], after.values[0])
    _check_against_forward(model, after, X)
    explained_model.CONVERSIONS.clear()
    fresh = _explain(model, background, X)
    np.testing.assert_allclose(after.values[0], fresh.values[0], rtol=1e-6, atol=1e-7)


def test_a_model_edited_after_its_conversion_was_cached_does_not_serve_an_equal_model(conversions):
    """The cached program refers to the first model's own parameter tensors: once they are edited in place, an
    equal (unedited) model must not get that entry."""
    first = _net()
    background, X = _rows()
    _explain(first, background, X)
    with torch.no_grad():
        first.body[0].weight.add_(1.0)  # the cached entry's torch tensors change with it
    second = _net()  # the content the entry was built for
    attribution = _explain(second, background, X)
    assert len(conversions) == 2
    _check_against_forward(second, attribution, X)


def test_an_explainer_refuses_its_model_edited_after_a_cached_conversion(conversions):
    model = _net()
    background, X = _rows()
    _explain(model, background, X)
    explainer = xshap.DeepExplainer(model, background)  # from the cache
    with torch.no_grad():
        model.body[0].bias.zero_()
    with pytest.raises(ModelChangedError):
        explainer.explain(X)


_ACTIVATION = {"fn": torch.relu}


def _activation(x):
    """A module-level helper the forward calls: editing it changes the model without changing its content key."""
    return _ACTIVATION["fn"](x)


def _seeded_net(activation):
    """A new ``Net`` class (as a notebook cell that defines it makes one) whose forward calls ``activation``, and an
    instance of it with the weights of seed 0."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(5, 8), torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.b(activation(self.a(x)))

    torch.manual_seed(0)
    return Net().eval()


def test_code_the_content_key_cannot_see_is_caught_by_the_models_own_outputs(conversions, monkeypatch):
    """A helper function the forward calls is changed (relu -> tanh): weights, submodules, attributes and class are
    the same, so the content key is; the cached entry's outputs on the example rows are not the model's any more,
    and the model is converted again."""
    model = _seeded_net(_activation)
    background, X = _rows()
    before = _explain(model, background, X)
    monkeypatch.setitem(_ACTIVATION, "fn", torch.tanh)
    after = _explain(model, background, X)
    assert len(conversions) == 2
    assert not np.allclose(before.values[0], after.values[0])
    _check_against_forward(model, after, X)


def test_a_class_defined_again_is_another_model(conversions):
    """A notebook cell that defines ``class Net`` again (another forward), with the same seed, the same weights: the
    key holds the class object itself, so the new class is never taken for the old one (even at a reused id)."""
    background, X = _rows()

    _explain(_seeded_net(torch.relu), background, X)
    import gc

    gc.collect()  # the first class may go: its id may be reused by the next
    model = _seeded_net(torch.sigmoid)
    after = _explain(model, background, X)
    assert len(conversions) == 2
    _check_against_forward(model, after, X)


def test_captum_drop_in_does_not_share_a_program_of_a_model_edited_since(conversions):
    """xshap.captum shares programs across objects of equal models; the model a shared program was built from is
    then edited in place, and an object of an equal (unedited) model gets a program of its own, complete against
    its own forward."""
    from xshap import captum as drop_in

    drop_in.clear_cache()
    background, X = (torch.from_numpy(a) for a in _rows())
    first = _net()
    drop_in.DeepLiftShap(first).attribute(X, baselines=background, target=0)
    with torch.no_grad():
        first.body[0].weight.mul_(-3.0)
    second = _net()  # the content the shared program was built for
    attributions, delta = drop_in.DeepLiftShap(second).attribute(
        X, baselines=background, target=0, return_convergence_delta=True
    )
    with torch.no_grad():
        gap = attributions.sum(1) - (second(X)[:, 0] - second(background)[:, 0].mean())
    assert float(gap.abs().max()) < 1e-4, gap
    assert float(delta.abs().max()) < 1e-4, delta
    drop_in.clear_cache()
