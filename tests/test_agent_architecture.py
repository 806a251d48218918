"""The shape of agent/ itself, read from its source with `ast`: imports go one way (no cycle), the
plugins know nothing of sessions, transports or traces, no module reaches into another object's
private names (but for a short list of third-party ones), and the README's data-path table names
files and functions that exist."""

from __future__ import annotations

import ast
import importlib
import re

from source_rules import ROOT, find_cycle, imports, module_files, parse, private_uses

FILES = module_files("agent")
MODULES = sorted(FILES)  # "" is agent/__init__.py, "session" agent/session/__init__.py
STAGES = ("transport", "session", "plugins", "observe")  # their __init__ files import nothing
# Third-party private names the agent has to touch, each pinned to its file and place:
ALLOWED_PRIVATE = {
    # leave at once when the engine thread died: no atexit handlers, no livekit shutdown waiting
    # on sessions that have lost their voice (the supervisor restarts the process)
    "__main__.py": {"os._exit"},
    # aiortc has no public jitter-buffer setting: the replaced buffer reads the depayloaded payload
    # aiortc's receiver left in RtpPacket._data, and tests read the prefetch back (module docstring)
    "direct/jitter.py": {"packet._data", "getattr(receiver, _BUFFER_ATTR)._prefetch"},
}


def _label(module: str) -> str:
    return str(FILES[module].relative_to(ROOT / "agent"))


def test_every_module_imports():
    for module in MODULES:
        importlib.import_module(f"agent.{module}" if module else "agent")


def test_the_import_graph_inside_agent_has_no_cycle():
    cycle = find_cycle({m: imports("agent", m, FILES)[0] for m in MODULES})
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_import_graph_counts_relative_imports_and_parent_packages():
    inside, outside = imports("agent", "direct.peer", FILES)
    assert {"session", "session.pipeline", "transport.audio_output", "config", "direct.webrtc_io"} <= inside
    assert "direct" not in inside and "" not in inside  # the packages it lives in are no edges
    assert {"livekit", "tts_engine"} <= outside
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_the_stage_packages_import_nothing_at_init():
    # agent.launch reads plugins/omni_config.py and must stay free of torch and livekit
    for stage in STAGES:
        tree = parse(FILES[stage])
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)], stage


def test_the_plugins_know_nothing_of_the_rest_of_the_agent():
    for module in (m for m in MODULES if m.startswith("plugins")):
        inside, _ = imports("agent", module, FILES)
        others = sorted(m for m in inside if m.split(".")[0] != "plugins")
        assert not others, f"{module} imports {others}"


def test_no_module_uses_another_objects_private_names():
    found, allowed_seen = [], set()
    for module in MODULES:
        label = _label(module)
        for use in private_uses(parse(FILES[module]), label):
            expr = use.split(": ", 1)[1]
            if expr in ALLOWED_PRIVATE.get(label, set()):
                allowed_seen.add((label, expr))
            else:
                found.append(use)
    assert not found, "private names used from outside their object:\n" + "\n".join(found)
    unused = {(f, e) for f, exprs in ALLOWED_PRIVATE.items() for e in exprs} - allowed_seen
    assert not unused, f"allow-list entries no longer needed (remove them): {sorted(unused)}"


# ---------------------------------------------------------------- the README's data-path table

_FILE_SPAN = re.compile(r"(?P<file>[\w./-]+\.(?:py|js))(?:: (?P<names>[\w.]+))?")
_NAME_SPAN = re.compile(r"[\w.]+")


def _defined(tree: ast.Module, dotted: str) -> bool:
    """`dotted` ("Class.method", "function", "CONSTANT") is defined at that place in the module."""
    body: list[ast.stmt] = tree.body
    for part in dotted.split("."):
        node = next((n for n in body if _defines(n, part)), None)
        if node is None:
            return False
        body = node.body if isinstance(node, ast.ClassDef) else []
    return True


def _defines(node: ast.stmt, name: str) -> bool:
    if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        return node.name == name
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
    return isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name


def data_path_errors(readme: str) -> list[str]:
    """Every `file` and `file: Name.attr` of the table's "where" column exists; a bare `Name.attr`
    belongs to the file named last before it in the same cell."""
    section = readme.split("## Data path", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| hop ")]
    errors = []
    for row in rows:
        hop, where = [cell.strip() for cell in row.strip("|").split("|")][:2]
        spans = re.findall(r"`([^`]+)`", where)
        if not spans:
            errors.append(f"{hop}: names no code")
        current = None
        for span in spans:
            names = span
            if m := _FILE_SPAN.fullmatch(span):
                current, names = ROOT / m["file"], m["names"]
                if not current.is_file():
                    errors.append(f"{hop}: no file {m['file']}")
                    current = None
                    continue
            elif not _NAME_SPAN.fullmatch(span):
                errors.append(f"{hop}: `{span}` is neither `file` nor `file: Name` nor `Name`")
                continue
            if not names:
                continue
            if current is None:
                errors.append(f"{hop}: `{span}` comes before any file")
            elif current.suffix == ".py" and not _defined(parse(current), names):
                errors.append(f"{hop}: {current.relative_to(ROOT)} defines no {names}")
            elif current.suffix == ".js" and not all(re.search(rf"\b{p}\b", current.read_text())
                                                      for p in names.split(".")):
                errors.append(f"{hop}: {current.relative_to(ROOT)} has no {names}")
    return errors


def test_the_readme_data_path_table_matches_the_code():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.split("## Data path", 1)[1].split("\n## ", 1)[0].splitlines()) > 10
    errors = data_path_errors(readme)
    assert not errors, "README data-path table:\n" + "\n".join(errors)


def test_the_data_path_check_catches_what_it_should():
    table = ("## Data path\n\n| hop | where (file: function) |\n|---|---|\n"
             "| a | `agent/session/duplex.py: DuplexController.cut` / `DuplexController.nowhere` |\n"
             "| b | `agent/moved.py: Thing` |\n| c | just words |\n| d | `Orphan` |\n\n## Next\n")
    assert data_path_errors(table) == [
        "a: agent/session/duplex.py defines no DuplexController.nowhere",
        "b: no file agent/moved.py",
        "c: names no code",
        "d: `Orphan` comes before any file",
    ]
