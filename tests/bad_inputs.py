"""Every bad input xshap is tested against, and the error it gives (issue 6).

``python -m tests.bad_inputs`` runs each case and writes docs/bad-inputs.md with the message each one
actually raises; tests/test_bad_inputs.py runs the same cases and checks that the table is current.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"


@dataclass
class Case:
    title: str
    run: Callable[[], object]
    error: str  # the exception class name expected ("UserWarning" for a warning)
    match: str  # a regex the message must contain


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2)).eval()


BG = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
X = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)


def _explain(model=None, background=BG, x=X, **options):
    import xshap

    return xshap.DeepExplainer(model if model is not None else _mlp(), background, **options).shap_values(x)


def _with_nan():
    bad = X.copy()
    bad[1, 2] = np.nan
    return _explain(x=bad)


def _bg_with_inf():
    bad = BG.copy()
    bad[0, 0] = np.inf
    return _explain(background=bad)


class _Sorting(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        return torch.cummax(torch.sort(self.fc(x), dim=1).values, dim=1).values


class _Branching(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 1)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


class _Tokens(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(10, 3)
        self.fc = torch.nn.Linear(12, 1)

    def forward(self, tokens):
        return self.fc(self.embedding(tokens).flatten(1))


class _TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 1)

    def forward(self, x, y):
        return self.fc(x * y)


class _Pair(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        h = self.fc(x)
        return h, h.sum(1)


class _Scalar(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x).sum()


class _BatchSoftmax(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return torch.softmax(self.fc(x), dim=0)


class _Residual(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
        self.out = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.out(self.inner(torch.tanh(x)) + x)  # x reaches the output around inner's input


def _changed_weights():
    import xshap

    model = _mlp()
    explainer = xshap.DeepExplainer(model, BG)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    return explainer.shap_values(X)


def _edited(edit):
    """An explainer built, then the model edited: ``edit(model)``; explaining again must refuse."""

    def run():
        import xshap

        model = _mlp()
        explainer = xshap.DeepExplainer(model, BG)
        edit(model)
        return explainer.shap_values(X)

    return run


def _numpy_edit(model):
    model[0].weight.detach().numpy()[0, 0] += 1.0


def _replace_layer(model):
    model[1] = torch.nn.Tanh()


class _ExpOverflow(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 1)

    def forward(self, x):
        return torch.exp(50 * self.fc(x))


def _overflowing_background():
    torch.manual_seed(0)
    return _explain(_ExpOverflow().eval(), background=BG * 10)


class _Outputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return {"scores": self.fc(x), "features": x}


def _quantised():
    model = torch.ao.quantization.quantize_dynamic(_mlp(), {torch.nn.Linear}, dtype=torch.qint8)
    return _explain(model)


def _on_meta():
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    return _explain(model)


def _float32_only_ill_conditioned():
    import jax
    import jax.numpy as jnp

    def f(x):
        logits = (x.astype(jnp.float32) @ jnp.ones((4, 3), jnp.float32)) * 1e5
        return jax.nn.softmax(logits + jnp.arange(3, dtype=jnp.float32) * 0.1, axis=-1)

    return _explain(f, background=np.zeros((2, 4), np.float32), x=np.arange(12, dtype=np.float32).reshape(3, 4))


def _training_mode():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return _explain(model.train())


def _jax_sort():
    import jax.numpy as jnp

    return _explain(lambda x: jnp.sort(x, axis=1)[:, :2])


def _cli_file(content: Callable[[Path], None], suffix: str):
    from xshap.loading import load_array, load_program

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"file{suffix}"
        content(path)
        return load_program(path) if suffix == ".pt2" else load_array(path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo this should never run",))


def _evil_pt(path: Path) -> None:
    torch.save({"rows": _Evil()}, path)


def _evil_npy(path: Path) -> None:
    np.save(path, np.array([_Evil()], dtype=object), allow_pickle=True)


def _evil_pt2(path: Path) -> None:
    clean = path.with_name("clean.pt2")
    torch.export.save(torch.export.export(_mlp(), (torch.from_numpy(X[:1]),)), clean)
    payload = io.BytesIO()
    torch.save(_Evil(), payload)
    with zipfile.ZipFile(clean) as zin, zipfile.ZipFile(path, "w") as zout:
        for item in zin.infolist():
            data = payload.getvalue() if "sample_inputs" in item.filename else zin.read(item.filename)
            zout.writestr(item, data)


def _pt2_other_rows():
    import xshap

    program = torch.export.export(_mlp(), (torch.from_numpy(X),))
    return xshap.DeepExplainer(program, BG[:, :3]).shap_values(X[:, :3])


def _pt2_rows_see_each_other():
    import xshap

    program = torch.export.export(_BatchSoftmax().eval(), (torch.from_numpy(X),))  # a static batch of 3 rows
    return xshap.DeepExplainer(program, BG).shap_values(X)


def _crafted_pt2(build: Callable[[bytes, Path], bytes]) -> Callable[[Path], None]:
    """A .pt2 file made by ``build(clean archive, marker path)`` (tests/attacks.py)."""

    def write(path: Path) -> None:
        from tests import attacks

        path.write_bytes(build(attacks.clean_program(), path.with_name("ran")))

    return write


def _attack(name: str, *args) -> Callable[[bytes, Path], bytes]:
    def build(clean: bytes, marker: Path) -> bytes:
        from tests import attacks

        return getattr(attacks, name)(clean, *(marker if a is _MARKER else a for a in args))

    return build


_MARKER = object()


def _non_aten_target(clean: bytes, marker: Path) -> bytes:
    from tests import attacks

    def edit(document):
        node = {"target": "torch.os.system", "inputs": [], "outputs": [], "metadata": {}, "name": "evil"}
        document["graph_module"]["graph"]["nodes"].insert(0, node)

    return attacks.modified(clean, program=edit)


def _expression(clean: bytes, marker: Path) -> bytes:
    from tests import attacks

    return attacks.expression_injection(attacks.clean_program(dynamic=True), marker)


def _bomb(clean: bytes, marker: Path) -> bytes:
    from tests import attacks

    return attacks.bomb_program(clean, 2 << 30)


def _npy_lies(path: Path) -> None:
    from tests import attacks

    path.write_bytes(attacks.npy_header((1000, 16)) + b"\0" * 64)


def _sparse_pt(path: Path) -> None:
    torch.save(torch.zeros(3, 4).to_sparse(), path)


def _attribute(**kwargs):
    import xshap

    return xshap.attribute(_mlp(), torch.from_numpy(X), torch.from_numpy(BG), **kwargs)


CASES = [
    Case(
        "X rows of another shape than the background's",
        lambda: _explain(x=X[:, :3]),
        "InputError",
        r"rows of shape \(3,\)",
    ),
    Case(
        "X of another dtype than the background",
        lambda: _explain(x=X.astype(np.float64)),
        "InputError",
        "dtype float64",
    ),
    Case("NaN in the explained rows", _with_nan, "InputError", r"NaN/Inf value\(s\), first at index \(1, 2\)"),
    Case("Inf in the background", _bg_with_inf, "InputError", r"background holds 1 NaN/Inf"),
    Case("empty background", lambda: _explain(background=BG[:0]), "InputError", "empty"),
    Case("a scalar as background", lambda: _explain(background=np.float32(1.0)), "InputError", "scalar"),
    Case(
        "two inputs given to a model of one",
        lambda: _explain(background=[BG, BG], x=[X, X]),
        "InputError",
        r"forward\(input\) cannot take the 2 input",
    ),
    Case(
        "one X given to an explainer built with two inputs",
        lambda: _explain(_TwoInputs(), background=[BG, BG], x=X),
        "InputError",
        "built with several inputs",
    ),
    Case("model in training mode (Dropout/BatchNorm)", _training_mode, "UserWarning", "training mode .*eval mode"),
    Case(
        "ops the converter does not know (all listed)",
        lambda: _explain(_Sorting()),
        "UnsupportedOperatorError",
        r"aten\.sort.*\n?.*aten\.cummax|aten\.cummax.*aten\.sort",
    ),
    Case(
        "data-dependent control flow",
        lambda: _explain(_Branching()),
        "ExportError",
        "could not capture the model.*\nHint",
    ),
    Case(
        "integer inputs without an embedding explained",
        lambda: _explain(_Tokens(), background=np.zeros((4, 4), np.int64), x=np.ones((2, 4), np.int64)),
        "InputError",
        r"dtype int64.*\(model, layer\)",
    ),
    Case("a model returning a tuple", lambda: _explain(_Pair()), "ConversionError", "returns 2 value"),
    Case(
        "a model returning a scalar",
        lambda: _explain(_Scalar()),
        "ConversionError",
        "leading axis is the batch axis|returns shape",
    ),
    Case(
        "weights changed after the explainer was built",
        _changed_weights,
        "ModelChangedError",
        "changed after xshap converted it: 0.weight changed",
    ),
    Case(
        "weights edited through .numpy() after the explainer was built",
        _edited(_numpy_edit),
        "ModelChangedError",
        "0.weight changed",
    ),
    Case(
        "a submodule replaced after the explainer was built",
        _edited(_replace_layer),
        "ModelChangedError",
        "module 1 was replaced",
    ),
    Case(
        "a forward that overflows on a background row",
        _overflowing_background,
        "NonFiniteError",
        r"background row \d+.*aten\.exp\.default",
    ),
    Case(
        "a dict output without logits",
        lambda: _explain(_Outputs()),
        "ConversionError",
        r"'scores' \(shape \(1, 2\)\).*output=",
    ),
    Case(
        "an output name the model does not return",
        lambda: _explain(_Outputs(), output="logits"),
        "ConversionError",
        "has no output 'logits'",
    ),
    Case("X with no rows", lambda: _explain(x=X[:0]), "InputError", "no rows"),
    Case("a dynamically quantised model", _quantised, "UnsupportedModelError", "quantised"),
    Case("a model on the meta device", _on_meta, "UnsupportedModelError", "meta device"),
    Case(
        "a background with another feature count than the model's",
        lambda: _explain(background=np.zeros((8, 5), np.float32), x=np.zeros((2, 5), np.float32)),
        "ModelInputError",
        r"does not run on rows like the background's \(input 0: rows of shape \(5,\)",
    ),
    Case(
        "rows of a batch that see each other, one background row",
        lambda: _explain(_BatchSoftmax(), background=BG[:1]),
        "BatchDependenceError",
        "depends on the other rows",
    ),
    Case(
        "ill-conditioned rows of a function that fixes float32",
        _float32_only_ill_conditioned,
        "PrecisionError",
        "cannot be recomputed in float64",
    ),
    Case(
        "rows of a batch that see each other (softmax over dim 0)",
        lambda: _explain(_BatchSoftmax()),
        "BatchDependenceError",
        "depends on the other rows",
    ),
    Case(
        "BatchNorm without running statistics",
        lambda: _explain(
            torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3, track_running_stats=False)).eval()
        ),
        "BatchDependenceError",
        "track_running_stats=False",
    ),
    Case("a JAX primitive without a DeepLIFT rule", _jax_sort, "NoRuleError", "sort"),
    Case("an unknown rule set", lambda: _explain(rules="integrated"), "InputError", "unknown rule set 'integrated'"),
    Case(
        'rules="shap" for a JAX function', lambda: _explain(lambda x: x * 2.0, rules="shap"), "InputError", "no modules"
    ),
    Case(
        "interim layer bypassed by a residual connection",
        lambda: _explain((_Residual().eval(), "inner")),
        "ConversionError",
        "does not determine the output",
    ),
    Case(
        "interim layer that is not a submodule",
        lambda: _explain((_mlp(), "encoder")),
        "ConversionError",
        "no submodule 'encoder'",
    ),
    Case(
        "ranked outputs in an unknown order",
        lambda: (
            __import__("xshap").DeepExplainer(_mlp(), BG).shap_values(X, ranked_outputs=1, output_rank_order="median")
        ),
        "ValueError",
        "output_rank_order",
    ),
    Case("Captum-style target out of range", lambda: _attribute(target=5), "InputError", "out of range"),
    Case("Captum-style call without a target on a 2-output model", lambda: _attribute(), "InputError", "pass target"),
    Case(
        "single-baseline DeepLift given several rows",
        lambda: __import__("xshap").DeepLift(_mlp(), BG),
        "InputError",
        "one baseline row",
    ),
    Case(
        "a .pt file holding a pickled object",
        lambda: _cli_file(_evil_pt, ".pt"),
        "UnsafeFileError",
        "weights_only=True",
    ),
    Case("a .npy file holding objects", lambda: _cli_file(_evil_npy, ".npy"), "UnsafeFileError", "allow_pickle"),
    Case(
        "a .pt2 archive with a pickled object as its sample inputs",
        lambda: _cli_file(_evil_pt2, ".pt2"),
        "UnsafeFileError",
        r"sample_inputs/model.pt\): not loadable with torch.load\(weights_only=True\)",
    ),
    Case(
        "a .pt2 with AOTInductor compiled code (a shared library)",
        lambda: _cli_file(_crafted_pt2(_attack("aoti_library", b"\x7fELF")), ".pt2"),
        "UnsafeFileError",
        "AOTInductor compiled code",
    ),
    Case(
        "a .pt2 with a second program and a pickled weight",
        lambda: _cli_file(_crafted_pt2(_attack("second_program", _MARKER)), ".pt2"),
        "UnsafeFileError",
        "a second program",
    ),
    Case(
        "a .pt2 weight that torch would unpickle (use_pickle)",
        lambda: _cli_file(_crafted_pt2(_attack("pickled_weight", _MARKER)), ".pt2"),
        "UnsafeFileError",
        "weights_only=False",
    ),
    Case(
        "a .pt2 whose graph calls a Python function",
        lambda: _cli_file(_crafted_pt2(_non_aten_target), ".pt2"),
        "UnsafeFileError",
        "neither an ATen operator",
    ),
    Case(
        "a .pt2 whose symbolic size is Python code",
        lambda: _cli_file(_crafted_pt2(_expression), ".pt2"),
        "UnsafeFileError",
        "size expression",
    ),
    Case(
        "a .pt2 with two ZIP64 end records (two archives in one file)",
        lambda: _cli_file(_crafted_pt2(_attack("ambiguous_zip64", _MARKER)), ".pt2"),
        "UnsafeFileError",
        "two end records",
    ),
    Case(
        "a .pt2 entry inflating to 2 GiB (a decompression bomb)",
        lambda: _cli_file(_crafted_pt2(_bomb), ".pt2"),
        "FileTooLargeError",
        "over the limit",
    ),
    Case(
        "a .npy header claiming more data than the file holds",
        lambda: _cli_file(_npy_lies, ".npy"),
        "UnsafeFileError",
        "the file holds 64",
    ),
    Case("a .pt holding a sparse tensor", lambda: _cli_file(_sparse_pt, ".pt"), "UnsafeFileError", "sparse tensor"),
    Case(
        "a .pt2 whose rows see each other in its batch",
        _pt2_rows_see_each_other,
        "BatchDependenceError",
        "rows see each other",
    ),
    Case(
        "a .pt2 exported for rows of another shape than the background's",
        _pt2_other_rows,
        "ConversionError",
        "rows given have shape",
    ),
]


def outcome(case: Case) -> tuple[str, str]:
    """(exception class name, message) that the case raises; ("", "") if it raises nothing."""
    try:
        case.run()
    except Warning as warning:
        return type(warning).__name__, str(warning)
    except Exception as error:  # every case should raise; report whatever it does
        return type(error).__name__, str(error)
    return "", ""


def check(case: Case) -> tuple[bool, str, str]:
    name, message = outcome(case)
    return name == case.error and re.search(case.match, message, re.S) is not None, name, message


def table() -> str:
    lines = [
        "# Bad input and the error it gives",
        "",
        "Generated by `python -m tests.bad_inputs` from the cases that `tests/test_bad_inputs.py` runs; each row is",
        "what xshap actually raised (first lines of the message).",
        "",
        "| bad input | raises | message |",
        "|---|---|---|",
    ]
    for case in CASES:
        ok, name, message = check(case)
        shown = " ".join(message.split()).replace(str(DOC.parents[1]) + "/", "")
        shown = re.sub(r"/tmp/tmp\w+/", "<tmp>/", shown)
        shown = shown if len(shown) <= 400 else shown[:399] + "…"
        shown = shown.replace("|", "\\|")
        lines.append(f"| {case.title} | `{name or 'nothing'}` | {shown} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(table(), encoding="utf-8")
    print(f"wrote {DOC}")
