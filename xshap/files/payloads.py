"""The weights and constants of a saved program: their configs (JSON) and their raw records.

torch 2.13 loads an entry its config marks ``use_pickle`` with ``torch.load(weights_only=False)``, a
``custom_obj_`` constant with TorchScript's unpickler and an ``opaque_obj_`` one with ``pickle.loads``: each
runs whatever the pickle says. torch's writer pickles only tensor subclasses and script/opaque objects, none of
which xshap converts, so they are refused, and every tensor is read from raw bytes. Each config entry is checked
against its record: a known real dtype, strided layout, integer sizes and strides that stay inside the record
(a record of zero bytes makes torch allocate the declared size: that counts against the memory limit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xshap.files.dtypes import LOADABLE, SCALAR_TYPES, STRIDED_LAYOUT, element_size
from xshap.files.graph import qualified_name_ok

_META_KEYS = frozenset({"dtype", "sizes", "requires_grad", "device", "strides", "storage_offset", "layout"})
_ENTRY_KEYS = frozenset({"path_name", "is_param", "use_pickle", "tensor_meta"})


@dataclass(frozen=True)
class PayloadKind:
    """Where one kind of payload lives: its folder, config file and record names (``weight_0`` ...)."""

    folder: str
    config: str
    record: re.Pattern


WEIGHTS = PayloadKind("data/weights/", "data/weights/model_weights_config.json", re.compile(r"^weight_\d+$"))
CONSTANTS = PayloadKind("data/constants/", "data/constants/model_constants_config.json", re.compile(r"^tensor_\d+$"))


def _ints(values: object) -> list[int] | None:
    """``[{"as_int": n}, ...]`` -> ``[n, ...]`` (non-negative); None for anything else (symbolic sizes included)."""
    if not isinstance(values, list):
        return None
    out = []
    for value in values:
        number = value.get("as_int") if isinstance(value, dict) and set(value) == {"as_int"} else None
        if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number < 1 << 62:
            return None
        out.append(number)
    return out


def _meta_problem(meta: object, record_size: int) -> tuple[str | None, int]:
    """(why the tensor meta is refused or None, bytes torch allocates for its record)."""
    if not isinstance(meta, dict) or set(meta) - _META_KEYS:
        return "its tensor_meta is not a plain tensor description", 0
    dtype = meta.get("dtype")
    if type(dtype) is not int or dtype not in LOADABLE:
        name = SCALAR_TYPES.get(dtype, (f"number {dtype!r}",))[0] if type(dtype) is int else repr(dtype)[:40]
        return f"dtype {name} is not one xshap loads (real numbers and bool)", 0
    if meta.get("layout") != STRIDED_LAYOUT:
        return "it is not a dense (strided) tensor", 0
    device = meta.get("device")
    if not isinstance(device, dict) or device.get("type") not in ("cpu", "cuda"):
        return "its device is neither cpu nor cuda", 0
    sizes, strides = _ints(meta.get("sizes")), _ints(meta.get("strides"))
    offset = _ints([meta.get("storage_offset")])
    if sizes is None or strides is None or offset is None or len(sizes) != len(strides):
        return "its sizes, strides or offset are not plain non-negative integers", 0
    item = element_size(dtype)
    numel = 1
    for size in sizes:
        numel *= size
    if record_size == 0:
        return None, numel * item  # torch makes zeros of the declared size
    if record_size % item:
        return f"its record of {record_size:,} bytes is not a whole number of {item}-byte elements", 0
    if numel:
        last = offset[0] + sum((size - 1) * stride for size, stride in zip(sizes, strides))
        if (last + 1) * item > record_size:
            return f"its view reaches element {last:,}, past its record of {record_size // item:,} elements", 0
    return None, record_size


def payload_problems(config: object, kind: PayloadKind, records: dict[str, int]) -> tuple[list[str], set[str], int]:
    """Check one config against the sizes of its folder's records (``{relative name: size}``).

    Returns (problems, the records it uses, the bytes torch will allocate for them).
    """
    if not isinstance(config, dict) or set(config) != {"config"} or not isinstance(config["config"], dict):
        return [f"{kind.config} is not a payload config"], set(), 0
    problems, used, allocated, dtypes = [], set(), 0, {}
    for fqn, entry in config["config"].items():
        where = f"{kind.config}: {fqn[:80]!r}"
        if not qualified_name_ok(fqn):
            problems.append(f"{where} is not a dotted path of identifiers")
            continue
        if not isinstance(entry, dict) or set(entry) - _ENTRY_KEYS or not isinstance(entry.get("path_name"), str):
            problems.append(f"{where} is not a payload entry")
            continue
        path = entry["path_name"]
        if entry.get("use_pickle") is not False:
            problems.append(
                f"{where} is pickled ({path[:60]!r}: a tensor subclass, custom or opaque object), which torch "
                "would unpickle with weights_only=False"
            )
            continue
        if not kind.record.match(path) or path not in records:
            problems.append(f"{where} points at {path[:60]!r}, which is not one of its records")
            continue
        if not isinstance(entry.get("is_param"), bool):
            problems.append(f"{where}: is_param is not a bool")
            continue
        problem, size = _meta_problem(entry.get("tensor_meta"), records[path])
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        if dtypes.setdefault(path, entry["tensor_meta"]["dtype"]) != entry["tensor_meta"]["dtype"]:
            problems.append(f"{where}: record {path!r} is read with two dtypes")
            continue
        if path not in used:
            used.add(path)
            allocated += size
    for path in sorted(set(records) - used):
        problems.append(f"{kind.folder}{path} is listed by no entry of {kind.config}")
    return problems, used, allocated
