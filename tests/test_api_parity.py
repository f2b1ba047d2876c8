"""shap/Captum API parity (issue 7): interim layers, ranked outputs, Captum's attribute, single-baseline
DeepLift, RevealCancel, and the culprit named if xshap's own sum ever failed."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import xshap
from xshap.errors import InputError, XShapIncompleteError

RTOL = 1e-4


def close(mine, theirs, rtol=RTOL):
    mine, theirs = np.asarray(mine, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert mine.shape == theirs.shape, (mine.shape, theirs.shape)
    assert np.max(np.abs(mine - theirs), initial=0.0) <= rtol * max(1.0, np.max(np.abs(theirs)))


def mlp(n_in=6, n_out=4, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(n_in, 12), torch.nn.ReLU(), torch.nn.Linear(12, 8), torch.nn.Tanh(), torch.nn.Linear(8, n_out)
    ).eval()


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(20, 6, generator=g), torch.randn(7, 6, generator=g)


# -- ranked outputs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["max", "min", "max_abs"])
def test_ranked_outputs_equal_shap(data, order):
    shap = pytest.importorskip("shap")
    background, X = data
    model = mlp()
    mine, mine_idx = xshap.DeepExplainer(model, background).shap_values(X, ranked_outputs=2, output_rank_order=order)
    theirs, theirs_idx = shap.DeepExplainer(copy.deepcopy(model), background).shap_values(
        X, ranked_outputs=2, output_rank_order=order, check_additivity=False
    )
    assert isinstance(mine_idx, torch.Tensor) and mine_idx.dtype == theirs_idx.dtype
    assert torch.equal(mine_idx, theirs_idx)
    close(mine, theirs)
    full = xshap.DeepExplainer(model, background).shap_values(X)  # (N, 6, 4): the ranked slots are columns of it
    for i in range(len(X)):
        close(mine[i], full[i][:, mine_idx[i].numpy()])


def test_ranked_outputs_single_output_and_bad_order(data):
    shap = pytest.importorskip("shap")
    background, X = data
    model = mlp(n_out=1)
    mine, idx = xshap.DeepExplainer(model, background).shap_values(X, ranked_outputs=3)
    theirs, their_idx = shap.DeepExplainer(copy.deepcopy(model), background).shap_values(
        X, ranked_outputs=3, check_additivity=False
    )
    close(mine, theirs)
    assert torch.equal(idx, their_idx) and idx.dtype == their_idx.dtype
    with pytest.raises(ValueError, match="output_rank_order"):
        xshap.DeepExplainer(model, background).shap_values(X, ranked_outputs=1, output_rank_order="median")


# -- interim layers --------------------------------------------------------------------------------------
class TokenModel(torch.nn.Module):
    def __init__(self, vocab=11, dim=5, length=4):
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab, dim)
        self.body = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(dim * length, 10), torch.nn.ReLU(), torch.nn.Linear(10, 3)
        )

    def forward(self, tokens):
        return self.body(self.embedding(tokens))


@pytest.fixture(scope="module")
def tokens():
    g = torch.Generator().manual_seed(2)
    return torch.randint(0, 11, (16, 4), generator=g), torch.randint(0, 11, (5, 4), generator=g)


class FloatModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh())
        self.body = torch.nn.Sequential(torch.nn.Linear(8, 10), torch.nn.ReLU(), torch.nn.Linear(10, 3))

    def forward(self, x):
        return self.body(self.stem(x))


@pytest.mark.parametrize("by", ["object", "path"])
def test_interim_layer_equals_shap_and_captum(data, by):
    shap = pytest.importorskip("shap")
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(3)
    model = FloatModel().eval()
    background, X = data
    layer = model.body if by == "object" else "body"
    mine = xshap.DeepExplainer((model, layer), background).shap_values(X)
    assert mine.shape == (7, 8, 3)  # the body's input (the stem's output) per output
    model_copy = copy.deepcopy(model)  # shap needs the layer object of the model it explains
    theirs = shap.DeepExplainer((model_copy, model_copy.body), background).shap_values(X, check_additivity=False)
    close(mine, theirs)
    model_c = copy.deepcopy(model)
    explainer_c = captum_attr.LayerDeepLiftShap(model_c, model_c.body)
    for target in range(3):
        attr = explainer_c.attribute(X, background, target=target, attribute_to_layer_input=True)
        close(mine[..., target], attr.detach().numpy())
    with torch.no_grad():
        f, expected = model(X).numpy(), model(background).numpy().mean(axis=0)
    np.testing.assert_allclose(mine.sum(axis=1), f - expected, rtol=1e-4, atol=1e-4)


def test_interim_embedding_output_for_token_models(tokens):
    """Token ids: explain the embedding's output. shap 0.51 and Captum cannot here (they ask the integer
    inputs for gradients); xshap equals explaining the body on the embedded rows, and is complete."""
    torch.manual_seed(3)
    model = TokenModel().eval()
    background, X = tokens
    mine = xshap.DeepExplainer((model, model.body), background).shap_values(X)
    assert mine.shape == (5, 4, 5, 3)
    with torch.no_grad():
        direct = xshap.DeepExplainer(model.body, model.embedding(background)).shap_values(model.embedding(X))
        f, expected = model(X).numpy(), model(background).numpy().mean(axis=0)
    close(mine, direct, rtol=1e-6)
    np.testing.assert_allclose(mine.reshape(5, -1, 3).sum(axis=1), f - expected, rtol=1e-4, atol=1e-4)
    report = xshap.crosscheck((model, "body"), background, X)
    assert {r.key: r.verdict for r in report.references} == {"shap": "REFERENCE_ERROR", "captum": "REFERENCE_ERROR"}
    assert "floating point" in report.reference("shap").error


def test_interim_layer_bypassed_by_a_residual_is_refused():
    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
            self.out = torch.nn.Linear(4, 1)

        def forward(self, x):
            h = torch.relu(x)
            return self.out(self.inner(h) + x)  # x reaches the output around inner's input h

    model = Residual().eval()
    with pytest.raises(Exception, match=r"does not determine the output.*residual"):
        xshap.DeepExplainer((model, model.inner), torch.randn(6, 4))
    with pytest.raises(Exception, match="no submodule 'innr'"):
        xshap.DeepExplainer((model, "innr"), torch.randn(6, 4))


class NestedCNN(torch.nn.Module):
    """shap's test_pytorch_mnist_cnn_call layout: conv_layers.0 is the first module, its input the model's."""

    def __init__(self):
        super().__init__()
        self.conv_layers = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 3), torch.nn.ReLU()
        )
        self.fc_layers = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3))

    def forward(self, x):
        return self.fc_layers(self.conv_layers(x))


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(4)
    return torch.randn(10, 1, 8, 8, generator=g), torch.randn(3, 1, 8, 8, generator=g)


def test_interim_at_the_first_layer_is_the_model_input(images):
    """(model, model[0]): the layer's input IS the model input, so the head is the identity and the values equal
    the plain explanation's; shap's interim values (correct on this net) equal them too."""
    shap = pytest.importorskip("shap")
    torch.manual_seed(5)
    nested = NestedCNN()
    model = torch.nn.Sequential(*nested.conv_layers, *nested.fc_layers).eval()
    background, X = images
    mine = xshap.DeepExplainer((model, model[0]), background).shap_values(X)
    plain = xshap.DeepExplainer(model, background).shap_values(X)
    assert mine.shape == plain.shape == (3, 1, 8, 8, 3)
    np.testing.assert_allclose(mine, plain, rtol=1e-6, atol=1e-7)
    model_copy = copy.deepcopy(model)
    theirs = shap.DeepExplainer((model_copy, model_copy[0]), background).shap_values(X, check_additivity=False)
    close(mine, theirs)


def test_interim_at_a_layer_called_on_a_view_of_the_input(images):
    """A model that reshapes its flat input before its first layer, nested as in shap's test_pytorch_mnist_cnn_call
    (``conv_layers.0``): the layer's input is that view, and the values equal the plain explanation of the body."""

    class Flat(torch.nn.Module):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x):
            return self.body(x.view(-1, 1, 8, 8))

    torch.manual_seed(5)
    body = NestedCNN().eval()
    model = Flat(body).eval()
    background, X = (t.reshape(len(t), 64) for t in images)
    mine = xshap.DeepExplainer((model, body.conv_layers[0]), background).shap_values(X)
    assert mine.shape == (3, 1, 8, 8, 3)
    direct = xshap.DeepExplainer(body, images[0]).shap_values(images[1])
    np.testing.assert_allclose(mine, direct, rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        f, expected = model(X).numpy(), model(background).numpy().mean(axis=0)
    np.testing.assert_allclose(mine.reshape(3, -1, 3).sum(axis=1), f - expected, rtol=1e-4, atol=1e-4)


def test_interim_for_jax_functions():
    import jax.numpy as jnp

    w1 = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5)), dtype=jnp.float32)
    w2 = jnp.asarray(np.random.default_rng(1).normal(size=(5, 2)), dtype=jnp.float32)

    def first(x):
        return jnp.tanh(x @ w1)

    def rest(h):
        return jnp.maximum(h, 0) @ w2

    bg = np.random.default_rng(2).normal(size=(9, 3)).astype(np.float32)
    X = np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32)
    values = xshap.DeepExplainer((first, rest), bg).shap_values(X)
    assert values.shape == (4, 5, 2)
    direct = xshap.DeepExplainer(rest, np.asarray(first(bg))).shap_values(np.asarray(first(X)))
    close(values, direct, rtol=1e-6)


# -- Captum-style attribute and single-baseline DeepLift -------------------------------------------------
def test_attribute_matches_captum_deepliftshap(data):
    captum_attr = pytest.importorskip("captum.attr")
    background, X = data
    model = mlp()
    theirs_explainer = captum_attr.DeepLiftShap(copy.deepcopy(model))
    for target in (2, [0, 1, 2, 3, 0, 1, 2]):
        mine, delta = xshap.attribute(model, X, background, target=target, return_convergence_delta=True)
        theirs, their_delta = theirs_explainer.attribute(
            X,
            background,
            target=torch.tensor(target) if isinstance(target, list) else target,
            return_convergence_delta=True,
        )
        assert isinstance(mine, torch.Tensor) and mine.dtype == theirs.dtype
        close(mine.numpy(), theirs.detach().numpy())
        assert delta.shape == their_delta.shape == (len(X) * len(background),)
        assert np.max(np.abs(delta.numpy())) <= 1e-4 * 10  # complete per pair
        np.testing.assert_allclose(delta.numpy(), their_delta.detach().numpy(), atol=1e-4)
    with pytest.raises(InputError, match="4 outputs"):
        xshap.attribute(model, X, background)
    with pytest.raises(InputError, match="at least two baselines"):
        xshap.attribute(model, X, background[:1], target=0)


def test_attribute_tuple_inputs(data):
    captum_attr = pytest.importorskip("captum.attr")

    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(6, 3), torch.nn.Linear(2, 3)
            self.act = torch.nn.Sigmoid()

        def forward(self, x, y):
            return self.act(self.a(x) + self.b(y))

    torch.manual_seed(4)
    model = Two().eval()
    background, X = data
    y_bg, y = torch.randn(len(background), 2), torch.randn(len(X), 2)
    mine = xshap.attribute(model, (X, y), (background, y_bg), target=1)
    theirs = captum_attr.DeepLiftShap(copy.deepcopy(model)).attribute((X, y), (background, y_bg), target=1)
    assert isinstance(mine, tuple) and len(mine) == 2
    for m, t in zip(mine, theirs):
        close(m.numpy(), t.detach().numpy())


def test_single_baseline_deeplift_matches_captum(data):
    captum_attr = pytest.importorskip("captum.attr")
    background, X = data
    model = mlp()
    baseline = background[:1]
    explainer = xshap.DeepLift(model, baseline)
    mine, delta = explainer.attribute(X, target=3, return_convergence_delta=True)
    theirs = captum_attr.DeepLift(copy.deepcopy(model)).attribute(X, baselines=baseline, target=3)
    close(mine.numpy(), theirs.detach().numpy())
    with torch.no_grad():
        expected = (model(X) - model(baseline))[:, 3].numpy()
    np.testing.assert_allclose(mine.numpy().sum(axis=1), expected, rtol=1e-4, atol=1e-5)
    assert delta.shape == (len(X),) and np.max(np.abs(delta.numpy())) < 1e-4
    zero = xshap.DeepLift(model, example=X).attribute(X, target=0)
    theirs_zero = captum_attr.DeepLift(copy.deepcopy(model)).attribute(X, target=0)
    close(zero.numpy(), theirs_zero.detach().numpy())
    with pytest.raises(InputError, match="one baseline row"):
        xshap.DeepLift(model, background[:3])


# -- RevealCancel ----------------------------------------------------------------------------------------
class MinNet(torch.nn.Module):
    """min(a, b) = a - relu(a - b): the paper's example of cancelling terms."""

    def __init__(self):
        super().__init__()
        self.diff = torch.nn.Linear(2, 1, bias=False)
        self.diff.weight.data = torch.tensor([[1.0, -1.0]])
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        return x[:, :1] - self.relu(self.diff(x))


def test_revealcancel_on_the_min_example():
    x, zero = torch.tensor([[3.0, 1.0]]), torch.zeros(1, 2)
    rescale = xshap.DeepLift(MinNet().eval(), zero).shap_values(x)[0, :, 0]
    reveal = xshap.DeepLift(MinNet().eval(), zero, rules="revealcancel").shap_values(x)[0, :, 0]
    np.testing.assert_allclose(rescale, [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(reveal, [0.5, 0.5], atol=1e-6)


def test_revealcancel_is_complete_and_differs_from_rescale():
    torch.manual_seed(5)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 4 * 4, 8),
        torch.nn.Sigmoid(),
        torch.nn.Linear(8, 6),
        torch.nn.ELU(),
        torch.nn.Linear(6, 2),
    ).eval()
    background, X = torch.randn(10, 1, 6, 6), torch.randn(5, 1, 6, 6)
    reveal = xshap.DeepExplainer(model, background, rules="revealcancel").explain(X)  # raises if incomplete
    assert np.all(np.abs(reveal.gaps) <= reveal.tolerance)
    rescale = xshap.DeepExplainer(model, background).explain(X)
    assert np.max(np.abs(reveal.values[0] - rescale.values[0])) > 1e-3


# -- check_additivity names the culprit ------------------------------------------------------------------
def test_check_additivity_names_the_broken_rule(monkeypatch, data):
    """Break the Rescale rule on purpose: xshap's own check must fail and name the op and module."""
    import jax.numpy as jnp

    from xshap.engine.rules import rescale as rescale_module

    original = rescale_module.safe_divide
    monkeypatch.setattr(rescale_module, "safe_divide", lambda n, d, s: 0.5 * original(n, d, s) + 0 * jnp.zeros(()))
    background, X = data
    model = mlp()
    with pytest.raises(XShapIncompleteError, match=r"first locally incomplete op: \w+ in module 1 \[ReLU\]"):
        xshap.DeepExplainer(model, background).shap_values(X)


# -- crosscheck takes the same forms ---------------------------------------------------------------------
def test_crosscheck_interim_and_ranked_compare_like_with_like(data):
    pytest.importorskip("shap")
    pytest.importorskip("captum")
    torch.manual_seed(3)
    model = FloatModel().eval()
    background, X = data
    report = xshap.crosscheck((model, model.body), background, X)
    assert report.xshap_values[0].shape == (7, 3, 8)
    assert {r.key: r.verdict for r in report.references} == {"shap": "AGREE", "captum": "AGREE"}
    assert "input of" in report.model_name

    net = mlp()
    ranked = xshap.crosscheck(net, background, X, ranked_outputs=2, output_rank_order="max_abs")
    assert ranked.outputs.shape == (7, 2) and ranked.xshap_values[0].shape == (7, 2, 6)
    assert {r.key: r.verdict for r in ranked.references} == {"shap": "AGREE", "captum": "AGREE"}
    with torch.no_grad():
        f = net(X).numpy()
    order = np.argsort(-np.abs(f), axis=1, kind="stable")[:, :2]
    np.testing.assert_allclose(ranked.outputs, np.take_along_axis(f, order, axis=1), rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(ranked.xshap_gaps) <= ranked.tolerance)
    text = ranked.to_text()
    assert "AGREE" in text
