"""Forward checks for torch's recurrent and attention modules (converters/ops/rnn.py, converters/ops/attention.py):
nn.LSTM / nn.GRU / nn.RNN, nn.MultiheadAttention and nn.TransformerEncoderLayer, each behind a Linear head.

Every model takes batch-leading inputs (rows, ...) and, for ``batch_first=False``, transposes to (seq, batch, ...)
itself, so the exported graph sees a batch axis of one at position 1. Checks: converted forward == torch forward
within 1e-5 (max |diff| / max |torch|) in float32, and the layer-by-layer validation.
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn as nn

from converters.registry import lookup
from tests.converters.helpers import assert_converts

SEQ, FEATURES, HIDDEN, ROWS = 7, 5, 8, 3


def _batch_major(t: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """(seq, batch, ...) -> (batch, seq, ...) unless already batch-major."""
    return t if batch_first else t.transpose(0, 1)


class Recurrent(nn.Module):
    """An LSTM / GRU / RNN whose last step, mean over time and final state(s) feed a Linear head.

    With ``initial_state``, the model takes h0 (and c0) as extra inputs of shape (rows, layers * directions, H).
    """

    def __init__(self, kind, num_layers, bidirectional, batch_first, bias, initial_state, **extra):
        super().__init__()
        cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind]
        self.rnn = cls(
            FEATURES,
            HIDDEN,
            num_layers=num_layers,
            bidirectional=bidirectional,
            batch_first=batch_first,
            bias=bias,
            **extra,
        )
        self.kind, self.batch_first, self.initial_state = kind, batch_first, initial_state
        directions = 2 if bidirectional else 1
        out_hidden = extra.get("proj_size", 0) or HIDDEN
        width = 2 * directions * out_hidden + num_layers * directions * out_hidden
        if kind == "lstm":
            width += num_layers * directions * HIDDEN
        self.head = nn.Linear(width, 3)

    def forward(self, x, *states):
        seq = x if self.batch_first else x.transpose(0, 1)
        states = [s.transpose(0, 1).contiguous() for s in states]
        if self.kind == "lstm":
            out, (h_n, c_n) = self.rnn(seq, tuple(states)) if states else self.rnn(seq)
            finals = [h_n, c_n]
        else:
            out, h_n = self.rnn(seq, states[0]) if states else self.rnn(seq)
            finals = [h_n]
        out = _batch_major(out, self.batch_first)
        features = [out[:, -1], out.mean(dim=1)] + [f.transpose(0, 1).flatten(1) for f in finals]
        return self.head(torch.cat(features, dim=1))


def _recurrent_inputs(model: Recurrent, generator: torch.Generator) -> list[torch.Tensor]:
    x = torch.randn(ROWS, SEQ, FEATURES, generator=generator)
    if not model.initial_state:
        return [x]
    rnn = model.rnn
    stacked = rnn.num_layers * (2 if rnn.bidirectional else 1)
    h0 = torch.randn(ROWS, stacked, rnn.proj_size or HIDDEN, generator=generator)
    if model.kind != "lstm":
        return [x, h0]
    return [x, h0, torch.randn(ROWS, stacked, HIDDEN, generator=generator)]


# Every (layers, bidirectional, batch_first) combination; initial state and bias follow an 8-run orthogonal array
# (initial_state = a ^ b ^ c, bias = not a ^ b), so every pair of settings of any two of the five factors occurs.
_RECURRENT_GRID = [
    (layers, bidirectional, batch_first, (layers == 2) ^ bidirectional ^ batch_first, not (layers == 2) ^ bidirectional)
    for layers, bidirectional, batch_first in itertools.product([1, 2], [False, True], [False, True])
]


def _grid_id(config) -> str:
    layers, bidirectional, batch_first, initial_state, bias = config
    return (
        f"L{layers}-{'bi' if bidirectional else 'uni'}-{'bf' if batch_first else 'sf'}"
        f"-{'h0' if initial_state else 'noh0'}-{'bias' if bias else 'nobias'}"
    )


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("config", _RECURRENT_GRID, ids=_grid_id)
def test_lstm_gru(kind, config):
    layers, bidirectional, batch_first, initial_state, bias = config
    torch.manual_seed(0)
    model = Recurrent(kind, layers, bidirectional, batch_first, bias, initial_state).eval()
    assert_converts(model, *_recurrent_inputs(model, torch.Generator().manual_seed(1)))


@pytest.mark.parametrize(
    "kind, extra, initial_state",
    [
        ("lstm", {"proj_size": 4}, True),  # projected LSTM: h is w_hr @ (o * tanh(c))
        ("lstm", {"proj_size": 3, "dropout": 0.3}, False),  # recurrent dropout between layers is off in eval mode
        ("rnn", {"nonlinearity": "tanh"}, False),
        ("rnn", {"nonlinearity": "relu"}, True),
    ],
    ids=["lstm-proj-h0", "lstm-proj-dropout", "rnn-tanh", "rnn-relu-h0"],
)
def test_recurrent_variants(kind, extra, initial_state):
    torch.manual_seed(0)
    model = Recurrent(kind, 2, True, False, True, initial_state, **extra).eval()
    assert_converts(model, *_recurrent_inputs(model, torch.Generator().manual_seed(1)))


def test_recurrent_ops_registered():
    aten = torch.ops.aten
    for op in [aten.lstm.input, aten.gru.input, aten.rnn_tanh.input, aten.rnn_relu.input]:
        assert lookup(op) is not None, op
    assert lookup(aten.lstm.data) is None  # packed sequences are not supported


# -- attention --------------------------------------------------------------------------------------------------------

EMBED, HEADS = 8, 2


class SelfAttention(nn.Module):
    """nn.MultiheadAttention over the sequence, mean-pooled into a Linear head (optionally the weights too)."""

    def __init__(self, batch_first, need_weights, use_weights=False):
        super().__init__()
        self.attention = nn.MultiheadAttention(EMBED, HEADS, dropout=0.1, batch_first=batch_first)
        self.batch_first, self.need_weights, self.use_weights = batch_first, need_weights, use_weights
        self.head = nn.Linear(EMBED + (SEQ if use_weights else 0), 3)

    def forward(self, x, key_padding_mask=None):
        seq = x if self.batch_first else x.transpose(0, 1)
        out, weights = self.attention(seq, seq, seq, need_weights=self.need_weights, key_padding_mask=key_padding_mask)
        features = [_batch_major(out, self.batch_first).mean(dim=1)]
        if self.use_weights:
            features.append(weights.mean(dim=1))  # (rows, S): how much each key is attended to, averaged
        return self.head(torch.cat(features, dim=1))


def _padding_mask() -> torch.Tensor:
    """Row 0 pads its last two keys, row 1 its first one, row 2 none."""
    mask = torch.zeros(ROWS, SEQ, dtype=torch.bool)
    mask[0, -2:] = True
    mask[1, 0] = True
    return mask


@pytest.mark.parametrize("batch_first", [True, False], ids=["bf", "sf"])
@pytest.mark.parametrize(
    "need_weights, use_weights, padding_mask",
    [(False, False, False), (True, False, False), (True, True, False), (False, False, True), (True, True, True)],
    ids=["no-weights", "weights", "uses-weights", "no-weights-mask", "uses-weights-mask"],
)
def test_multihead_attention(batch_first, need_weights, use_weights, padding_mask):
    # need_weights=True with a key_padding_mask exports the masked scores as aten.baddbmm(mask, q, k^T).
    torch.manual_seed(0)
    model = SelfAttention(batch_first, need_weights, use_weights).eval()
    x = torch.randn(ROWS, SEQ, EMBED, generator=torch.Generator().manual_seed(1))
    inputs = [x, _padding_mask()] if padding_mask else [x]
    assert_converts(model, *inputs)


D_MODEL, FF = 16, 32


class Encoder(nn.Module):
    """nn.TransformerEncoderLayer, mean-pooled over the sequence into a Linear head."""

    def __init__(self, batch_first, norm_first, activation, causal=False):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(
            D_MODEL, 2, FF, dropout=0.1, activation=activation, batch_first=batch_first, norm_first=norm_first
        )
        self.batch_first, self.causal = batch_first, causal
        self.head = nn.Linear(D_MODEL, 3)

    def forward(self, x):
        seq = x if self.batch_first else x.transpose(0, 1)
        if self.causal:
            mask = nn.Transformer.generate_square_subsequent_mask(SEQ)
            out = self.layer(seq, src_mask=mask, is_causal=True)
        else:
            out = self.layer(seq)
        return self.head(_batch_major(out, self.batch_first).mean(dim=1))


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["bf", "sf"])
def test_transformer_encoder_layer(batch_first, norm_first, activation):
    torch.manual_seed(0)
    model = Encoder(batch_first, norm_first, activation).eval()
    assert_converts(model, torch.randn(ROWS, SEQ, D_MODEL, generator=torch.Generator().manual_seed(1)))


def test_transformer_encoder_layer_causal():
    """``is_causal=True`` reaches scaled_dot_product_attention as its is_causal flag."""
    torch.manual_seed(0)
    model = Encoder(True, False, "relu", causal=True).eval()
    assert_converts(model, torch.randn(ROWS, SEQ, D_MODEL, generator=torch.Generator().manual_seed(1)))


def test_scaled_dot_product_attention_masks():
    """The op itself against torch: boolean, float and causal masks, a fully masked row, an explicit scale."""
    sdpa = lookup(torch.ops.aten.scaled_dot_product_attention.default)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 4, generator=g) for _ in range(3))
    bool_mask = torch.rand(2, 1, 5, 5, generator=g) > 0.4
    bool_mask[0, 0, 1] = False  # a query with no key to attend to
    float_mask = torch.randn(5, 5, generator=g)
    cases = [
        dict(attn_mask=bool_mask),
        dict(attn_mask=float_mask),
        dict(attn_mask=float_mask.masked_fill(~bool_mask[1, 0], float("-inf"))),
        dict(is_causal=True),
        dict(scale=0.3),
    ]
    for case in cases:
        expected = torch.ops.aten.scaled_dot_product_attention.default(q, k, v, **case).numpy()
        jax_case = {
            name: (jnp.asarray(value.numpy()) if isinstance(value, torch.Tensor) else value)
            for name, value in case.items()
        }
        actual = np.asarray(sdpa(*(jnp.asarray(t.numpy()) for t in (q, k, v)), **jax_case))
        assert np.max(np.abs(actual - expected)) <= 1e-5 * np.max(np.abs(expected)), case
