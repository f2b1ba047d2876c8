"""The checks of a saved program's graph (``models/model.json``) before torch deserializes it.

torch's deserializer trusts the graph: it resolves every node's target by an attribute path under ``torch``,
``operator`` or ``math`` (``torch.ops.aten.save`` writes a file, ``torch.ops.load_library`` loads a shared
library, ``torch.os.system`` runs a shell command: whichever callable is named, the graph calls it when it
runs), hands symbolic sizes to ``sympy.sympify`` (Python ``eval``), writes names into the Python source of
the graph module, and uses parameter names as attribute paths. So:

- a node's target is an ATen operator whose arguments are tensors, numbers, devices and a few enumeration
  strings (``approximate``, ``rounding_mode`` ...; never a file name or message), or one of the operators on
  sizes (``_operator.add``, ``torch.sym_max`` ...); the same for operators passed as arguments;
- symbolic sizes and guards pass ``symexpr``'s grammars; names are identifiers, fully qualified names dotted
  identifiers (argument names become the signature of generated Python);
- the input and output tree specs hold only tuples, lists and dicts with plain keys (torch's pytree reader
  imports the module an enum or a defaultdict factory names);
- nested graphs (control flow), custom objects and effect tokens are refused (xshap converts none of them);
- every tensor the graph declares fits in the memory limit, and there are at most so many nodes.
"""

from __future__ import annotations

import json
import re

from xshap.files.dtypes import element_size
from xshap.files.limits import Limits
from xshap.files.symexpr import expression_problem, guard_problem

SIZE_OPERATORS = frozenset(
    {f"_operator.{name}" for name in ("getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pos")}
    | {f"_operator.{name}" for name in ("eq", "ne", "lt", "le", "gt", "ge", "and_", "or_")}
    | {f"torch.{name}" for name in ("sym_not", "sym_int", "sym_float", "sym_ite", "sym_max", "sym_min", "sym_sqrt")}
    | {"math.trunc"}
)
SAFE_ARGUMENT_TYPES = frozenset(
    {
        "Tensor", "Optional[Tensor]", "List[Tensor]", "List[Optional[Tensor]]", "int", "Optional[int]",
        "List[int]", "Optional[List[int]]", "bool", "Optional[bool]", "List[bool]", "float", "Optional[float]",
        "List[float]", "Optional[List[float]]", "number", "Optional[number]", "List[number]", "Device",
        "Optional[Device]", "Optional[Generator]",
    }
)  # fmt: skip
# string arguments that only select a mode of the operator
ENUM_STRING_ARGUMENTS = frozenset(
    {
        "UPLO", "approximate", "assert_msg", "driver", "equation", "indexing", "interpolation", "mode", "norm",
        "ord", "p", "pad_mode", "padding", "padding_side", "reduce", "rounding_mode", "side",
    }
)  # fmt: skip
_STRING_TYPES = frozenset({"str", "Optional[str]"})
_ATEN = re.compile(r"^torch\.ops\.aten\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)$")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*)?$")
_NAME_KEYS = frozenset({"name", "as_name"})
_QUALIFIED_KEYS = frozenset({"parameter_name", "buffer_name", "tensor_constant_name", "user_input_name", "fqn"})
_NAMED_MAPS = frozenset({"tensor_values", "sym_int_values", "sym_bool_values", "sym_float_values", "range_constraints"})
_REFUSED_KEYS = {
    "as_graph": "a nested graph (control flow such as torch.cond)",
    "as_custom_obj": "a custom object",
    "custom_obj": "a custom object input",
    "token": "an effect token",
}
MAX_PROBLEMS = 12
TREE_TYPES = frozenset({None, "builtins.tuple", "builtins.list", "builtins.dict", "collections.OrderedDict"})


def qualified_name_ok(name: str) -> bool:
    """A module or parameter path: dotted identifiers, none of them a dunder name (torch sets them as attributes)."""
    return bool(QUALIFIED_NAME.match(name)) and not any(part.startswith("__") for part in name.split("."))


def target_problem(target: object, cache: dict[str, str | None]) -> str | None:
    """Why a node may not call ``target``, or None if it may."""
    if not isinstance(target, str):
        return "a target that is not a name"
    if target not in cache:
        cache[target] = _target_problem(target)
    return cache[target]


def _target_problem(target: str) -> str | None:
    if target in SIZE_OPERATORS:
        return None
    match = _ATEN.match(target)
    if not match:
        return f"calls {target[:120]!r}, which is neither an ATen operator nor an operator on sizes"
    name, overload = match.groups()
    if name.startswith("__") or overload.startswith("__"):
        return f"calls {target!r}"
    import torch

    try:
        packet = getattr(torch.ops.aten, name)
        operator = getattr(packet, overload)
    except Exception:  # torch.ops raises AttributeError or RuntimeError for an unknown operator
        return f"calls {target!r}, which this torch does not have"
    if not isinstance(operator, torch._ops.OpOverload) or operator.namespace != "aten":
        return f"calls {target!r}, which is not an ATen operator"
    for argument in operator._schema.arguments:
        kind = str(argument.type)
        if kind in _STRING_TYPES:
            if argument.name not in ENUM_STRING_ARGUMENTS:
                return f"calls {target!r}, whose string argument {argument.name!r} is not a mode (a file, a message)"
        elif kind not in SAFE_ARGUMENT_TYPES:
            return f"calls {target!r}, which takes a {kind} ({argument.name!r})"
    return None


def treespec_problem(text: object) -> str | None:
    """Why a serialized pytree spec may not be read, or None: only tuples, lists and dicts of plain keys."""
    if not isinstance(text, str) or len(text) > 1 << 20:
        return "is not a short string"
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return "is not JSON"
    if not (isinstance(document, list) and len(document) == 2 and document[0] == 1):
        return "is not a protocol-1 tree spec"
    stack = [document[1]]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict) or set(node) != {"type", "context", "children_spec"}:
            return "holds a malformed node"
        if node["type"] not in TREE_TYPES:
            return f"holds a {str(node['type'])[:60]!r} (only tuples, lists and dicts are read)"
        if node["context"] is not None:
            try:
                context = json.loads(node["context"]) if isinstance(node["context"], str) else object()
            except (ValueError, RecursionError):
                return "holds a context that is not JSON"
            plain = context is None or (
                isinstance(context, list)
                and all((isinstance(k, str) and IDENTIFIER.match(k)) or type(k) is int for k in context)
            )
            if not plain:
                return "holds a context other than plain keys (torch would import the module it names)"
        if not isinstance(node["children_spec"], list):
            return "holds a malformed node"
        stack.extend(node["children_spec"])
    return None


def _tensor_bytes(meta: object) -> int | None:
    """The bytes a serialized tensor meta declares (sizes times element size; symbolic sizes at their hint)."""
    if not isinstance(meta, dict):
        return None
    size = element_size(meta.get("dtype"))
    sizes = meta.get("sizes")
    if size is None or not isinstance(sizes, list):
        return None
    total = size
    for dim in sizes:
        value = dim.get("as_int") if isinstance(dim, dict) else None
        if value is None and isinstance(dim, dict) and isinstance(dim.get("as_expr"), dict):
            hint = dim["as_expr"].get("hint")
            value = hint.get("as_int", 1) if isinstance(hint, dict) else 1
        if not isinstance(value, int) or value < 0:
            return None
        total *= value
    return total


def graph_problems(document: object, limits: Limits) -> list[str]:
    """Every reason (up to a dozen) for which torch may not deserialize this program; empty if none."""
    if not isinstance(document, dict) or not isinstance(document.get("graph_module"), dict):
        return ["the program is not a serialized torch.export graph"]
    problems: list[str] = []
    cache: dict[str, str | None] = {}
    nodes = 0
    stack: list[tuple[object, str]] = [(document, "")]
    while stack and len(problems) < MAX_PROBLEMS:
        value, path = stack.pop()
        if isinstance(value, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(value))
            continue
        if not isinstance(value, dict):
            continue
        if "target" in value:  # only graph nodes have targets in torch's schema
            nodes += 1
            problem = target_problem(value["target"], cache)
            if problem:
                problems.append(f"node {str(value.get('name'))[:60]!r} {problem}")
        for key, item in value.items():
            problem = _entry_problem(key, item, cache, limits)
            if problem:
                problems.append(f"{path}/{key}: {problem}")
            stack.append((item, f"{path}/{key}"))
    if nodes > limits.max_graph_nodes:
        problems.append(f"the graph has {nodes:,} nodes (at most {limits.max_graph_nodes:,})")
    return problems


def _entry_problem(key: str, item: object, cache: dict, limits: Limits) -> str | None:
    if key in _REFUSED_KEYS and item is not None:
        return f"{_REFUSED_KEYS[key]}, which xshap does not load"
    if key == "as_operator":
        return target_problem(item, cache)
    if key in ("in_spec", "out_spec") and item is not None:
        problem = treespec_problem(item)
        return f"the tree spec {problem}" if problem else None
    if key == "guards_code":
        if not isinstance(item, list):
            return "the guards are not a list"
        problems = [(guard, guard_problem(guard)) for guard in item]
        bad = [(guard, problem) for guard, problem in problems if problem]
        return f"the guard {str(bad[0][0])[:80]!r} {bad[0][1]}" if bad else None
    if key == "expr_str":
        problem = expression_problem(item)
        return f"the size expression {str(item)[:80]!r} {problem}" if problem else None
    if key in _NAME_KEYS and isinstance(item, str) and item and not IDENTIFIER.match(item):
        return f"the name {item[:80]!r} is not an identifier"
    if key in _QUALIFIED_KEYS and isinstance(item, str) and not qualified_name_ok(item):
        return f"the name {item[:80]!r} is not a dotted path of identifiers"
    if key == "forward_arg_names" and isinstance(item, list):
        bad = [n for n in item if not (isinstance(n, str) and IDENTIFIER.match(n))]
        return f"the argument name {str(bad[0])[:80]!r} is not an identifier" if bad else None
    if key in _NAMED_MAPS and isinstance(item, dict):
        bad = [name for name in item if not IDENTIFIER.match(name)]
        if bad:
            return f"the name {bad[0][:80]!r} is not an identifier"
        if key == "tensor_values":
            for name, meta in item.items():
                declared = _tensor_bytes(meta)
                if declared is None:
                    return f"the tensor {name!r} has no valid dtype and sizes"
                if declared > limits.max_bytes:
                    return f"the tensor {name!r} would take {declared:,} bytes, over the limit of {limits.max_bytes:,}"
    if key in ("as_int", "hint") and type(item) is int and not -(1 << 63) <= item < 1 << 64:
        return "a number beyond 64 bits"  # (slices to the end hold INT64_MAX)
    return None
