"""Read off the exported graph why a hook-based reference (shap, Captum) can go wrong.

Hook-based DeepLIFT applies a rule only where a module of a known type wraps the nonlinearity, and
stores that module's input and output on the module itself. So it misses, or gets wrong:
- a nonlinearity called functionally (torch.nn.functional.relu, torch.sigmoid, x.tanh() ...);
- a module instance with more than one call site (its stored tensors are overwritten);
- a module type the reference has no rule for (it falls back to the plain gradient);
- a product of two input-dependent tensors (no hook applies any rule to it);
- a reduction that is not linear (std, var, a norm, logsumexp) called functionally: no module wraps it;
- a max pool whose windows overlap (kernel larger than stride): both references route the pooled difference
  back through ``max_unpool``, which keeps one value where windows overlap;
- an in-place module (``ReLU(inplace=True)``): shap's backward hooks hand it a view it then overwrites.
It also names the modules where a reference applies a rule of its own that differs from the complete
rules (shap's 1-D rescale over a whole nn.Softmax): a rule difference, not an error of the hooks.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

# ATen op (base name) -> the module types whose hooks handle it in a hook-based reference.
NONLINEAR_MODULES: dict[str, tuple[str, ...]] = {
    "relu": ("ReLU",),
    "sigmoid": ("Sigmoid",),
    "tanh": ("Tanh",),
    "softplus": ("Softplus",),
    "elu": ("ELU", "SELU", "CELU"),
    "selu": ("SELU",),
    "celu": ("CELU",),
    "leaky_relu": ("LeakyReLU",),
    "gelu": ("GELU",),
    "silu": ("SiLU",),
    "mish": ("Mish",),
    "hardtanh": ("Hardtanh", "ReLU6"),
    "hardswish": ("Hardswish",),
    "hardsigmoid": ("Hardsigmoid",),
    "softmax": ("Softmax",),
    "_softmax": ("Softmax",),
    "log_softmax": ("LogSoftmax",),
    "_log_softmax": ("LogSoftmax",),
    "max_pool1d": ("MaxPool1d",),
    "max_pool2d": ("MaxPool2d",),
    "max_pool3d": ("MaxPool3d",),
    "max_pool2d_with_indices": ("MaxPool2d",),
    "max_pool3d_with_indices": ("MaxPool3d",),
    "max_pool1d_with_indices": ("MaxPool1d",),
    "adaptive_max_pool1d": ("AdaptiveMaxPool1d",),
    "adaptive_max_pool2d": ("AdaptiveMaxPool2d",),
    "adaptive_max_pool3d": ("AdaptiveMaxPool3d",),
    "lstm": ("LSTM",),
    "gru": ("GRU",),
    "rnn_tanh": ("RNN",),
    "rnn_relu": ("RNN",),
    "layer_norm": ("LayerNorm",),
    "native_layer_norm": ("LayerNorm",),
    "group_norm": ("GroupNorm",),
    "native_group_norm": ("GroupNorm",),
    "instance_norm": ("InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"),
    "rms_norm": ("RMSNorm",),
    "prelu": ("PReLU",),
    "_prelu_kernel": ("PReLU",),
    "threshold": ("Threshold",),
    "glu": ("GLU",),
    "log_sigmoid": ("LogSigmoid",),
    "log_sigmoid_forward": ("LogSigmoid",),
    "clamp": ("Hardtanh", "ReLU6"),
    # selections and elementwise functions that no module wraps: always a functional call
    **{op: () for op in ("max", "min", "amax", "amin", "maximum", "minimum", "clamp_min", "clamp_max")},
    **{op: () for op in ("exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "pow", "abs", "sin", "cos", "erf")},
    **{op: () for op in ("reciprocal", "softsign")},
    # a complex spectrum's magnitude and phase
    **{op: () for op in ("renorm", "angle")},
}
# reductions that are not linear (torch.std, var, norm, F.normalize's norm, ScaleNorm, entmax's, logsumexp):
# no module of torch.nn wraps them, so a module-hook reference differentiates them plainly
NONLINEAR_REDUCTIONS = {
    "std", "var", "std_mean", "var_mean", "linalg_vector_norm", "linalg_norm", "linalg_matrix_norm",
    "frobenius_norm", "norm", "nuclear_norm", "logsumexp", "prod", "logcumsumexp", "cumprod",
}  # fmt: skip
# max pools whose hooked rule (shap's maxpool, Captum's maxpool) routes through max_unpool
MAX_POOL_OPS = {
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
    "max_pool3d_with_indices",
}  # fmt: skip
PRODUCT_OPS = {
    "mul", "div", "matmul", "mm", "bmm", "einsum", "baddbmm", "addbmm", "addmm", "linear",
    "scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
}  # fmt: skip
# fused ops whose product is of some of their operands only: op -> (positions of one factor, of the other);
# a product if both factors depend on the input (for addcdiv, also when the divisor alone does)
FUSED_PRODUCTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "addcmul": ((1,), (2,)),
    "addcdiv": ((1,), (2,)),
    "lerp": ((0, 1), (2,)),
}

# Captum (0.9 and earlier) goes wrong when one hooked nonlinear module feeds another directly
# (ReLU -> MaxPool, MaxPool -> ReLU, ...): captum issue #1104. Module-level references it affects:
ADJACENT_HOOK_REFERENCES = ("captum",)

# (the reference's rule for a module type, that module type) -> how it differs from the complete rules.
RULE_CHOICES: dict[tuple[str, str], str] = {
    ("nonlinear_1d", "Softmax"): (
        "1-D rescale over the whole softmax: each output's change is credited to its own input alone "
        '(complete, but not the split of the complete rules; xshap reproduces it with rules="shap")'
    ),
    ("softmax", "Softmax"): (
        "1-D rescale, then the mean multiplier over the whole batch tensor subtracted "
        "(not complete in general; xshap does not reproduce it)"
    ),
}

FUNCTIONAL = "functional call"
REUSED = "reused module"
NO_RULE = "no rule in reference"
PRODUCT = "input-dependent product"
RULE_CHOICE = "rule difference"
ADJACENT = "adjacent hooked modules"
REDUCTION = "non-linear reduction"
OVERLAPPING_POOL = "overlapping max pool"
INPLACE = "in-place module"

# the references whose hooks an in-place module breaks (shap's full backward hooks return views; Captum's
# forward hooks keep working)
INPLACE_REFERENCES = ("shap",)

# how to fix each kind of culprit (in the model's code), and whether crosscheck can apply the fix itself to a
# deep copy of the model to prove the diagnosis (an ablation)
FIXES: dict[str, str] = {
    FUNCTIONAL: "call it through a module (e.g. nn.ReLU()), one instance per call site",
    REUSED: "give every call its own instance (copy.deepcopy of the module per call site)",
    NO_RULE: "none in the model: the reference has no rule for this module type",
    PRODUCT: "none in the model: hook-based DeepLIFT has no rule for a product of two input-dependent tensors",
    RULE_CHOICE: "none needed: the reference's own rule, not an error",
    ADJACENT: "none in the model that keeps the function: a Captum bug (issue #1104)",
    REDUCTION: "none in the model: no torch.nn module wraps this reduction, so no hook can apply a rule to it",
    OVERLAPPING_POOL: "the reference cannot be fixed by editing the model: its max pool rule routes through "
    "max_unpool, which keeps one value where windows overlap; only a pool with kernel <= stride avoids it "
    "(a different model)",
    INPLACE: "construct it out of place (inplace=False)",
}
AUTO_FIXABLE = (REUSED, INPLACE)


@dataclass
class Culprit:
    """One cause of a reference's error, with every call site it has in the graph."""

    kind: str
    op: str
    module_path: str
    module_type: str
    callee: str
    references: tuple[str, ...]  # which references it affects ("shap", "captum")
    sites: list[tuple[str, str]] = field(default_factory=list)  # (file:line, code)
    rule: str = ""  # RULE_CHOICE: the reference's rule for the module
    note: str = ""  # RULE_CHOICE: how that rule differs from the complete rules
    calls: list[str] = field(default_factory=list)  # every module call it covers: "path" or "path (call #k)"
    target: str = ""  # FUNCTIONAL: the function called, where it could be resolved (torch.nn.functional.relu)

    @property
    def fix(self) -> str:
        """How to fix it in the model (or why that cannot be done)."""
        return FIXES.get(self.kind, "")

    @property
    def auto_fixable(self) -> bool:
        """Whether crosscheck can apply the fix to a deep copy of the model (reused -> copies, in-place -> not)."""
        return self.kind in AUTO_FIXABLE

    @property
    def name(self) -> str:
        """What the user would search their code for: the callee or the module path."""
        return self.callee or self.module_path or "<root>"

    @property
    def qualified_name(self) -> str:
        """The module path of the call: for ``self.activation(...)`` inside ``layers.0``, ``layers.0.activation``."""
        if self.callee.startswith("self.") and "." not in self.callee[5:]:
            attribute = self.callee[5:]
            return f"{self.module_path}.{attribute}" if self.module_path else attribute
        return self.module_path or "<root>"

    def describe(self) -> str:
        where = self.module_path or "<root>"
        mtype = self.module_type.rsplit(".", 1)[-1]
        n = len(self.sites)
        head = {
            FUNCTIONAL: f"`{self.name}` ({self.op}) called functionally in {where} [{mtype}], no hook applies its rule"
            if not self.target
            else f"`{self.qualified_name}` = {self.target} ({self.op}), called as `{self.callee}(...)` in {where} "
            f"[{mtype}]: a function, not a module, so no hook applies its rule",
            REUSED: f"module `{where}` [{mtype}] ({self.op}) reused: its call sites share one set of stored tensors",
            NO_RULE: f"module `{where}` [{mtype}] ({self.op}): no rule in {', '.join(self.references)}",
            PRODUCT: f"`{self.op}` of two input-dependent tensors in {where} [{mtype}]: no hook applies a rule",
            RULE_CHOICE: f"module `{where}` [{mtype}] ({self.op}): rule `{self.rule}` of {', '.join(self.references)}"
            f" — {self.note}",
            ADJACENT: f"module `{where}` [{mtype}] ({self.op}) is fed directly by {self.note}: the hooks of two "
            f"adjacent nonlinear modules interfere in {', '.join(self.references)} (captum issue #1104)",
            REDUCTION: f"`{self.name}` ({self.op}), a reduction that is not linear, called functionally in {where} "
            f"[{mtype}]: no module wraps it, no hook applies a rule, the reference takes its plain gradient",
            OVERLAPPING_POOL: f"module `{where}` [{mtype}] ({self.op}) {self.note}: windows overlap, and "
            f"{', '.join(self.references)} route(s) the pooled difference through max_unpool, which keeps one "
            "value where windows overlap",
            INPLACE: f"module `{where}` [{mtype}] is in-place (inplace=True): shap's backward hooks hand it a view "
            "of the previous module's output, and modifying it raises 'Output 0 of BackwardHookFunction is a view "
            "and is being modified inplace'",
        }[self.kind]
        lines = [f"{head} ({n} source line{'s' if n != 1 else ''}; affects {', '.join(self.references)})"]
        if len(self.calls) > 1:
            lines.append(f"    {len(self.calls)} calls: {', '.join(self.calls)}")
        lines += [f"    {source}: {code}" for source, code in self.sites]
        if self.fix and self.kind != RULE_CHOICE:
            lines.append(f"    fix: {self.fix}")
        return "\n".join(lines)


def base_op(op: str) -> str:
    """'aten.relu_.default' -> 'relu'."""
    parts = op.split(".")
    name = parts[1] if len(parts) > 1 and parts[0] == "aten" else parts[0]
    return name[:-1] if name.endswith("_") and not name.startswith("_") else name


def _call_names(code: str) -> list[str]:
    """Dotted names of the functions called on one source line, outermost first."""
    text = code.strip()
    for candidate in (text, text + " pass", text.removeprefix("return").strip()):
        try:
            tree = ast.parse(candidate)
            break
        except SyntaxError:
            continue
    else:
        return []
    return [ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)]


def callee_of(code: str, op: str, submodules: set[str]) -> str:
    """The expression that called ``op`` on this line: a call that is not a submodule call."""
    candidates = [name for name in _call_names(code) if name.removeprefix("self.") not in submodules]
    for name in candidates:
        if op in name.rsplit(".", 1)[-1]:
            return name
    return candidates[0] if candidates else ""


def find_culprits(
    converted, reference_tables: dict[str, dict[str, str]], model=None, varying_from: list[str] | None = None
) -> list[Culprit]:
    """Every cause of a hook-based reference's error that the exported graph shows, grouped by call.

    ``model``: the torch model, to tell its submodule calls from functional calls on a source line.
    ``varying_from``: the graph values the references vary (default: the model's inputs); for a model explained
    at a layer, the layer's values, what is held (a mask) being a constant for the references too.
    """
    provenance = converted.provenance
    graph = converted.capture.program.graph
    references = tuple(reference_tables)
    instance_of = _instance_paths(model)  # every path of one module object -> its first path
    calls: dict[str, set[tuple[str, int]]] = {}
    for prov in provenance.values():
        instance = instance_of.get(prov.module_path, prov.module_path)
        calls.setdefault(instance, set()).add((prov.module_path, prov.call_index))
    submodules = _submodule_names(provenance, model)
    varying = _varying_nodes(graph, converted.capture.input_names if varying_from is None else varying_from)

    found: dict[tuple, Culprit] = {}

    def add(kind, prov, op, refs, callee="", rule="", note="", path=None, target=""):
        path = prov.module_path if path is None else path
        key = (kind, op, path, callee, refs if kind == RULE_CHOICE else ())
        culprit = found.setdefault(
            key, Culprit(kind, op, path, prov.module_type, callee, refs, rule=rule, note=note, target=target)
        )
        site = (prov.source, prov.code)
        if site not in culprit.sites:
            culprit.sites.append(site)
        call = call_name(prov)
        if call not in culprit.calls:
            culprit.calls.append(call)

    for node in graph.nodes:
        if node.op != "call_function" or node.name not in provenance:
            continue
        prov = provenance[node.name]
        op = base_op(prov.op)
        mtype = prov.module_type.rsplit(".", 1)[-1]
        if op in FUSED_PRODUCTS:
            factor, other = (
                any(_varying_float(node.args, i, varying) for i in positions) for positions in FUSED_PRODUCTS[op]
            )
            if (factor and other) or (op == "addcdiv" and other):
                add(PRODUCT, prov, op, references)
            continue
        if op in PRODUCT_OPS:
            tensors = [a for a in node.args if hasattr(a, "name") and _is_float_tensor(a)]
            if sum(a.name in varying for a in tensors) >= 2 or (
                op == "div" and len(tensors) == 2 and tensors[1].name in varying
            ):
                add(PRODUCT, prov, op, references)
            continue
        if op in NONLINEAR_REDUCTIONS and node.name in varying:
            callee = callee_of(prov.code, op, submodules.get(prov.module_path, set()))
            add(REDUCTION, prov, op, references, callee)
            continue
        if op not in NONLINEAR_MODULES or node.name not in varying:
            continue
        if mtype in NONLINEAR_MODULES[op] and prov.module_type.startswith("torch.nn."):
            overlap = _pool_overlap(node) if op in MAX_POOL_OPS else ""
            pooled = tuple(name for name, table in reference_tables.items() if _hooks(table, mtype))
            if overlap and pooled:
                add(OVERLAPPING_POOL, prov, op, pooled, note=overlap)
            feeder = _hooked_feeder(node, prov, provenance, varying, reference_tables)
            adjacent = tuple(name for name in ADJACENT_HOOK_REFERENCES if name in feeder)
            if adjacent:
                add(ADJACENT, prov, op, adjacent, note=feeder[adjacent[0]])
            hooked = tuple(name for name, table in reference_tables.items() if _hooks(table, mtype))
            instance = instance_of.get(prov.module_path, prov.module_path)
            if len(calls.get(instance, ())) > 1 and hooked:  # a reference that never hooks the type is unaffected
                add(REUSED, prov, op, hooked, path=instance)
            lacking = tuple(name for name, table in reference_tables.items() if not _hooks(table, mtype))
            if lacking:
                add(NO_RULE, prov, op, lacking)
            for name, table in reference_tables.items():
                note = RULE_CHOICES.get((table.get(mtype, ""), mtype))
                if note is not None:
                    add(RULE_CHOICE, prov, op, (name,), rule=table[mtype], note=note)
        else:
            inside_torch = prov.module_type.startswith("torch.nn.")  # torch's own module code made the call
            code = prov.inner_code if inside_torch and prov.inner_code else prov.code
            callee = callee_of(code, op, submodules.get(prov.module_path, set()))
            target = ""
            if inside_torch and model is not None:  # torch's own code: follow self.method(...) to the function
                callee, target = _resolve_in_torch_module(model, prov.module_path, code, op, callee)
            add(FUNCTIONAL, prov, op, references, callee, target=target)
    if model is not None:
        for path, module in model.named_modules():
            if getattr(module, "inplace", False) is True and instance_of.get(path, path) in calls:
                prov = _first_call(provenance, path)
                if prov is not None and reference_tables.keys() & set(INPLACE_REFERENCES):
                    refs = tuple(name for name in reference_tables if name in INPLACE_REFERENCES)
                    add(INPLACE, prov, base_op(prov.op), refs, path=path)
    return list(found.values())


def call_name(prov) -> str:
    """One module call: its path, with the call number when the instance is called more than once."""
    return f"{prov.layer} (call #{prov.call_index + 1})" if prov.call_index else prov.layer


def _first_call(provenance, path: str):
    """The provenance of the first op of a module's first call (None if the graph shows no call)."""
    for prov in provenance.values():
        if prov.module_path == path:
            return prov
    return None


def _pool_overlap(node) -> str:
    """For aten.max_pool*(input, kernel, stride, padding, dilation, ...): 'kernel 3 > stride 2' where the windows
    overlap (an effective kernel, dilation * (kernel - 1) + 1, larger than the stride), else ''."""
    args = list(node.args) + [None] * 6

    def ints(value, default):
        if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
            return default
        return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]

    kernel = ints(args[1], [])
    if not kernel:
        return ""
    stride = ints(args[2], kernel)
    dilation = ints(args[4], [1])
    n = len(kernel)
    stride, dilation = (
        (stride * n)[:n] if len(stride) == 1 else stride,
        (dilation * n)[:n] if len(dilation) == 1 else dilation,
    )
    effective = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    if not any(e > s for e, s in zip(effective, stride)):
        return ""

    def show(v):
        return str(v[0]) if len(set(v)) == 1 else "x".join(map(str, v))

    return f"has kernel {show(effective)} > stride {show(stride)}"


def _resolve_in_torch_module(model, path: str, code: str, op: str, callee: str) -> tuple[str, str]:
    """Inside torch's own module code, follow ``self.method(...)`` calls (one level deep, as in
    TransformerEncoderLayer's ``self._ff_block``) to the attribute holding the function that does ``op``
    (``self.activation`` = torch.nn.functional.relu). Returns (callee, qualified function), or the callee as it
    was and '' if nothing resolves."""
    import inspect
    import textwrap
    import types

    try:
        module = model.get_submodule(path) if path else model
    except AttributeError:
        return callee, ""

    def function_of(name):
        attribute = getattr(module, name.removeprefix("self."), None) if name.startswith("self.") else None
        if attribute is None or isinstance(attribute, types.MethodType) or hasattr(attribute, "forward"):
            return None
        if callable(attribute) and op in getattr(attribute, "__name__", ""):
            return f"{getattr(attribute, '__module__', '') or ''}.{attribute.__name__}".lstrip(".")
        return None

    names = _call_names(code)
    for depth in range(2):
        for name in names:
            target = function_of(name)
            if target:
                return name, target
        if depth == 0:  # one level into the methods called on this line
            inner = []
            for name in names:
                method = getattr(module, name.removeprefix("self."), None) if name.startswith("self.") else None
                if isinstance(method, types.MethodType):
                    try:
                        inner += _call_names(textwrap.dedent(inspect.getsource(method)))
                    except (OSError, TypeError):
                        continue
            names = inner
    return callee, ""


def _hooks(table: dict[str, str], module_type: str) -> bool:
    """Whether a reference applies a rule of its own (through its hooks) to modules of this type."""
    return table.get(module_type) not in (None, "passthrough")


def _instance_paths(model) -> dict[str, str]:
    """Every module path -> the first path of the same module object (``self.b = self.a`` is one module)."""
    if model is None:
        return {}
    first: dict[int, str] = {}
    paths = {}
    for path, module in model.named_modules(remove_duplicate=False):
        paths[path] = first.setdefault(id(module), path)
    return paths


def _varying_float(args, position: int, varying: set[str]) -> bool:
    """Whether argument ``position`` is an input-dependent float tensor."""
    arg = args[position] if position < len(args) else None
    return hasattr(arg, "name") and arg.name in varying and _is_float_tensor(arg)


def _is_float_tensor(node) -> bool:
    value = node.meta.get("val") if hasattr(node, "meta") else None
    return value is None or getattr(value, "is_floating_point", lambda: True)()


def _hooked_feeder(node, prov, provenance, varying: set[str], reference_tables) -> dict[str, str]:
    """reference -> 'module `path` [Type]' of another hooked nonlinear module whose output this op reads directly."""
    found: dict[str, str] = {}
    for arg in node.all_input_nodes:
        while (
            arg.op == "call_function" and getattr(arg.target, "__name__", "") == "getitem"
        ):  # (values, indices) of a max pool
            arg = arg.args[0]
        if arg.name not in varying or arg.name not in provenance:
            continue
        source = provenance[arg.name]
        if (source.module_path, source.call_index) == (prov.module_path, prov.call_index):
            continue
        stype = source.module_type.rsplit(".", 1)[-1]
        if not source.module_type.startswith("torch.nn.") or stype not in NONLINEAR_MODULES.get(base_op(source.op), ()):
            continue
        for name, table in reference_tables.items():
            mtype = prov.module_type.rsplit(".", 1)[-1]
            if _hooks(table, stype) and _hooks(table, mtype):
                found[name] = f"module `{source.layer}` [{stype}]"
    return found


def _submodule_names(provenance, model=None) -> dict[str, set[str]]:
    """module path -> names of its direct submodules (all of the model's when given, else those in the graph)."""
    children: dict[str, set[str]] = {}
    paths = [name for name, _ in model.named_modules()] if model is not None else []
    paths += [prov.module_path for prov in provenance.values()]
    for path in paths:
        parts = path.split(".") if path else []
        for depth in range(len(parts)):
            children.setdefault(".".join(parts[:depth]), set()).add(parts[depth])
    return children


def _varying_nodes(graph, input_names: list[str]) -> set[str]:
    """Names of the nodes that depend on the user inputs."""
    varying = set(input_names)
    for node in graph.nodes:
        if node.op == "call_function" and any(a.name in varying for a in node.all_input_nodes):
            varying.add(node.name)
    return varying
