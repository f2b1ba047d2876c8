"""Capture a torch model with torch.export: the functional ATen graph, its weights, and provenance."""

from __future__ import annotations

import contextlib
import threading
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from converters.errors import ExportError
from converters.provenance import Provenance, provenance_of


@dataclass
class Capture:
    """What the converter needs from torch.export, with torch types still in it."""

    program: ExportedProgram
    param_names: list[str]  # placeholder order of the lifted weights, buffers and constants
    input_names: list[str]  # placeholder names of the user inputs
    provenance: dict[str, Provenance]  # node name -> provenance
    root_type: str


# torch.export is not thread-safe: concurrent exports corrupt its global tracing state (in about one process in
# four every later export then failed) and interleave the mode changes of eval_mode. Every capture, and the
# checks around it that run the model, hold this lock; it is reentrant, so nested conversions do not deadlock.
CAPTURE_LOCK = threading.RLock()

# error types (by name: they move between torch versions) and phrases that mean data-dependent control flow
_DATA_DEPENDENT_TYPES = ("GuardOnDataDependentSymNode", "DataDependentOutputException", "PendingUnbackedSymbolNotFound")
_DATA_DEPENDENT_PHRASES = ("data-dependent", "data dependent", "Could not guard on", "Dynamic control flow")


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module, warn: bool = True) -> Iterator[None]:
    """Put ``model`` in eval mode for the duration, with a warning if it was training; restore after."""
    modes = {module: module.training for module in model.modules()}
    training = [name or "<root>" for name, module in model.named_modules() if module.training]
    if training and warn:
        warnings.warn(
            "model is in training mode (modules: "
            + ", ".join(training[:5])
            + (" ..." if len(training) > 5 else "")
            + "); xshap converts it in eval mode. Call model.eval() to silence this warning.",
            stacklevel=3,
        )
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes.items():
            module.train(mode)


def _translate_export_failure(error: Exception) -> ExportError:
    """torch's reason, where in the user's code it happened, and a hint only where the hint is the cause."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    where = _user_frame(error)
    message = f"torch.export could not capture the model: {type(error).__name__}: {first}"
    if where:
        message += f"\n  at {where}"
    if _is_data_dependent(error):
        message += (
            "\nHint: torch.export must trace the model into one graph. Data-dependent Python control flow "
            "(an `if` or loop on tensor values), .item()/.tolist() on tensors, or calls into non-torch code "
            "cannot be captured; rewrite them with torch.where / torch.cond, or explain a submodule."
        )
    return ExportError(message)


def _is_data_dependent(error: BaseException) -> bool:
    """Whether torch.export failed because the forward branches on tensor values (for the error or its causes)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if type(error).__name__ in _DATA_DEPENDENT_TYPES or any(p in str(error) for p in _DATA_DEPENDENT_PHRASES):
            return True
        error = error.__cause__ or error.__context__
    return False


def _user_frame(error: BaseException) -> str:
    """'file:line: code' of the innermost frame of the traceback outside torch, or ''."""
    frames = traceback.extract_tb(error.__traceback__)
    for frame in reversed(frames):
        path = frame.filename.replace("\\", "/")
        if "/torch/" not in path and "/converters/" not in path and not path.startswith("<"):
            return f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"
    return ""


def capture(model: torch.nn.Module, example_inputs: Sequence[torch.Tensor], decompose: str = "always") -> Capture:
    """Export ``model`` on ``example_inputs`` (eval mode) to a functional ATen graph with provenance.

    ``decompose="as_needed"`` skips the functionalising pass (most of an export's time on a small model) where the
    exported graph is functional already: no op mutates, every op is one the converter knows, and no higher-order
    op wraps a subgraph. Its graph then keeps a few ops the pass would rename (``dropout`` rather than ``clone``
    in eval mode), all of which convert to the same JAX function."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    root_type = f"{type(model).__module__}.{type(model).__qualname__}"
    with eval_mode(model), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            program = torch.export.export(model, tuple(example_inputs), strict=False)
            # An empty decomposition table functionalises the graph (in-place ops and aliasing become
            # pure ops) while keeping high-level ops such as linear, gelu and silu whole.
            if decompose == "always" or not _functional(program):
                program = program.run_decompositions({})
        except Exception as error:  # torch raises many types here; all mean "cannot capture"
            raise _translate_export_failure(error) from error

    return capture_program(program, root_type)


def _functional(program: ExportedProgram) -> bool:
    """Every op of the graph is a pure ATen op the converter knows (or a getitem of one's results)."""
    import operator

    from converters.registry import lookup

    for node in program.graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        schema = getattr(node.target, "_schema", None)
        if schema is None or schema.is_mutable or lookup(node.target) is None:
            return False
        if any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments):
            return False
    return True


def capture_program(program: ExportedProgram, root_type: str) -> Capture:
    """The Capture of an already exported (and decomposed) program: weights, inputs, provenance."""
    signature = program.graph_signature
    mutations = [spec for spec in signature.output_specs if spec.kind != OutputKind.USER_OUTPUT]
    if mutations:
        targets = ", ".join(str(spec.target) for spec in mutations)
        raise ExportError(f"the model mutates state during forward ({targets}); xshap needs a pure forward")

    param_names, input_names = [], []
    for spec in signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            input_names.append(spec.arg.name)
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            param_names.append(spec.arg.name)
        else:
            raise ExportError(f"unsupported graph input kind {spec.kind.name} ({spec.arg.name})")

    provenance = {
        node.name: provenance_of(node, root_type) for node in program.graph.nodes if node.op == "call_function"
    }
    return Capture(program, param_names, input_names, provenance, root_type)


def capture_saved(program: ExportedProgram) -> Capture:
    """A program loaded from a ``.pt2`` file: functionalised as ``capture`` does, the root type read from the
    graph's module stacks (the saved program no longer has the module object)."""
    try:
        program = program.run_decompositions({})
    except Exception as error:  # torch raises many types here
        raise ExportError(
            f"the saved program cannot be decomposed into ATen ops: {type(error).__name__}: {error}"
        ) from error
    root_type = "torch.export.ExportedProgram"
    for node in program.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        for path, mtype in stack.values():
            if path == "":
                root_type = mtype if isinstance(mtype, str) else f"{mtype.__module__}.{mtype.__qualname__}"
                break
    return capture_program(program, root_type)


def weights_of(program: ExportedProgram) -> dict[str, torch.Tensor]:
    """Placeholder name -> tensor for every lifted parameter, buffer and constant."""
    by_target = {**program.state_dict, **program.constants}
    weights = {}
    for spec in program.graph_signature.input_specs:
        if spec.kind != InputKind.USER_INPUT:
            weights[spec.arg.name] = by_target[spec.target]
    return weights
