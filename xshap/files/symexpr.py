"""Symbolic size expressions of a saved graph, checked before torch hands them to ``sympy.sympify``.

``sympify`` of a string is Python ``eval`` of it (after sympy's token rewriting): a crafted "expression" can
call anything. torch writes expressions with ``sympy.srepr``: ``Symbol('s77', positive=True, integer=True)``,
``Add(Mul(Integer(4), Symbol(...)), Integer(1))``, ``Equality(...)``, ``FloorDiv(...)``, ``int_oo``. This
grammar accepts exactly such trees:

- calls of sympy's arithmetic, comparison and logic constructors and of torch's size functions, with
  expressions as positional arguments;
- ``Symbol('name', assumption=True, ...)``, ``Integer(n)``, ``Rational(p, q)``, ``Float('1.5', precision=53)``
  with literal arguments (the only places a string or a keyword may appear);
- bare names (no leading underscore: ``int_oo``, ``true``), numbers, + - * / // % & | ~ and comparisons;
- powers only with a literal exponent 0..8 (a huge power would hang sympy's eager arithmetic).

No attributes, subscripts, lambdas, other strings or keywords; at most 2,000 characters and 400 parts.

Guards (``guards_code``, Python that torch compiles into the module it returns from ``ExportedProgram.module()``)
get their own grammar: comparisons and arithmetic over input sizes, ``L['x'].size()[0]`` and the like.
"""

from __future__ import annotations

import ast
import math
import re

SIZE_FUNCTIONS = frozenset(
    {
        "Add", "Mul", "Mod", "Max", "Min", "Abs", "floor", "ceiling", "Equality", "Unequality", "StrictLessThan",
        "LessThan", "StrictGreaterThan", "GreaterThan", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not",
        "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
        "IntTrueDiv", "FloatTrueDiv", "TruncToFloat", "TruncToInt", "RoundToInt", "ToFloat", "Identity",
        "IsNonOverlappingAndDenseIndicator",
    }
)  # fmt: skip
ASSUMPTIONS = frozenset(
    {"positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite", "zero", "nonzero", "rational"}
)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_NUMBER_TEXT = re.compile(r"^-?\d{1,30}(\.\d{0,30})?([eE][-+]?\d{1,3})?$")
_BINARY = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.BitAnd, ast.BitOr, ast.Pow)
_UNARY = (ast.USub, ast.UAdd, ast.Invert)
_COMPARE = (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)
MAX_LENGTH, MAX_NODES, MAX_EXPONENT, MAX_INT = 2000, 400, 8, 1 << 64


class _Refused(Exception):
    pass


def expression_problem(text: object) -> str | None:
    """Why ``text`` is not a size expression this module accepts, or None if it is one."""
    if not isinstance(text, str):
        return "is not a string"
    if len(text) > MAX_LENGTH:
        return f"is {len(text)} characters long"
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "is not an expression"
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        return f"has more than {MAX_NODES} parts"
    try:
        _expression(tree.body)
    except _Refused as refused:
        return str(refused)
    except RecursionError:
        return "is nested too deeply"
    return None


def _literal_int(node: ast.AST) -> int | None:
    """The value of ``5``, ``-5``, ``Integer(5)`` or ``Integer(-5)``; None for anything else."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _literal_int(node.operand)
        return None if inner is None else -inner
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    is_integer = isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Integer"
    if is_integer and len(node.args) == 1 and not node.keywords:
        return _literal_int(node.args[0])
    return None


def _expression(node: ast.AST) -> None:
    if isinstance(node, ast.Name):
        if not _NAME.match(node.id):
            raise _Refused(f"uses the name {node.id!r}")
    elif isinstance(node, ast.Constant):
        _number(node.value)
    elif isinstance(node, ast.BinOp):
        if not isinstance(node.op, _BINARY):
            raise _Refused(f"uses the operator {type(node.op).__name__}")
        if isinstance(node.op, ast.Pow):
            _exponent(node.right)
        _expression(node.left)
        _expression(node.right)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, _UNARY):
            raise _Refused(f"uses the operator {type(node.op).__name__}")
        _expression(node.operand)
    elif isinstance(node, ast.Compare):
        if len(node.ops) != 1 or not isinstance(node.ops[0], _COMPARE):
            raise _Refused("chains comparisons")
        _expression(node.left)
        _expression(node.comparators[0])
    elif isinstance(node, ast.Call):
        _call(node)
    else:
        raise _Refused(f"holds a {type(node).__name__}")


def _number(value: object) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise _Refused("holds a huge number")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Refused("holds a non-finite number")
        return
    raise _Refused(f"holds a {type(value).__name__} constant")


def _exponent(node: ast.AST) -> None:
    value = _literal_int(node)
    if value is None or not 0 <= value <= MAX_EXPONENT:
        raise _Refused(f"raises to a power other than a literal 0..{MAX_EXPONENT}")


def _call(node: ast.Call) -> None:
    if not isinstance(node.func, ast.Name):
        raise _Refused(f"calls a {type(node.func).__name__}")
    name = node.func.id
    if any(isinstance(arg, ast.Starred) for arg in node.args) or any(k.arg is None for k in node.keywords):
        raise _Refused("passes starred arguments")
    if name == "Symbol":
        _symbol(node)
    elif name == "Integer":
        if _literal_int(node) is None or abs(_literal_int(node)) > MAX_INT:
            raise _Refused("builds an Integer from something else than a literal")
    elif name == "Rational":
        values = [_literal_int(arg) for arg in node.args]
        if node.keywords or len(values) != 2 or None in values or any(abs(v) > MAX_INT for v in values):
            raise _Refused("builds a Rational from something else than two literals")
    elif name == "Float":
        _float(node)
    elif name == "Pow":
        if node.keywords or len(node.args) != 2:
            raise _Refused("calls Pow with other than two arguments")
        _exponent(node.args[1])
        _expression(node.args[0])
    elif name in SIZE_FUNCTIONS:
        if node.keywords:
            raise _Refused(f"passes keywords to {name}")
        for arg in node.args:
            _expression(arg)
    else:
        raise _Refused(f"calls {name!r}, which is not a size function")


def _symbol(node: ast.Call) -> None:
    if len(node.args) != 1 or not isinstance(node.args[0], ast.Constant) or not isinstance(node.args[0].value, str):
        raise _Refused("names a Symbol with something else than a literal")
    if not _NAME.match(node.args[0].value):
        raise _Refused(f"names a Symbol {node.args[0].value[:40]!r}")
    for keyword in node.keywords:
        literal = isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, bool)
        if keyword.arg not in ASSUMPTIONS or not literal:
            raise _Refused(f"gives a Symbol the assumption {keyword.arg!r}")


def _float(node: ast.Call) -> None:
    if len(node.args) != 1 or not isinstance(node.args[0], ast.Constant):
        raise _Refused("builds a Float from something else than a literal")
    value = node.args[0].value
    if isinstance(value, str):
        if not _NUMBER_TEXT.match(value):
            raise _Refused(f"builds a Float from {value[:40]!r}")
    else:
        _number(value)
    for keyword in node.keywords:
        ok = keyword.arg == "precision" and isinstance(keyword.value, ast.Constant) and type(keyword.value.value) is int
        if not ok or not 1 <= keyword.value.value <= 1024:
            raise _Refused("gives a Float other than a small precision")


_TENSOR_METHODS = frozenset({"size", "stride", "storage_offset", "numel", "dim"})


def guard_problem(text: object) -> str | None:
    """Why ``text`` is not a guard on input sizes (``L['x'].size()[0] > 2``), or None if it is one."""
    if not isinstance(text, str) or len(text) > MAX_LENGTH:
        return "is not a short string"
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "is not an expression"
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        return f"has more than {MAX_NODES} parts"
    try:
        _guard(tree.body)
    except _Refused as refused:
        return str(refused)
    except RecursionError:
        return "is nested too deeply"
    return None


def _guard(node: ast.AST) -> None:
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _guard(value)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        _guard(node.operand)
    elif isinstance(node, ast.Compare):
        if not all(isinstance(op, _COMPARE) for op in node.ops):
            raise _Refused("compares with something else than a size comparison")
        for value in (node.left, *node.comparators):
            _guard(value)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, _BINARY) and not isinstance(node.op, ast.Pow):
        _guard(node.left)
        _guard(node.right)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, _UNARY):
        _guard(node.operand)
    elif isinstance(node, ast.Constant):
        _number(node.value)
    else:
        _size_access(node)


def _size_access(node: ast.AST) -> None:
    """``L['x']``, ``L['x'][0]``, ``L['x'].size()[1]``, ``L['x'].stride()[0]``, ``L['x'].numel()``."""
    if isinstance(node, ast.Subscript):
        key = node.slice
        ok = isinstance(key, ast.Constant) and (
            type(key.value) is int or (isinstance(key.value, str) and _NAME.match(key.value))
        )
        if not ok:
            raise _Refused("indexes with something else than a number or a name")
        if isinstance(node.value, ast.Name):
            if node.value.id != "L":
                raise _Refused(f"reads {node.value.id!r}, not an input")
            return
        _size_access(node.value)
    elif isinstance(node, ast.Call):
        method = node.func
        if node.args or node.keywords or not isinstance(method, ast.Attribute) or method.attr not in _TENSOR_METHODS:
            raise _Refused("calls something else than an input's size, stride or numel")
        _size_access(method.value)
    else:
        raise _Refused(f"holds a {type(node).__name__}")
