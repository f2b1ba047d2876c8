"""Rows of a batch must not see each other: DeepSHAP explains every row on its own.

The converter exports the model for one row and maps it over rows, which is exactly how torch computes
a row alone. A model that mixes rows (softmax or a mean over the batch axis, BatchNorm that normalises
with the statistics of the batch because ``track_running_stats=False``) gives a different answer for a
row inside a batch, and any per-row attribution of it is meaningless. Such a model is refused with the
layer that mixes the rows, never converted silently wrong.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import torch
import torch.utils._pytree as pytree

from converters.errors import ConversionError
from converters.export import eval_mode


class BatchDependenceError(ConversionError):
    """A row's output depends on the other rows of its batch."""


def check_batch_statistics_modules(model: torch.nn.Module) -> None:
    """BatchNorm without running statistics normalises with the batch's own statistics, even in eval."""
    offenders = [
        f"{name or '<root>'} [{type(module).__name__}]"
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.running_mean is None
    ]
    if offenders:
        raise BatchDependenceError(
            f"{', '.join(offenders)} ha{'s' if len(offenders) == 1 else 've'} track_running_stats=False: it "
            "normalises every row with the mean and variance of the whole batch, even in eval mode, so a row's "
            "output depends on the other rows. DeepSHAP explains each row on its own; give the layer running "
            "statistics (track_running_stats=True, estimated on training data) or replace it by a per-row norm."
        )


def probe_rows(examples: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The example rows plus two rows made from the first, so that the check never has fewer than three rows
    (a background of one row once skipped it, and a softmax over the batch axis then gave all-zero attributions).
    Float rows are scaled and shifted; integer rows (token ids) are shifted within the range the first row uses,
    so they stay valid ids; boolean rows (masks) are rolled along their last axis."""
    return [torch.cat([x, *_variants(x[:1])]) for x in examples]


def _variants(row: torch.Tensor) -> list[torch.Tensor]:
    if row.is_floating_point() or row.is_complex():
        scale = float(row.abs().max()) if row.numel() and bool(torch.isfinite(row).all()) else 1.0
        scale = scale or 1.0
        return [row * -0.5 + 0.25 * scale, row * 1.5 - 0.5 * scale]
    if row.dtype == torch.bool:
        rolled = row.roll(1, dims=-1) if row.ndim > 1 else ~row
        return [rolled, ~row]
    top = int(row.max()) + 1 if row.numel() else 1
    return [(row + 1) % top, (row + 2) % top]


def check_rows_independent(
    model: torch.nn.Module, examples: Sequence[torch.Tensor], captured=None, rtol: float = 1e-4, leaf: int = 0
) -> None:
    """Run ``model`` on a batch of the example rows and on each row alone; refuse if the rows differ.

    Needs at least two rows (``probe_rows`` makes them); the offending module is found by comparing, module by
    module, what each computes for the batch and for the rows alone. With the ``captured`` graph, the ops of
    that module that act over dim 0 are named with their source lines. ``leaf``: the output compared, for a model
    that returns a dict / ModelOutput / tuple (its position among the flattened outputs).
    """
    n_rows = min(int(x.shape[0]) for x in examples)
    if n_rows < 2:
        return
    batch = [x[:n_rows] for x in examples]
    if _rows_alone_match(model, batch, rtol, leaf) or _rows_alone_match_in_float64(model, batch, rtol, leaf):
        return  # equal, or different only by the rounding of batched kernels (see _rows_alone_match_in_float64)
    path, where = _first_mixing_module(model, batch, rtol)
    suspects = _ops_over_dim0(captured, path) if captured is not None and path is not None else []
    raise BatchDependenceError(
        f"the model's output for a row depends on the other rows of the batch (first seen in {where}"
        + (f"; ops over dim 0 there: {'; '.join(suspects)}" if suspects else "")
        + "). "
        "A softmax, mean, sum or norm over the batch axis (dim 0) mixes rows; DeepSHAP explains each row on "
        "its own, so xshap refuses to give attributions that would silently differ from the model's batched "
        "output. Compute over the feature axes instead."
    )


def _rows_alone_match(model: torch.nn.Module, batch: list[torch.Tensor], rtol: float, leaf: int = 0) -> bool:
    with torch.no_grad(), eval_mode(model, warn=False):
        together = _leaf(model(*batch), leaf)
        alone = torch.cat([_leaf(model(*[x[i : i + 1] for x in batch]), leaf) for i in range(len(batch[0]))])
    return _close(together, alone, rtol)


FLOAT64_RTOL = 1e-9


def _rows_alone_match_in_float64(model: torch.nn.Module, batch: list[torch.Tensor], rtol: float, leaf: int) -> bool:
    """The same comparison on a float64 copy: a batched kernel rounds differently from a one-row one, and an
    ill-conditioned model (a softmax over logits of 1e6 that differ by 0.1) turns that rounding into a large
    difference in float32. Rows that really mix differ in float64 too; rounding does not survive it."""
    if all(not x.is_floating_point() or x.dtype == torch.float64 for x in batch) and all(
        p.dtype == torch.float64 for p in model.parameters() if p.is_floating_point()
    ):
        return False  # already float64: the difference stands
    try:
        twin = copy.deepcopy(model).double()
    except Exception:  # noqa: BLE001 - a model that cannot be copied: keep the float32 verdict
        return False
    rows = [x.double() if x.is_floating_point() else x for x in batch]
    try:  # held to float64's rounding: a weak real mixing (a batch mean with a small weight) stays a mixing
        return _rows_alone_match(twin, rows, FLOAT64_RTOL, leaf)
    except Exception:  # noqa: BLE001 - a model that does not run in float64: keep the float32 verdict
        return False


def _leaf(output, index: int):
    """One tensor of what the model returned (the pytree leaves in torch.export's order)."""
    if isinstance(output, torch.Tensor):
        return output
    return pytree.tree_leaves(output)[index]


def _close(a, b, rtol: float) -> bool:
    """Equal within ``rtol`` of the largest finite magnitude; NaN matches NaN and an infinity itself."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        return False
    if a.is_floating_point() or a.is_complex():
        same = (a == b) | (torch.isnan(a) & torch.isnan(b))
        finite = torch.isfinite(a) & torch.isfinite(b)
        if bool((~same & ~finite).any()):
            return False
        if not bool(finite.any()):
            return True
        a, b = a[finite], b[finite]
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-30)
    return float((a - b).abs().max()) <= rtol * scale


def _ops_over_dim0(captured, module_path: str) -> list[str]:
    """'op at file:line (code)' for each op of the module whose dim argument includes 0."""
    found = []
    for node in captured.program.graph.nodes:
        prov = captured.provenance.get(node.name)
        if prov is None or prov.module_path != module_path or len(node.args) < 2:
            continue
        dims = node.kwargs.get("dim", node.args[1])
        dims = dims if isinstance(dims, (list, tuple)) else [dims]
        if any(isinstance(d, int) and not isinstance(d, bool) and d == 0 for d in dims):
            found.append(f"{prov.op} at {prov.source} ({prov.code})")
    return found


def _first_mixing_module(model: torch.nn.Module, batch: list[torch.Tensor], rtol: float) -> tuple[str | None, str]:
    """The first module (innermost first) that gets the same rows as inputs but mixes them in its output.

    Hooks go on a deep copy, so the user's model never carries them.
    """
    probe = copy.deepcopy(model).eval()
    modules = dict(probe.named_modules())
    names = {module: name for name, module in modules.items()}
    records: list[list[tuple[str, tuple, object]]] = []

    def record(module, inputs, output):
        records[-1].append((names[module], inputs, output))

    handles = [module.register_forward_hook(record) for module in probe.modules()]
    try:
        with torch.no_grad():
            records.append([])
            probe(*batch)
            for i in range(batch[0].shape[0]):
                records.append([])
                probe(*[x[i : i + 1] for x in batch])
    finally:
        for handle in handles:
            handle.remove()
    together, alone = records[0], records[1:]
    for k, (name, inputs, output) in enumerate(together):  # hooks fire innermost first, in call order
        if any(len(rows) <= k or rows[k][0] != name for rows in alone):
            break  # the calls no longer line up: stop rather than guess
        if _rows_match(inputs, [rows[k][1] for rows in alone], rtol) and not _rows_match(
            output, [rows[k][2] for rows in alone], rtol
        ):
            return name, f"module `{name or '<root>'}` [{type(modules[name]).__name__}]"
    return None, "a module whose inputs already differ"


def _rows_match(together, alone: list, rtol: float) -> bool:
    """Whether a batched value equals the per-row values stacked (tensors in tuples compared one by one)."""
    if isinstance(together, torch.Tensor):
        if not all(isinstance(a, torch.Tensor) and a.ndim == together.ndim and a.shape[0] == 1 for a in alone):
            return True  # not batched like the input: cannot tell, do not blame
        if together.shape[0] != len(alone):
            return True
        return _close(together, torch.cat(alone), rtol)
    if isinstance(together, (tuple, list)):
        return all(
            _rows_match(t, [a[i] for a in alone], rtol)
            for i, t in enumerate(together)
            if all(isinstance(a, (tuple, list)) and len(a) > i for a in alone)
        )
    return True


def check_saved_rows_independent(
    program, examples: Sequence[torch.Tensor], batch_size: int, max_rows: int = 4, rtol: float = 1e-4, leaf: int = 0
) -> None:
    """A saved program (no module to hook) must compute each row of its batch alone.

    Runs the program's graph on a batch of different example rows and, for each of the first rows, on a batch
    filled with that row alone; refuses if a row's output differs. ``batch_size`` is the program's static
    batch (1 for a dynamic batch, run here on up to ``max_rows`` rows). Needs two different rows.
    """
    examples = probe_rows([x[:max_rows] for x in examples])  # two different rows at least, whatever the background
    distinct = min(int(x.shape[0]) for x in examples)
    rows = batch_size if batch_size > 1 else min(distinct, max_rows)
    if distinct < 2 or rows < 2:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch's own pytree deprecations
        module = program.module()
    batch = [repeat_rows(x, rows) for x in examples]
    with torch.no_grad():
        together = _leaf(module(*batch), leaf)
        for i in range(min(rows, distinct, max_rows)):
            fill = [x[i : i + 1].expand(batch_size, *x.shape[1:]) for x in examples]
            alone = _leaf(module(*fill), leaf)[:1]
            if not _close(together[i : i + 1], alone, rtol):
                raise BatchDependenceError(
                    f"the saved program's output for row {i} of a batch of {rows} differs from its output for that "
                    "row alone: its rows see each other (a softmax, mean or norm over the batch axis). DeepSHAP "
                    "explains each row on its own, so xshap refuses to explain it."
                )


def repeat_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``rows`` rows taken from ``x`` in turn (its first rows, then again from the start)."""
    return x[torch.arange(rows) % int(x.shape[0])]
