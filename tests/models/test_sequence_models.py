"""Model-level acceptance tests: sequence models (a Transformer encoder classifier built from torch's own
nn.TransformerEncoderLayer, a bidirectional LSTM and GRUs) through xshap, shap.DeepExplainer and Captum's
DeepLiftShap.

Each model is checked for (a) xshap's completeness in float32 for every output against torch's own f(x) and E f,
(b) the same in float64, (c) the cross-check verdict of each reference, that a reference called incomplete really
is (its completeness gap recomputed here from its own values, independently of the report), and the culprits read
from the exported graph.

Inputs are float sequences (N, L, d): no token ids, no masks. The models live in this file so that the culprits'
call sites point here. Recurrent nets are unrolled by xshap, so their compile time grows with the sequence length:
they use a shorter sequence than the encoder to keep the file fast.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
import torch.nn as nn

import xshap
from xshap.check.culprits import FUNCTIONAL, NO_RULE, PRODUCT
from xshap.check.report import AGREE, REFERENCE_INCOMPLETE

N_BACKGROUND, N_EXPLAINED = 8, 4
ENC_SEQ, ENC_FEATURES, D_MODEL, N_HEAD, FF, ENC_OUT = 6, 4, 16, 2, 32, 3
RNN_SEQ, RNN_FEATURES, HIDDEN, RNN_OUT = 3, 4, 8, 2
THIS_FILE = Path(__file__).name


# -- models ---------------------------------------------------------------------------------------------------
class EncoderClassifier(nn.Module):
    """Linear input projection, nn.TransformerEncoderLayer(s), mean over the sequence, Linear to 3 outputs.

    Takes batch-leading (N, L, d) inputs; with ``batch_first=False`` it permutes to (L, N, d) for the layers itself.
    """

    def __init__(self, batch_first: bool, norm_first: bool, num_layers: int = 1):
        super().__init__()
        self.batch_first = batch_first
        self.proj = nn.Linear(ENC_FEATURES, D_MODEL)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(D_MODEL, N_HEAD, FF, dropout=0.0, batch_first=batch_first, norm_first=norm_first)
            for _ in range(num_layers)
        )
        self.head = nn.Linear(D_MODEL, ENC_OUT)

    def forward(self, x):
        h = self.proj(x)
        if not self.batch_first:
            h = h.permute(1, 0, 2)
        for layer in self.layers:
            h = layer(h)
        if not self.batch_first:
            h = h.permute(1, 0, 2)
        return self.head(h.mean(dim=1))


class RecurrentClassifier(nn.Module):
    """nn.LSTM / nn.GRU over the sequence; the last time step or the mean over time -> Linear head.

    Takes batch-leading (N, L, d) inputs; with ``batch_first=False`` it permutes to (L, N, d) itself.
    """

    def __init__(self, kind: str, num_layers: int, bidirectional: bool, batch_first: bool, pool: str):
        super().__init__()
        cls = {"lstm": nn.LSTM, "gru": nn.GRU}[kind]
        self.rnn = cls(
            RNN_FEATURES, HIDDEN, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first
        )
        self.batch_first, self.pool = batch_first, pool
        self.head = nn.Linear(HIDDEN * (2 if bidirectional else 1), RNN_OUT)

    def forward(self, x):
        seq = x if self.batch_first else x.permute(1, 0, 2)
        out, _ = self.rnn(seq)
        if not self.batch_first:
            out = out.permute(1, 0, 2)
        features = out[:, -1] if self.pool == "last" else out.mean(dim=1)
        return self.head(features)


def make_encoder(batch_first=True, norm_first=False, num_layers=1) -> nn.Module:
    torch.manual_seed(0)
    return EncoderClassifier(batch_first, norm_first, num_layers).eval()


def make_lstm(batch_first=True) -> nn.Module:
    torch.manual_seed(0)
    return RecurrentClassifier("lstm", 2, True, batch_first, "last").eval()


def make_gru(num_layers=1, bidirectional=False, batch_first=True) -> nn.Module:
    torch.manual_seed(0)
    return RecurrentClassifier("gru", num_layers, bidirectional, batch_first, "mean").eval()


def sequences(seq: int, features: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A background of N_BACKGROUND rows and N_EXPLAINED explained rows, (rows, seq, features), float32."""
    gen = torch.Generator().manual_seed(seed)
    background = torch.randn(N_BACKGROUND, seq, features, generator=gen)
    explained = torch.randn(N_EXPLAINED, seq, features, generator=gen)
    return background, explained


# -- helpers --------------------------------------------------------------------------------------------------
def torch_f(model: nn.Module, background: torch.Tensor, X: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """f(x) (N, n_out) and E f over the background (n_out,), computed by torch itself."""
    with torch.no_grad():
        return model(X).numpy(), model(background).numpy().mean(axis=0)


def completeness_gaps(phi: np.ndarray, out: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """sum(phi) - (f(x) - E f), (N, n_out), for phi in shap's layout (N, *row_shape, n_out)."""
    n, n_out = out.shape
    assert phi.shape[0] == n and phi.shape[-1] == n_out, phi.shape
    return phi.reshape(n, -1, n_out).sum(axis=1) - (out - expected)


def scale(out: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return np.maximum(1.0, np.maximum(np.abs(out), np.abs(expected)))


def assert_xshap_complete(model: nn.Module, background: torch.Tensor, X: torch.Tensor, rtol: float) -> np.ndarray:
    """xshap.DeepExplainer(model, background).shap_values(X) adds up to torch's f(x) - E f for every output."""
    phi = xshap.DeepExplainer(model, background).shap_values(X)
    out, expected = torch_f(model, background, X)
    assert phi.shape == (*X.shape, out.shape[1])
    assert phi.dtype == (np.float64 if X.dtype == torch.float64 else np.float32)
    assert np.all(np.isfinite(phi))
    gap = completeness_gaps(phi, out, expected)
    worst = np.max(np.abs(gap) / scale(out, expected))
    assert worst <= rtol, f"relative completeness gap {worst:.3e} > {rtol:.0e}"
    return phi


def assert_xshap_complete_float64(model: nn.Module, background: torch.Tensor, X: torch.Tensor) -> None:
    model64 = copy.deepcopy(model).double()
    with jax.enable_x64(True):
        assert_xshap_complete(model64, background.double(), X.double(), rtol=1e-9)


def crosscheck(model: nn.Module, background: torch.Tensor, X: torch.Tensor):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's note on the RNN's _flat_weights
        return xshap.crosscheck(model, background, X)


def reference_shap_values(model: nn.Module, background: torch.Tensor, X: torch.Tensor) -> np.ndarray:
    """shap.DeepExplainer run here directly, shap's layout (N, *row_shape, n_out)."""
    shap = pytest.importorskip("shap")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = shap.DeepExplainer(copy.deepcopy(model), background).shap_values(X, check_additivity=False)
    return np.asarray(values, dtype=np.float64)


def reference_captum_values(model: nn.Module, background: torch.Tensor, X: torch.Tensor, n_out: int) -> np.ndarray:
    """Captum's DeepLiftShap run here directly, one call per output, shap's layout (N, *row_shape, n_out)."""
    captum_attr = pytest.importorskip("captum.attr")
    explainer = captum_attr.DeepLiftShap(copy.deepcopy(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_output = [
            explainer.attribute(X, baselines=background, target=o).detach().numpy().astype(np.float64)
            for o in range(n_out)
        ]
    return np.stack(per_output, axis=-1)


def check_report_basics(report, model: nn.Module, background: torch.Tensor, X: torch.Tensor) -> None:
    """The conversion check passed, and xshap's values in the report add up to torch's f(x) - E f (float32)."""
    assert report.validation is not None and report.validation.ok, str(report.validation)
    out, expected = torch_f(model, background, X)
    np.testing.assert_allclose(report.outputs, out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(report.expected_value, expected, rtol=1e-5, atol=1e-5)
    (values,) = report.xshap_values  # (N, n_out, L, d)
    phi = np.moveaxis(values, 1, -1)
    gap = completeness_gaps(phi, out, expected)
    assert np.all(np.abs(gap) <= 1e-4 * scale(out, expected)), np.abs(gap).max()


def check_reference_gaps(report, name: str, values: np.ndarray, model, background, X) -> None:
    """The report's gaps for one reference are that reference's own completeness gaps; where the verdict says
    incomplete, the gap is really far outside the tolerance, and where it says complete it is inside."""
    comparison = report.reference(name)
    assert comparison.error is None, comparison.error
    out, expected = torch_f(model, background, X)
    own_gap = completeness_gaps(values, out, expected)
    tolerance = 1e-4 * scale(out, expected)
    np.testing.assert_allclose(comparison.gaps, own_gap, rtol=0, atol=float(np.max(tolerance)) / 10)
    incomplete = comparison.verdicts == REFERENCE_INCOMPLETE
    assert np.all(np.abs(own_gap[incomplete]) > tolerance[incomplete])
    assert np.all(np.abs(own_gap[~incomplete]) <= tolerance[~incomplete])
    if comparison.verdict == REFERENCE_INCOMPLETE:
        # not a rounding effect: the worst gap is at least ten times the tolerance (a thousand times float32 rounding)
        assert np.max(np.abs(own_gap) / tolerance) > 10, np.max(np.abs(own_gap))
    # the differences to xshap are the differences of these values
    xshap_phi = np.moveaxis(report.xshap_values[0], 1, -1)
    diff = np.abs(xshap_phi - values).reshape(len(out), -1, out.shape[1]).max(axis=1)
    np.testing.assert_allclose(comparison.max_abs_diff, diff, rtol=0, atol=1e-5)
    # where complete, AGREE exactly where the values are xshap's; a difference is never called agreement
    agree = comparison.verdicts == AGREE
    assert np.array_equal(agree, ~incomplete & (diff <= tolerance)), comparison.verdicts


def culprits_at(report, kinds, path_prefix: str) -> list:
    return [c for c in report.culprits if c.kind in kinds and c.module_path.startswith(path_prefix)]


def assert_sites_here(culprit, code_fragment: str) -> None:
    """Every call site is a line of this file's models: the user's call of the torch module."""
    assert culprit.sites, culprit
    for source, code in culprit.sites:
        assert source.rsplit(":", 1)[0].endswith(THIS_FILE), source
        assert int(source.rsplit(":", 1)[1]) > 0
        assert code_fragment in code, (source, code)


# -- Transformer encoder ----------------------------------------------------------------------------------------
# Every (batch_first, norm_first) pair is checked for completeness: post-norm batch-first in the cross-check below
# (two layers), the other three here in float32, and pre-norm batch-first again in float64.
ENCODER_CONFIGS = [(True, True, 1), (False, False, 1), (False, True, 2)]


def _encoder_id(config) -> str:
    batch_first, norm_first, layers = config
    return f"{'bf' if batch_first else 'sf'}-{'pre' if norm_first else 'post'}norm-L{layers}"


@pytest.mark.parametrize("config", ENCODER_CONFIGS, ids=_encoder_id)
def test_encoder_complete_float32(config):
    batch_first, norm_first, layers = config
    background, X = sequences(ENC_SEQ, ENC_FEATURES)
    assert_xshap_complete(make_encoder(batch_first, norm_first, layers), background, X, rtol=1e-4)


def test_encoder_complete_float64():
    background, X = sequences(ENC_SEQ, ENC_FEATURES)
    assert_xshap_complete_float64(make_encoder(batch_first=True, norm_first=True), background, X)


@pytest.fixture(scope="module")
def encoder_case():
    """Two post-norm, batch-first encoder layers, cross-checked once for every test below."""
    model = make_encoder(batch_first=True, norm_first=False, num_layers=2)
    background, X = sequences(ENC_SEQ, ENC_FEATURES)
    return model, background, X, crosscheck(model, background, X)


def test_encoder_complete_float32_batch_first_post_norm(encoder_case):
    """The float32 completeness of the post-norm batch-first encoder, read from its cross-check (a DeepExplainer)."""
    model, background, X, report = encoder_case
    check_report_basics(report, model, background, X)


@pytest.mark.parametrize("name", ["shap", "captum"])
def test_encoder_references_are_incomplete(encoder_case, name):
    """Neither reference has rules for the attention products, the functional ReLU or LayerNorm: incomplete."""
    model, background, X, report = encoder_case
    assert report.reference(name).verdict == REFERENCE_INCOMPLETE, str(report)
    assert report.reference(name).count(REFERENCE_INCOMPLETE) >= X.shape[0] * ENC_OUT // 2
    if name == "shap":
        values = reference_shap_values(model, background, X)
    else:
        values = reference_captum_values(model, background, X, ENC_OUT)
    check_reference_gaps(report, name, values, model, background, X)
    text = str(report)
    assert REFERENCE_INCOMPLETE in text and f"{np.max(np.abs(report.reference(name).gaps)):.3g}" in text


@pytest.mark.parametrize("layer", [0, 1])
def test_encoder_culprit_functional_relu(encoder_case, layer):
    """torch's TransformerEncoderLayer calls F.relu (its ``activation``) functionally: no hook sees it."""
    *_, report = encoder_case
    path = f"layers.{layer}"
    relus = [c for c in culprits_at(report, {FUNCTIONAL}, path) if c.op == "relu"]
    assert len(relus) == 1, [c.describe() for c in report.culprits]
    (relu,) = relus
    assert relu.module_path == path
    assert relu.module_type.endswith("TransformerEncoderLayer")
    assert set(relu.references) == {"shap", "captum"}
    assert_sites_here(relu, "layer(h)")
    # The callee is read from torch's own code (the layer's `_ff_block` calls its `activation`), never the call
    # of the TransformerEncoderLayer module itself on the user's line (`h = layer(h)`).
    assert relu.callee.startswith("self.") and relu.callee not in {"self.layers", "self.head", "self.proj"}
    assert "relu" in relu.callee.lower() or "activation" in relu.callee or "_ff_block" in relu.callee, relu.describe()


@pytest.mark.parametrize("layer", [0, 1])
def test_encoder_culprit_attention_products(encoder_case, layer):
    """Q @ K^T and weights @ V multiply two input-dependent tensors inside self-attention."""
    *_, report = encoder_case
    path = f"layers.{layer}.self_attn"
    products = culprits_at(report, {PRODUCT}, path)
    assert products, f"no product culprit in {path}: " + "; ".join(c.describe() for c in report.culprits)
    for culprit in products:
        assert culprit.module_type.endswith("MultiheadAttention")
        assert set(culprit.references) == {"shap", "captum"}
        assert_sites_here(culprit, "layer(h)")


@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("norm", ["norm1", "norm2"])
def test_encoder_culprit_layernorm_has_no_rule(encoder_case, layer, norm):
    """nn.LayerNorm divides by an input-dependent standard deviation; neither shap nor Captum has a rule for it."""
    *_, report = encoder_case
    path = f"layers.{layer}.{norm}"
    found = [c for c in report.culprits if c.module_path == path]
    assert found, f"no culprit for {path}: " + "; ".join(c.describe() for c in report.culprits)
    (culprit,) = found
    assert culprit.kind in (NO_RULE, PRODUCT)
    assert culprit.module_type.endswith("LayerNorm")
    assert set(culprit.references) == {"shap", "captum"}
    assert_sites_here(culprit, "layer(h)")


def test_encoder_culprits_only_in_encoder_layers(encoder_case):
    """The input projection, the mean and the head are linear: nothing outside the encoder layers is blamed."""
    *_, report = encoder_case
    assert report.culprits
    for culprit in report.culprits:
        assert culprit.module_path.startswith("layers."), culprit.describe()


# -- LSTM -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lstm_case():
    """2-layer bidirectional batch-first LSTM, last time step -> Linear; cross-checked once."""
    model = make_lstm(batch_first=True)
    background, X = sequences(RNN_SEQ, RNN_FEATURES)
    return model, background, X, crosscheck(model, background, X)


def test_lstm_complete_float32_batch_first(lstm_case):
    """The float32 completeness of the batch-first LSTM, read from its cross-check (same DeepExplainer)."""
    model, background, X, report = lstm_case
    check_report_basics(report, model, background, X)


def test_lstm_complete_float64_sequence_first():
    """batch_first=False (the model permutes to (L, N, d) itself), in float64: each unrolled LSTM costs a compile
    of many seconds, so the sequence-first layout is checked at the stricter precision only."""
    background, X = sequences(RNN_SEQ, RNN_FEATURES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_xshap_complete_float64(make_lstm(batch_first=False), background, X)


@pytest.mark.parametrize("name", ["shap", "captum"])
def test_lstm_references_are_incomplete(lstm_case, name):
    """The LSTM's gates (sigmoid * tanh products, c * f) have no rule in either reference: plain gradients."""
    model, background, X, report = lstm_case
    comparison = report.reference(name)
    assert comparison.verdict == REFERENCE_INCOMPLETE, str(report)
    assert comparison.count(REFERENCE_INCOMPLETE) >= X.shape[0] * RNN_OUT // 2
    if name == "shap":
        values = reference_shap_values(model, background, X)
    else:
        values = reference_captum_values(model, background, X, RNN_OUT)
    check_reference_gaps(report, name, values, model, background, X)


def assert_recurrent_culprit(report, module_type: str) -> None:
    """The recurrent module is blamed: no rule (or an input-dependent product) in rnn [LSTM/GRU], at the user's
    call of it, affecting both references."""
    blamed = [c for c in report.culprits if c.module_path == "rnn"]
    assert blamed, f"both references are incomplete on an nn.{module_type} but no culprit names it; culprits: " + (
        "; ".join(c.describe() for c in report.culprits) or "none"
    )
    for culprit in blamed:
        assert culprit.kind in (NO_RULE, PRODUCT), culprit.describe()
        assert culprit.module_type.endswith(f".{module_type}"), culprit.module_type
        assert set(culprit.references) == {"shap", "captum"}
        assert_sites_here(culprit, "self.rnn(seq)")
    for culprit in report.culprits:
        assert culprit.module_path == "rnn", culprit.describe()  # the head is linear


def test_lstm_culprit(lstm_case):
    *_, report = lstm_case
    assert_recurrent_culprit(report, "LSTM")


# -- GRU --------------------------------------------------------------------------------------------------------
GRU_CONFIGS = {"L1": (1, False), "L2-bi": (2, True)}


@pytest.fixture(scope="module", params=list(GRU_CONFIGS))
def gru_case(request):
    """Batch-first GRU (1 layer; 2 layers bidirectional), mean over time -> Linear; cross-checked once each."""
    layers, bidirectional = GRU_CONFIGS[request.param]
    model = make_gru(layers, bidirectional, batch_first=True)
    background, X = sequences(RNN_SEQ, RNN_FEATURES)
    return model, background, X, crosscheck(model, background, X)


def test_gru_complete_float32_batch_first(gru_case):
    """The float32 completeness of the batch-first GRUs, read from their cross-check (same DeepExplainer)."""
    model, background, X, report = gru_case
    check_report_basics(report, model, background, X)


def test_gru_complete_float64_sequence_first():
    """2 layers bidirectional, batch_first=False, in float64 (see the LSTM's)."""
    background, X = sequences(RNN_SEQ, RNN_FEATURES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_xshap_complete_float64(make_gru(2, True, batch_first=False), background, X)


@pytest.mark.parametrize("name", ["shap", "captum"])
def test_gru_references_are_incomplete(gru_case, name):
    """The GRU's gates (r * (W h), z * h, sigmoid/tanh inside the fused op) have no rule in either reference."""
    model, background, X, report = gru_case
    comparison = report.reference(name)
    assert comparison.verdict == REFERENCE_INCOMPLETE, str(report)
    assert comparison.count(REFERENCE_INCOMPLETE) >= X.shape[0] * RNN_OUT // 2
    if name == "shap":
        values = reference_shap_values(model, background, X)
    else:
        values = reference_captum_values(model, background, X, RNN_OUT)
    check_reference_gaps(report, name, values, model, background, X)


def test_gru_culprit(gru_case):
    *_, report = gru_case
    assert_recurrent_culprit(report, "GRU")
