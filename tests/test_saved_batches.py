"""A user's ordinary exports all load and explain alike (issue 15): for a dynamic batch (the usual export for
serving, specialised to one row; with a lower bound of 2, run 2 rows at a time) and for a static batch of k
rows (k rows at a time, its rows checked to be independent), with and without extra files (the one-row export
is tests/test_cli.py's). Each
gives the live module's attributions and the same culprits; a program whose rows see each other is refused.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch.export import Dim

import xshap
from converters import BatchDependenceError, ConversionError, from_exported
from xshap.check.culprits import find_culprits
from xshap.check.references import RULE_TABLES
from xshap.files import load_program


class Reused(torch.nn.Module):
    """One ReLU instance called twice and a view that uses the batch size: a culprit, and a shape to specialise."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.out = torch.nn.Linear(5, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 3)
        self.act = torch.nn.ReLU()

    def forward(self, x):
        h = self.act(self.fc2(self.act(self.fc1(x))))
        return self.out(h).view(x.shape[0], -1)


class MixesRows(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(5, 3)

    def forward(self, x):
        return torch.softmax(self.fc(x), dim=0)


# (export options, the batch the converted graph computes at once); the one-row export is tests/test_cli.py's
EXPORTS = {
    "dynamic batch, extra files": (dict(rows=4, dynamic_shapes=({0: Dim("batch")},), extra_files={"a.txt": "b"}), 1),
    "dynamic batch of at least 2": (dict(rows=4, dynamic_shapes=({0: Dim("batch", min=2)},)), 2),
    "static batch of 3, extra files": (dict(rows=3, extra_files={"about.txt": "k=3"}), 3),
}


def saved(model, rows, dynamic_shapes=None, extra_files=None, tmp_path=None):
    x = torch.randn(rows, 5)
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=dynamic_shapes), buffer, extra_files=extra_files)
    path = tmp_path / "m.pt2"
    path.write_bytes(buffer.getvalue())
    return load_program(path)


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    model = Reused().eval()
    background, X = torch.randn(16, 5), torch.randn(7, 5)
    live = xshap.DeepExplainer(model, background).shap_values(X)
    return model, background, X, live


def _culprits(converted):
    tables = {name: table() for name, table in RULE_TABLES.items()}
    return {(c.kind, c.module_path) for c in find_culprits(converted, tables, None)}


@pytest.mark.parametrize("kind", sorted(EXPORTS))
def test_ordinary_exports_load_and_explain_as_the_live_module(data, kind, tmp_path):
    model, background, X, live = data
    options, batch_size = EXPORTS[kind]
    program = saved(model, tmp_path=tmp_path, **options)
    explainer = xshap.DeepExplainer(program, background)
    converted = explainer.model.converted
    assert converted.batch_size == batch_size
    np.testing.assert_allclose(explainer.shap_values(X), live, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(converted(X.numpy())), model(X).detach().numpy(), rtol=1e-5, atol=1e-6)
    converted.validate(X.numpy()).raise_if_failed()
    assert ("reused module", "act") in _culprits(converted)


@pytest.mark.parametrize("shapes", [None, ({0: Dim("batch")},)], ids=["static batch of 3", "dynamic batch"])
def test_a_saved_program_whose_rows_see_each_other_is_refused(tmp_path, shapes):
    torch.manual_seed(0)
    program = saved(MixesRows().eval(), rows=3, dynamic_shapes=shapes, tmp_path=tmp_path)
    with pytest.raises(BatchDependenceError, match="rows see each other"):
        from_exported(program, torch.randn(6, 5))


def test_rows_of_another_shape_than_the_program_takes_are_refused(data, tmp_path):
    model, *_ = data
    program = saved(model, rows=3, tmp_path=tmp_path)
    with pytest.raises(ConversionError, match="rows given have shape"):
        from_exported(program, torch.randn(6, 4))
