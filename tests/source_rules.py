"""A package's shape read from its source with `ast` (nothing is imported): which of its own modules
each module imports, import cycles, and private names used from outside their object. Shared by
test_engine_architecture.py and test_agent_architecture.py."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_files(package: str) -> dict[str, Path]:
    """Every module below `package`, by its dotted name inside it: "" is the package's __init__,
    "direct" a subpackage's __init__, "direct.peer" a module in it."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT / package).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path.relative_to(ROOT)))


def _is_package(files: dict[str, Path], module: str) -> bool:
    return files[module].name == "__init__.py"


def imports(package: str, module: str, files: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(modules of `package` that `module` imports, other top-level packages it imports) - anywhere
    in the file, inside functions and TYPE_CHECKING blocks too: a cycle there is still a cycle in the
    design. Importing a.b also runs a's __init__, so that is an edge too (but not an __init__ the
    importer itself lives in, nor the package's own, which every module sits below)."""
    parts = module.split(".") if module else []
    here = parts if _is_package(files, module) else parts[:-1]  # the package `module` sits in
    targets: set[str] = set()
    outside: set[str] = set()
    for node in ast.walk(parse(files[module])):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                top, _, rest = (node.module or "").partition(".")
                if top != package:
                    outside.add(top)
                    continue
                base = rest.split(".") if rest else []
            else:
                base = here[: len(here) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            base_name = ".".join(base)
            for alias in node.names:
                sub = f"{base_name}.{alias.name}" if base_name else alias.name
                targets.add(sub if sub in files else base_name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top, _, rest = alias.name.partition(".")
                if top == package:
                    targets.add(rest)
                else:
                    outside.add(top)
    inside = set()
    for target in targets:
        names = target.split(".") if target else []
        inside.update(".".join(names[:i]) for i in range(1, len(names) + 1))
    mine = {".".join(here[:i]) for i in range(1, len(here) + 1)}
    return inside - mine - {"", module}, outside


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (module -> modules it imports) as a path, or None."""
    state: dict[str, str] = {}  # "open" while on the DFS path, "done" after

    def visit(module: str, path: list[str]) -> list[str] | None:
        if state.get(module) == "done":
            return None
        if state.get(module) == "open":
            return path[path.index(module):] + [module]
        state[module] = "open"
        for dep in sorted(graph[module]):
            cycle = visit(dep, path + [module])
            if cycle:
                return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle:
            return cycle
    return None


def private_uses(tree: ast.Module, name: str) -> list[str]:
    """`obj._x` for any obj but self and cls (dunders aside), and `from m import _x`: stricter than
    "another module's": inside one module too, another object's private state goes through a property."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.ImportFrom):
            found += [f"{name}:{node.lineno}: imports {a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found
