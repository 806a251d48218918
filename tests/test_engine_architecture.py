"""The shape of tts_engine itself, read from its source with `ast`: imports go one way (no cycle),
no module reaches into another's private names, only the executor drives a channel's engine face,
and the scheduling policy and the stream channel stay plain Python (no torch)."""

from __future__ import annotations

import ast
import importlib

from source_rules import find_cycle, imports, module_files, parse, private_uses

FILES = module_files("tts_engine")
MODULES = sorted(FILES)  # "" is the package's __init__
# The channel's engine face: written by the engine thread's executor and nothing else.
ENGINE_FACE = {"take_text", "note_tokens", "should_stop", "admitted", "stepped", "deliver", "finish", "fail"}
# Plain-data modules: the policy, the channel and what they hand out import no torch and no model code.
PLAIN = {"frames", "errors", "packets", "text_clean", "channel", "slots", "plan", "stream", "word_timing"}


def _tree(module: str) -> ast.Module:
    return parse(FILES[module])


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(tts_engine modules it imports, other top-level packages it imports)."""
    return imports("tts_engine", module, FILES)


def test_every_module_imports():
    for module in MODULES:
        importlib.import_module(f"tts_engine.{module}" if module else "tts_engine")


def test_the_import_graph_inside_tts_engine_has_no_cycle():
    cycle = find_cycle({m: _imports(m)[0] for m in MODULES})
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_plain_modules_stay_plain():
    for module in sorted(PLAIN):
        inside, outside = _imports(module)
        assert inside <= PLAIN, f"{module} imports {sorted(inside - PLAIN)}"
        assert not outside & {"torch", "qwen_tts", "transformers", "av"}, f"{module} imports {sorted(outside)}"


def test_no_module_uses_another_objects_private_names():
    found = [use for module in MODULES for use in private_uses(_tree(module), FILES[module].name)]
    assert not found, "private names used from outside their object:\n" + "\n".join(found)


def test_the_private_name_check_catches_what_it_should():
    sample = "def f(stream, r):\n    stream._fail(1)\n    self._ok(cls._x, r.__dict__)\n    return r._rows\nfrom .x import _hidden\n"
    found = private_uses(ast.parse(sample), "sample.py")
    assert sorted(found) == ["sample.py:2: stream._fail", "sample.py:4: r._rows", "sample.py:5: imports _hidden"]


def test_only_the_executor_drives_the_engine_face_of_a_channel():
    found = []
    for module in MODULES:
        if module in ("executor", "channel"):
            continue
        for node in ast.walk(_tree(module)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ENGINE_FACE:
                found.append(f"{FILES[module].name}:{node.lineno}: {ast.unparse(node.func)}")
    assert not found, "engine-face calls outside the executor:\n" + "\n".join(found)
