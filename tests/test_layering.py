"""The layout's promise, enforced: imports run application -> check -> explain -> engine, converters imports
nothing from xshap, the engine imports no torch, and no two modules import each other at load time.

Every import statement counts, the ones inside functions (lazy imports) included: a lazy import against the
flow is still a dependency against the flow.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APPLICATION = (
    "xshap.cli",
    "xshap.demo",
    "xshap.seed",
    "xshap.loading",
    "xshap.files",
    "xshap.factory",
    "xshap.captum",
    "xshap.__main__",
)

# package prefix -> what no module under it may import (by module-name prefix)
FORBIDDEN = {
    "converters": ("xshap",),
    "xshap.engine": ("torch", "converters", "shap", "captum", "xshap.explain", "xshap.check", *APPLICATION),
    "xshap.explain": ("xshap.check", "shap", "captum", *APPLICATION),
    "xshap.check": APPLICATION,
}
# the one place a layer may import what its layer forbids: results as shap.Explanation objects (shap's type)
ALLOWED = {("xshap.explain.interop", "shap")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    files = [*(ROOT / "xshap").rglob("*.py"), *(ROOT / "converters").rglob("*.py")]
    return {_module_name(p): p for p in files}


def _imports(path: Path, module: str, top_level_only: bool = False) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == "__future__":
                continue
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return found


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_imports_run_one_way():
    violations = []
    for module, path in _modules().items():
        for layer, forbidden in FORBIDDEN.items():
            if not _matches(module, layer):
                continue
            for name in _imports(path, module):
                bad = [f for f in forbidden if _matches(name, f) and (module, f) not in ALLOWED]
                if bad:
                    violations.append(f"{module} imports {name} (forbidden under {layer})")
    assert not violations, "\n".join(violations)


def test_no_import_cycles_at_load_time():
    modules = _modules()
    graph = {m: {n for n in _imports(p, m, top_level_only=True) if n in modules and n != m} for m, p in modules.items()}
    # a package's own __init__ importing its submodules is how a package is assembled, not a cycle
    for m in graph:
        graph[m] = {n for n in graph[m] if not _matches(n, m)}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("module", ["xshap", "xshap.engine.transform", "xshap.engine.diagnose"])
def test_the_engine_loads_without_torch(module):
    """JAX users never pay for torch: importing xshap (and its engine) loads neither torch nor the references."""
    code = (
        f"import sys, {module}; print(sorted(m for m in ('torch', 'converters', 'shap', 'captum') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_the_layering_test_can_fail(tmp_path, monkeypatch):
    """A converters module that reaches into xshap is caught (the check reads the real import statements)."""
    bad = tmp_path / "converters" / "sneaky.py"
    bad.parent.mkdir()
    bad.write_text("def f():\n    from xshap.explain.summary import summary\n", encoding="utf-8")
    assert "xshap.explain.summary" in _imports(bad, "converters.sneaky")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="converters.sneaky imports xshap"):
        test_imports_run_one_way()
