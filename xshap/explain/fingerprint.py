"""A content fingerprint of a model: what it computes must be what was converted, or nothing is explained.

Data pointers and version counters miss edits that go around autograd (``p.data.mul_``, writes through
``p.detach().numpy()``), and say nothing of a replaced submodule or a Python attribute the forward reads. So the
fingerprint is made of what determines the function:
- every parameter, buffer and tensor attribute: dtype, shape and a digest of its bytes (blake2b, ~1 GB/s);
- the module tree: every path with its module's type and identity, its hooks, and its other attributes
  (numbers, strings, dtypes, containers of them, configuration objects one level down; functions and other
  objects by identity).
A saved program (``.pt2``) is fingerprinted by its weights and constants; a JAX callable by the arrays it closes
over (bound methods, ``functools.partial`` arguments, closure cells, Flax NNX state). What a forward reads from
elsewhere (a module-level global) is not seen.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable

import numpy as np

Fingerprint = dict[str, str]  # what -> a description or digest of it

_MAX_DEPTH = 3


def digest_array(array) -> str:
    """dtype, shape and blake2b of the bytes of a numpy/JAX array or torch tensor."""
    if hasattr(array, "detach"):  # torch
        tensor = array.detach()
        if tensor.device.type == "meta":
            return f"meta {tensor.dtype} {tuple(tensor.shape)}"
        if tensor.is_quantized:
            tensor = tensor.int_repr()
        if tensor.layout != _strided():
            tensor = tensor.to_dense()
        tensor = tensor.cpu().contiguous()
        import torch

        raw = tensor.reshape(-1).view(torch.uint8).numpy() if tensor.numel() else np.zeros(0, np.uint8)
        return f"{tensor.dtype} {tuple(tensor.shape)} {hashlib.blake2b(raw.data, digest_size=16).hexdigest()}"
    raw = np.ascontiguousarray(np.asarray(array))
    return f"{raw.dtype} {raw.shape} {hashlib.blake2b(raw.view(np.uint8).data, digest_size=16).hexdigest()}"


def _strided():
    import torch

    return torch.strided


def _torch_internals() -> frozenset[str]:
    import torch

    return frozenset(vars(torch.nn.Module()))


def _is_tensor(value) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach") and hasattr(value, "dtype")


def describe(value, depth: int = 0) -> str:
    """A description that changes when ``value`` would make a forward compute something else."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return repr(value)
    if _is_tensor(value) or isinstance(value, np.ndarray) or type(value).__module__.startswith("jax"):
        return digest_array(value) if hasattr(value, "shape") else repr(value)
    kind = type(value).__module__ + "." + type(value).__qualname__
    if kind.startswith("torch.") and not hasattr(value, "__dict__"):  # dtypes, devices, sizes
        return repr(value)
    if depth >= _MAX_DEPTH:
        return f"{kind}@{id(value):x}"
    if isinstance(value, (list, tuple, set, frozenset)):
        items = (
            sorted(describe(v, depth + 1) for v in value)
            if isinstance(value, (set, frozenset))
            else [describe(v, depth + 1) for v in value]
        )
        return f"{type(value).__name__}[{', '.join(items)}]"
    if isinstance(value, dict):
        return _describe_items(value, depth + 1)
    if isinstance(value, functools.partial):
        return f"partial({describe(value.func, depth + 1)}, {describe(value.args, depth + 1)}, {describe(value.keywords, depth + 1)})"
    if callable(value) or _is_module(value):
        return f"{kind}@{id(value):x}"  # functions, classes, modules by identity
    attributes = getattr(value, "__dict__", None)
    if attributes is not None:  # a configuration object: its own attributes, one level down
        return f"{kind}{_describe_items(attributes, depth + 1)}"
    return f"{kind}@{id(value):x}"


def _describe_items(mapping, depth: int) -> str:
    """The items of a mapping, described at ``depth`` (no temporary object passes through ``describe``: an
    identity taken of one would change on every call)."""
    return "{" + ", ".join(f"{k!r}: {describe(v, depth)}" for k, v in sorted(mapping.items(), key=repr)) + "}"


def _is_module(value) -> bool:
    return type(value).__name__ == "module"


def torch_fingerprint(model) -> Fingerprint:
    """Parameters, buffers, tensor attributes and the module tree of a torch.nn.Module (module docstring)."""
    internals = _torch_internals()
    found: Fingerprint = {}
    for path, module in model.named_modules(remove_duplicate=False):
        where = path or "<root>"
        found[f"module {where}"] = f"{type(module).__module__}.{type(module).__qualname__}@{id(module):x}"
        for name, tensor in [*module._parameters.items(), *module._buffers.items()]:
            found[f"tensor {where}.{name}"] = "None" if tensor is None else digest_array(tensor)
        for name, value in vars(module).items():
            if name in internals and not name.endswith("hooks"):
                continue
            if name in ("_parameters", "_buffers", "_modules", "training"):
                continue
            if name.endswith("hooks") or name.endswith("hooks_with_kwargs"):
                if value:
                    found[f"hooks {where}.{name}"] = ",".join(f"{id(fn):x}" for fn in value.values())
                continue
            found[f"attribute {where}.{name}"] = describe(value)
    return found


def program_fingerprint(program) -> Fingerprint:
    """The weights and constants of a saved ``torch.export`` program."""
    tensors = {**program.state_dict, **program.constants}
    return {f"tensor {name}": digest_array(t) if _is_tensor(t) else describe(t) for name, t in sorted(tensors.items())}


def callable_fingerprint(fn: Callable) -> Fingerprint:
    """The arrays a JAX callable carries: its bound object, partial arguments, closure cells, NNX state."""
    found: Fingerprint = {}
    _collect_callable(fn, "model", found, depth=0)
    return found


def _collect_callable(fn, where: str, found: Fingerprint, depth: int) -> None:
    if depth > _MAX_DEPTH:
        return
    try:
        from flax import nnx

        if isinstance(fn, nnx.Module):
            import jax

            for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(fn)):
                found[f"state {where}{jax.tree_util.keystr(path)}"] = describe(leaf)
            return
    except ImportError:  # pragma: no cover - flax is a core dependency
        pass
    if isinstance(fn, functools.partial):
        found[f"partial {where}"] = describe((fn.args, fn.keywords))
        _collect_callable(fn.func, where + ".func", found, depth + 1)
        return
    owner = getattr(fn, "__self__", None)
    if owner is not None and not _is_module(owner):
        found[f"bound {where}"] = describe(getattr(owner, "__dict__", owner))
    for i, cell in enumerate(getattr(fn, "__closure__", None) or ()):
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if callable(content) and not hasattr(content, "shape"):
            _collect_callable(content, f"{where}.<closure {i}>", found, depth + 1)
        else:
            found[f"closure {where}.{i}"] = describe(content)


def changes(before: Fingerprint, after: Fingerprint, limit: int = 5) -> list[str]:
    """What differs between two fingerprints, in words (at most ``limit`` items, then a count)."""
    keys = [k for k in {**before, **after} if before.get(k) != after.get(k)]
    words = []
    for key in keys[:limit]:
        kind, _, name = key.partition(" ")
        if key not in after:
            words.append(f"{kind} {name} was removed")
        elif key not in before:
            words.append(f"{kind} {name} was added")
        elif kind == "module":
            words.append(f"module {name} was replaced (now {after[key].split('@')[0].rsplit('.', 1)[-1]})")
        elif kind == "tensor":
            words.append(
                f"{name} changed ({'values' if before[key].split()[:2] == after[key].split()[:2] else 'shape or dtype'})"
            )
        else:
            words.append(f"{kind} {name} changed")
    if len(keys) > limit:
        words.append(f"and {len(keys) - limit} more")
    return words
