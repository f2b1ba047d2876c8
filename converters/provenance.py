"""Where each op of an exported graph comes from: module path, module type, call index, source line."""

from __future__ import annotations

import re
from dataclasses import dataclass

_CALL_SUFFIX = re.compile(r"@(\d+)$")


@dataclass(frozen=True)
class Provenance:
    """The origin of one node of the exported graph.

    module_path: dotted path of the innermost module whose forward emitted the op ("" = the root).
    module_type: qualified class name of that module.
    call_index: which call of that module instance this is (0 = first call site executed).
    source: "file:line" of the user's code that emitted the op (innermost frame outside torch).
    code: the text of that source line.
    node: the name of the node in the exported graph.
    inner_code: the text of the innermost frame's line, inside torch or not (for an op that torch's own
    module code emits, that line shows the functional call, e.g. ``self.activation(...)``).
    """

    node: str
    op: str
    module_path: str
    module_type: str
    call_index: int
    source: str
    code: str
    inner_code: str = ""

    @property
    def layer(self) -> str:
        """The module path, shown as <root> for ops of the root module's own forward."""
        return self.module_path or "<root>"

    @property
    def scope(self) -> str:
        """The JAX name scope of this op's module call: the layer, with '@k' for its k-th call (k >= 1)."""
        return f"{self.layer}@{self.call_index}" if self.call_index else self.layer

    def describe(self) -> str:
        call = f" call #{self.call_index + 1}" if self.call_index else ""
        where = f" ({self.source}: {self.code})" if self.source else ""
        return f"{self.layer} [{self.module_type.rsplit('.', 1)[-1]}]{call}{where}"


_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')


def _frames(stack_trace: str) -> list[tuple[str, str]]:
    """(file:line, code) of every frame of a stack trace, outermost first."""
    lines = stack_trace.splitlines()
    frames: list[tuple[str, str]] = []
    for i, line in enumerate(lines):
        match = _FRAME.search(line)
        if match:
            code = lines[i + 1].strip() if i + 1 < len(lines) else ""
            frames.append((f"{match['file']}:{match['line']}", code))
    return frames


def _user_frame(frames: list[tuple[str, str]]) -> tuple[str, str]:
    """The innermost frame that is not inside torch itself."""
    for location, code in reversed(frames):
        path = location.replace("\\", "/")
        if "/torch/" not in path and "/site-packages/torch" not in path:
            return location, code
    return frames[-1] if frames else ("", "")


def provenance_of(node, root_type: str) -> Provenance:
    """Read the provenance of one torch.fx node of an ExportedProgram graph."""
    stack = node.meta.get("nn_module_stack") or {}
    module_path, module_type, call_index = "", root_type, 0
    if stack:
        key, (path, mtype) = list(stack.items())[-1]
        module_path = path
        module_type = mtype if isinstance(mtype, str) else f"{mtype.__module__}.{mtype.__qualname__}"
        match = _CALL_SUFFIX.search(key)
        call_index = int(match.group(1)) if match else 0
    frames = _frames(node.meta.get("stack_trace") or "")
    source, code = _user_frame(frames)
    return Provenance(
        node=node.name,
        op=op_name(node.target),
        module_path=module_path,
        module_type=module_type,
        call_index=call_index,
        source=source,
        code=code,
        inner_code=frames[-1][1] if frames else "",
    )


def op_name(target) -> str:
    """A readable name for an fx call target: 'aten.relu.default', 'operator.getitem' ..."""
    if hasattr(target, "_overloadname"):  # torch OpOverload: str() is 'aten.sum.dim_IntList'
        return str(target)
    module = getattr(target, "__module__", "") or ""
    return f"{module.split('.')[-1]}.{getattr(target, '__name__', str(target))}"
