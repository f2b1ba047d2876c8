"""crosscheck_tokens on token models that take no ``inputs_embeds``: the model is split at the layer by replacing
the layer's output (``xshap.check.tails.LayerTail``), the padding mask and position ids computed from the row's own
ids beside the layer, and shap and Captum explain that split. The split's forward is torch's own model; where the
references are exact (module nonlinearities used once, no product of inputs) they agree with xshap within 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xshap
from xshap.check.tails import LayerTail, TailError, layer_values

VOCAB, LENGTH, DIM, PAD = 30, 5, 6, 0


class PaddedBag(torch.nn.Module):
    """Ids in (0 pads), no mask argument, no inputs_embeds: the mask and the positions are computed from the ids
    beside the embedding; a masked mean, Linear -> ReLU -> Linear (what shap's and Captum's hooks handle exactly)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.embed = torch.nn.Embedding(VOCAB, DIM)
        self.position = torch.nn.Embedding(LENGTH, DIM)
        self.hidden, self.relu, self.out = torch.nn.Linear(DIM, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)

    def forward(self, ids):
        mask = (ids != PAD).to(torch.float32).unsqueeze(-1)
        x = self.embed(ids) + self.position(torch.arange(ids.shape[1]))
        return self.out(self.relu(self.hidden((x * mask).sum(1) / mask.sum(1))))


class PaddedAttention(PaddedBag):
    """One attention layer over the embeddings, padded keys masked out by a mask computed from the ids."""

    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = (torch.nn.Linear(DIM, DIM) for _ in range(3))
        self.softmax = torch.nn.Softmax(dim=-1)

    def forward(self, ids):
        keep = ids != PAD
        x = self.embed(ids) + self.position(torch.arange(ids.shape[1]))
        scores = self.query(x) @ self.key(x).transpose(1, 2) / DIM**0.5
        scores = scores.masked_fill(~keep[:, None, :], -1e9)
        attended = self.softmax(scores) @ self.value(x)
        weights = keep.to(x.dtype).unsqueeze(-1)
        return self.out(self.relu(self.hidden((attended * weights).sum(1) / weights.sum(1))))


class PairEmbedding(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, DIM)

    def forward(self, ids):
        e = self.embed(ids)
        return e, 2 * e


class TupleLayer(torch.nn.Module):
    """A layer returning a tuple: no one input of the references stands for its value."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.pair, self.out = PairEmbedding(), torch.nn.Linear(DIM, 2)

    def forward(self, ids):
        a, b = self.pair(ids)
        return self.out((a * b.tanh()).mean(1))


def rows():
    g = torch.Generator().manual_seed(7)
    background = torch.randint(1, VOCAB, (4, LENGTH), generator=g)
    ids = torch.randint(1, VOCAB, (3, LENGTH), generator=g)
    ids[1, -2:] = PAD  # rows padded differently from each other and from the background
    ids[2, -1:] = PAD
    return background, ids


@pytest.mark.parametrize("model_type", [PaddedBag, PaddedAttention])
def test_split_tail_is_the_model(model_type):
    """The tail at a row's own layer value is torch's model on the row; at the background's layer values it is
    the model under the row's own padding (the mask held), which xshap's reference outputs equal."""
    model = model_type().eval()
    background, ids = rows()
    explainer = xshap.TokenExplainer(model, background, layer="embed")
    result = explainer.explain(ids)
    with torch.no_grad():
        full = model(ids)
        for i in range(len(ids)):
            tail = LayerTail(model, [model.embed], (ids[i : i + 1],))
            np.testing.assert_allclose(tail(model.embed(ids[i : i + 1])), full[i : i + 1], rtol=1e-6, atol=1e-6)
            under_row = tail(model.embed(background)).mean(0).numpy()
            np.testing.assert_allclose(result.reference_outputs[i], under_row, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.outputs, full.numpy(), rtol=1e-5, atol=1e-6)
    totals = result.values[0].reshape(3, 2, -1).sum(axis=2)
    np.testing.assert_allclose(totals, result.outputs - result.reference_outputs, rtol=1e-4, atol=1e-6)


def test_crosscheck_without_inputs_embeds_agrees_where_the_references_are_exact():
    model = PaddedBag().eval()
    background, ids = rows()
    report = xshap.crosscheck_tokens(
        model, background, ids, explainer=xshap.TokenExplainer(model, background, layer="embed")
    )
    assert [ref.verdict for ref in report.references] == ["AGREE", "AGREE"], report.to_text()
    assert max(float(ref.max_abs_diff.max()) for ref in report.references) <= 1e-4


def test_crosscheck_on_padded_attention_runs_both_references():
    """Attention (products of the layer's value, a masked softmax): the references run on the split; where one is
    complete it equals xshap within 1e-4, and where it is not the report says it is the reference's gap."""
    model = PaddedAttention().eval()
    background, ids = rows()
    report = xshap.crosscheck_tokens(
        model, background, ids, explainer=xshap.TokenExplainer(model, background, layer="embed")
    )
    assert len(report.references) == 2 and all(ref.error is None for ref in report.references), report.to_text()
    for ref in report.references:
        assert set(ref.verdicts.ravel()) <= {"AGREE", "REFERENCE_INCOMPLETE"}, report.to_text()
        assert np.all(ref.max_abs_diff[ref.verdicts == "AGREE"] <= 1e-4), report.to_text()


def test_a_layer_that_cannot_be_split_says_why():
    model = TupleLayer().eval()
    background, ids = rows()
    report = xshap.crosscheck_tokens(
        model, background, ids, explainer=xshap.TokenExplainer(model, background, layer="pair")
    )
    assert report.references == []
    assert any("returns a tuple, not one tensor" in note for note in report.notes), report.notes
    with pytest.raises(TailError, match="called 0 time"):
        layer_values(model, [torch.nn.Linear(2, 2)], (ids,))


def test_a_mask_for_a_model_that_takes_none_is_refused():
    from xshap.errors import InputError

    model = PaddedBag().eval()
    background, ids = rows()
    explainer = xshap.TokenExplainer(model, background, layer="embed")
    with pytest.raises(InputError, match="takes no attention_mask"):
        explainer.explain(ids, (ids != PAD).long())
