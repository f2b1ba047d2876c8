"""Hugging Face models (built from tiny configs, nothing downloaded), explained as researchers explain them:
token ids in, one score per token at the embedding output, the attention mask held at each row's own value.

For each of the eight families: the outputs are torch's (mask included); the attributions are complete, and for
rows whose mask is the background's they add up to f(x) - E f(background) from torch; for a padded row the
reference the attributions add up against is torch's model on the background's embeddings under the row's own
mask (``inputs_embeds``). A plain masked token model, where shap's and Captum's hooks are exact, agrees with both
on the model split at its embeddings; the BERT- and Llama-like cross-checks (both references incomplete, the
report naming the modules) are those of notebooks/05_hf_text_classifier.ipynb (tests/test_notebooks.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers  # the test extra has it

import xshap

VOCAB, LENGTH = 50, 6
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=16,
    num_labels=2,
)
DECODERS = ("gpt2", "llama", "mistral")  # they pool the last token: padded on the left, as they are served


class T5Classifier(torch.nn.Module):
    """A T5 encoder with a masked-mean head (T5 has no sequence-classification head of its own)."""

    def __init__(self):
        super().__init__()
        config = transformers.T5Config(vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
        self.encoder = transformers.T5EncoderModel(config)
        self.head = torch.nn.Linear(16, 2)

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def forward(self, input_ids, attention_mask):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * weights).sum(1) / weights.sum(1))


def build(family: str):
    torch.manual_seed(0)
    t = transformers
    if family == "bert":
        return t.BertForSequenceClassification(t.BertConfig(**COMMON))
    if family == "distilbert":
        config = t.DistilBertConfig(
            vocab_size=VOCAB, dim=16, n_layers=1, n_heads=2, hidden_dim=32, max_position_embeddings=16, num_labels=2
        )
        return t.DistilBertForSequenceClassification(config)
    if family == "roberta":
        return t.RobertaForSequenceClassification(t.RobertaConfig(**COMMON, pad_token_id=1))
    if family == "gpt2":
        config = t.GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=16, num_labels=2)
        return t.GPT2ForSequenceClassification(config.__class__(**{**config.to_dict(), "pad_token_id": 0}))
    if family == "llama":
        return t.LlamaForSequenceClassification(t.LlamaConfig(**COMMON, num_key_value_heads=1, pad_token_id=0))
    if family == "mistral":
        return t.MistralForSequenceClassification(t.MistralConfig(**COMMON, num_key_value_heads=1, pad_token_id=0))
    if family == "t5":
        return T5Classifier()
    raise ValueError(family)


def token_rows(family: str):
    g = torch.Generator().manual_seed(1)
    background, ids = (
        torch.randint(2, VOCAB, (3, LENGTH), generator=g),
        torch.randint(2, VOCAB, (2, LENGTH), generator=g),
    )
    mask = torch.ones(2, LENGTH, dtype=torch.long)
    if family in DECODERS:
        mask[1, :2] = 0
        ids[1, :2] = 0
    else:
        mask[1, -2:] = 0
    return background, ids, mask


def logits(model, **inputs):
    with torch.no_grad():
        out = model(**inputs)
    return (out.logits if hasattr(out, "logits") else out).numpy()


def check_tokens(family: str, model, result, background, ids, mask):
    with torch.no_grad():
        f = logits(model, input_ids=ids, attention_mask=mask)
        expected = logits(model, input_ids=background, attention_mask=torch.ones_like(background)).mean(axis=0)
    scale = max(1.0, float(np.abs(f).max()))
    values = result.values[0]
    assert values.shape == (2, 2, LENGTH, 16)
    np.testing.assert_allclose(result.outputs, f, atol=1e-5 * scale)
    totals = values.reshape(2, 2, -1).sum(axis=2)
    np.testing.assert_allclose(totals, result.outputs - result.reference_outputs, atol=1e-5 * scale)  # complete
    np.testing.assert_allclose(totals[0], f[0] - expected, atol=1e-5 * scale)  # unpadded row: f(x) - E f
    if family != "t5":  # the padded row: against torch at the background's embeddings under the row's mask
        embeddings = model.get_input_embeddings()(background)
        under_row_mask = logits(model, inputs_embeds=embeddings, attention_mask=mask[1:].expand(3, -1)).mean(axis=0)
        np.testing.assert_allclose(result.reference_outputs[1], under_row_mask, atol=1e-5 * scale)
    padded = np.flatnonzero(mask[1].numpy() == 0)
    assert np.allclose(values[1][:, padded], 0.0, atol=1e-6 * scale)  # a masked token changes nothing


FAMILIES = ("bert", "distilbert", "roberta", "gpt2", "t5", "llama", "mistral")


@pytest.fixture(scope="module")
def explained():
    """family -> (model, rows, TokenExplainer, its result): one conversion per family for the whole module."""
    cache: dict = {}

    def get(family):
        if family not in cache:
            model = build(family).eval()
            background, ids, mask = token_rows(family)
            explainer = xshap.TokenExplainer(model, background)
            cache[family] = model, (background, ids, mask), explainer, explainer.explain(ids, mask)
        return cache[family]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_token_attributions_are_complete(family, explained):
    model, (background, ids, mask), _, result = explained(family)
    check_tokens(family, model, result, background, ids, mask)


def test_vision_transformer_at_its_patch_embeddings():
    """ViT takes float pixels: attributions to the patch embeddings (what every later op reads) add up to
    f(x) - E f, the CLS token and position embeddings being constants."""
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=2,
    )  # fmt: skip
    model = transformers.ViTForImageClassification(config).eval()
    g = torch.Generator().manual_seed(2)
    background, pixels = torch.randn(3, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    result = xshap.LayerExplainer(model, model.vit.embeddings.patch_embeddings, background).explain(pixels)
    f, expected = logits(model, pixel_values=pixels), logits(model, pixel_values=background).mean(axis=0)
    assert result.values[0].shape == (2, 2, 4, 16)  # 4 patches of 16 dims
    np.testing.assert_allclose(result.values[0].reshape(2, 2, -1).sum(axis=2), f - expected, atol=1e-5)


class MaskedBag(torch.nn.Module):
    """A token model whose nonlinearities are modules used once (where shap's and Captum's hooks are exact): the
    embeddings, a masked mean, Linear -> ReLU -> Linear. It takes inputs_embeds, as a Hugging Face model does."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.embed = torch.nn.Embedding(VOCAB, 8)
        self.hidden, self.relu, self.out = torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None):
        embeds = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        weights = attention_mask.unsqueeze(-1).to(embeds.dtype)
        return self.out(self.relu(self.hidden((embeds * weights).sum(1) / weights.sum(1))))


class DictBag(MaskedBag):
    """MaskedBag returning a dict, as a ModelOutput is one."""

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None):
        return {"scores": super().forward(input_ids, attention_mask, inputs_embeds), "hidden": inputs_embeds}


@pytest.fixture(scope="module")
def bag():
    """The bag model returning a dict: output= picks the scores, for xshap and for the references alike."""
    model = DictBag().eval()
    background, ids, mask = token_rows("bert")
    return model, (background, ids, mask), xshap.TokenExplainer(model, background, output="scores")


def test_token_crosscheck_agrees_where_the_references_are_exact(bag):
    model, (background, ids, mask), explainer = bag
    report = xshap.crosscheck_tokens(model, background, ids, mask=mask, explainer=explainer)
    assert [ref.verdict for ref in report.references] == ["AGREE", "AGREE"], report.to_text()
    assert not report.culprits, report.culprits  # the mask is held, for the references too: no product of inputs


def test_token_explanation_is_a_text_plot(bag):
    import shap

    _, (_, ids, mask), explainer = bag
    words = [f"w{i}" for i in range(LENGTH)]
    explanation = explainer.explanation(ids, mask, tokens=words)
    assert explanation.values.shape == (2, LENGTH, 2) and list(explanation.data[0]) == words
    row = explanation[0, :, 1]
    np.testing.assert_allclose(
        row.base_values + row.values.sum(), explainer.explain(ids, mask).outputs[0, 1], atol=1e-5
    )
    html = shap.plots.text(row, display=False)
    assert "w3" in html


def test_token_explainer_refuses_bad_input_by_name():
    from xshap.errors import InputError

    model = MaskedBag().eval()
    background, ids, mask = token_rows("bert")
    with pytest.raises(InputError, match="integer ids"):
        xshap.TokenExplainer(model, background.float())
    with pytest.raises(InputError, match="background_mask has shape"):
        xshap.TokenExplainer(model, background, torch.ones(3, LENGTH + 1))
    with pytest.raises(InputError, match="get_input_embeddings"):
        xshap.TokenExplainer(torch.nn.Linear(2, 2), background)
    with pytest.raises(Exception, match=r"returns keys \['scores', 'hidden'\]; choose the output with output="):
        xshap.TokenExplainer(DictBag().eval(), background)  # no logits: say which keys there are
