"""The shape of tts_engine itself, read from its source with `ast`: imports go one way (no cycle),
no module reaches into another's private names, only the executor drives a channel's engine face,
and the scheduling policy and the stream channel stay plain Python (no torch)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tts_engine"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))
# The channel's engine face: written by the engine thread's executor and nothing else.
ENGINE_FACE = {"take_text", "note_tokens", "should_stop", "admitted", "stepped", "deliver", "finish", "fail"}
# Plain-data modules: the policy, the channel and what they hand out import no torch and no model code.
PLAIN = {"frames", "errors", "packets", "text_clean", "channel", "slots", "plan", "stream", "word_timing"}


def _tree(module: str) -> ast.Module:
    return ast.parse((PACKAGE / f"{module}.py").read_text(), filename=f"{module}.py")


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(tts_engine modules it imports, other top-level packages it imports) - anywhere in the file,
    inside functions and TYPE_CHECKING blocks too: a cycle there is still a cycle in the design."""
    inside, outside = set(), set()
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").split(".")[0] != "tts_engine":
                outside.add((node.module or "").split(".")[0])
                continue
            base = (node.module or "").removeprefix("tts_engine").lstrip(".")
            if base:
                inside.add(base.split(".")[0])
            else:  # from . import x
                inside.update(a.name for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.Import):
            for a in node.names:
                top, _, rest = a.name.partition(".")
                if top == "tts_engine" and rest:
                    inside.add(rest.split(".")[0])
                elif top != "tts_engine":
                    outside.add(top)
    inside.discard("__init__")
    inside.discard(module)
    return inside, outside


def test_every_module_imports():
    for module in MODULES:
        importlib.import_module(f"tts_engine.{module}" if module != "__init__" else "tts_engine")


def test_the_import_graph_inside_tts_engine_has_no_cycle():
    graph = {m: _imports(m)[0] for m in MODULES}
    state: dict[str, str] = {}  # "open" while on the DFS path, "done" after

    def visit(module: str, path: list[str]) -> None:
        if state.get(module) == "done":
            return
        if state.get(module) == "open":
            cycle = path[path.index(module):] + [module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        state[module] = "open"
        for dep in sorted(graph[module]):
            visit(dep, path + [module])
        state[module] = "done"

    for module in MODULES:
        visit(module, [])


def test_the_plain_modules_stay_plain():
    for module in sorted(PLAIN):
        inside, outside = _imports(module)
        assert inside <= PLAIN, f"{module} imports {sorted(inside - PLAIN)}"
        assert not outside & {"torch", "qwen_tts", "transformers", "av"}, f"{module} imports {sorted(outside)}"


def _private_uses(tree: ast.Module, module: str) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{module}.py:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.ImportFrom):
            found += [f"{module}.py:{node.lineno}: imports {a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_module_uses_another_objects_private_names():
    found = [use for module in MODULES for use in _private_uses(_tree(module), module)]
    assert not found, "private names used from outside their object:\n" + "\n".join(found)


def test_the_private_name_check_catches_what_it_should():
    sample = "def f(stream, r):\n    stream._fail(1)\n    self._ok(cls._x, r.__dict__)\n    return r._rows\nfrom .x import _hidden\n"
    found = _private_uses(ast.parse(sample), "sample")
    assert sorted(found) == ["sample.py:2: stream._fail", "sample.py:4: r._rows", "sample.py:5: imports _hidden"]


def test_only_the_executor_drives_the_engine_face_of_a_channel():
    found = []
    for module in MODULES:
        if module in ("executor", "channel"):
            continue
        for node in ast.walk(_tree(module)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ENGINE_FACE:
                found.append(f"{module}.py:{node.lineno}: {ast.unparse(node.func)}")
    assert not found, "engine-face calls outside the executor:\n" + "\n".join(found)
