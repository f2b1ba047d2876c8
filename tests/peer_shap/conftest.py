"""shap's own DeepExplainer tests (``test_deep.py``, shap v0.51.0, unmodified) run against xshap.

``test_deep.py`` and ``shap_conftest.py`` (shap's ``tests/conftest.py``) are verbatim copies of
``../shared/peer-tests/shap`` (MIT, ``LICENSE``; ``tests/test_peer_copies.py`` checks they stay byte-identical).
Never edit them: this conftest is what adapts the run.

- ``shap.DeepExplainer`` is swapped for ``xshap.DeepExplainer`` in every test, so each ``shap.DeepExplainer(...)``
  the tests build is xshap's (its ``shap_values``, ``__call__`` and ``expected_value``, asserted as shap asserts
  its own: additivity within 1e-3 and ``shap_values == e(X).values``).
- TensorFlow's tests (``test_tf_*``) are skipped: TensorFlow is not installed here (``test_tf_deep_imbdb_transformers``
  also downloads a transformers pipeline, and explains it with shap's Partition explainer, not DeepExplainer).
- ``fetch_california_housing`` downloads its data; as the peer-tests README says, it is replaced by random data
  of its dtype and row shape (X (n, 8), y (n,), float64; the torch tests assert only additivity and
  ``shap_values == e(X).values``), with a tenth of its 20640 rows: the tests train a small net for an epoch over
  every row, which is shap's cost, not xshap's, and CI's time is short.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.peer_shap.shap_conftest import global_random_seed, mpl_test_cleanup  # noqa: F401  (shap's fixtures)


@pytest.fixture()
def random_seed() -> int:
    """shap's fixture (its --random-seed option is not ours): a fixed seed, so a failure reproduces."""
    return 0


def pytest_collection_modifyitems(config, items):
    skip_tf = pytest.mark.skip(reason="TensorFlow is not installed: xshap explains torch and JAX models")
    for item in items:
        if item.name.startswith("test_tf_"):
            item.add_marker(skip_tf)


HOUSING_ROWS = 2064


def _california_housing(*args, **kwargs):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(HOUSING_ROWS, 8)), rng.normal(size=HOUSING_ROWS)
    if kwargs.get("return_X_y"):
        return X, y
    from sklearn.utils import Bunch

    return Bunch(data=X, target=y, feature_names=[f"f{i}" for i in range(8)])


@pytest.fixture(autouse=True)
def xshap_in_place_of_shap(monkeypatch):
    import shap
    import sklearn.datasets

    import xshap

    monkeypatch.setattr(shap, "DeepExplainer", xshap.DeepExplainer)
    monkeypatch.setattr(shap.explainers, "DeepExplainer", xshap.DeepExplainer)
    monkeypatch.setattr(sklearn.datasets, "fetch_california_housing", _california_housing)
    yield
