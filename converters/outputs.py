"""Which of a model's outputs is explained: a tensor, or one leaf of a dict / ModelOutput / tuple it returns.

torch.export flattens whatever ``forward`` returns into leaves and keeps the structure in the program's
``out_spec``. Each leaf is named by its path: ``logits`` for ``{"logits": ...}`` or a Hugging Face
``ModelOutput``, ``0`` for the first element of a tuple, ``hidden_states.2`` nested. ``output=`` picks a leaf
by that name (or a position, as an int); without it a single tensor is taken, else the leaf named ``logits``
(the Hugging Face convention), else the choice is refused with the list of leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.utils._pytree as pytree

from converters.errors import ConversionError

DEFAULT_OUTPUT = "logits"


@dataclass(frozen=True)
class OutputLeaf:
    name: str  # the leaf's path: "logits", "0", "hidden_states.2"
    value: object  # what export recorded for it (a FakeTensor for tensors)

    def describe(self) -> str:
        shape = getattr(self.value, "shape", None)
        return f"{self.name!r} ({'shape ' + str(tuple(shape)) if shape is not None else type(self.value).__name__})"


def _key_name(key) -> str:
    for attribute in ("key", "idx", "name"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def output_leaves(program) -> list[OutputLeaf]:
    """The program's output leaves in order, each with its path name."""
    output_node = next(node for node in program.graph.nodes if node.op == "output")
    values = [arg.meta.get("val") if hasattr(arg, "meta") else arg for arg in output_node.args[0]]
    spec = program.call_spec.out_spec
    if spec is None or spec.num_leaves != len(values):
        return [OutputLeaf(str(i), v) for i, v in enumerate(values)]
    skeleton = pytree.tree_unflatten(list(range(len(values))), spec)
    paths, _ = pytree.tree_flatten_with_path(skeleton)
    names = {index: ".".join(_key_name(k) for k in path) for path, index in paths}
    return [OutputLeaf(names.get(i, str(i)) or str(i), v) for i, v in enumerate(values)]


def choose_output(leaves: list[OutputLeaf], output: str | int | None) -> int:
    """The index of the leaf to explain (module docstring); a clear error naming every leaf otherwise."""
    tensors = [i for i, leaf in enumerate(leaves) if isinstance(leaf.value, torch.Tensor)]
    listing = ", ".join(leaf.describe() for leaf in leaves)
    if output is None:
        if len(leaves) == 1 and tensors:
            return 0
        named = [i for i in tensors if leaves[i].name == DEFAULT_OUTPUT]
        if named:
            return named[0]
        raise ConversionError(
            f"the model returns {len(leaves)} value(s): {listing}; xshap explains one tensor with a leading batch "
            "axis: choose it with output=<name> (for example output="
            + repr(leaves[tensors[0]].name if tensors else 0)
            + ")"
        )
    wanted = str(output)
    for i, leaf in enumerate(leaves):
        if leaf.name == wanted:
            if i not in tensors:
                raise ConversionError(f"output {wanted!r} of the model is a {type(leaf.value).__name__}, not a tensor")
            return i
    raise ConversionError(f"the model has no output {wanted!r}; it returns {listing}")
