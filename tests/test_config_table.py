"""The README's configuration tables (README.md, agent/direct/README.md) against the code.

Every variable in a table is read by some EnvSpec (a service's from_env, or start_all's planner:
agent/launch/settings.py) or by one of the few places named in ELSEWHERE; every EnvSpec variable is in
a table; and every default a table states is the default of each dataclass field the variable sets.
A default cell is a backticked literal (parsed as the variable is parsed; a relative path names a
place in the repository) or one of the documented non-literal forms in `check_default`.
"""

from __future__ import annotations

import re
from dataclasses import MISSING
from pathlib import Path
from typing import Any

import pytest

import agent.config
import agent.direct.config
import agent.launch.settings
import speech_api.config
import token_server.config
from agent.plugins.omni_config import DEFAULT_SYSTEM_PROMPT
from deploy.omni import gpu_split
from token_server.env import EnvSpec, Parser, field_default
from tts_engine.config import MAX_STREAMS_CPU, MAX_STREAMS_CUDA

ROOT = Path(__file__).resolve().parents[1]

TABLES = (ROOT / "README.md", ROOT / "agent" / "direct" / "README.md")
SPECS = [spec for module in (agent.config, agent.direct.config, token_server.config, agent.launch.settings,
                              speech_api.config)
         for spec in vars(module).values() if isinstance(spec, EnvSpec)]
# variable -> every (dataclass, field, parser) it sets
TARGETS: dict[str, list[tuple[type, str, Parser]]] = {}
for _spec in SPECS:
    for _var in _spec.vars:
        TARGETS.setdefault(_var.name, []).append((_spec.target, _var.field, _var.parse))
# read where no dataclass is: the script's own process settings, the hub probe
ELSEWHERE = {"RUN_DIR": "scripts/start_all.sh", "BACKENDS_VENV": "scripts/start_all.sh",
             "STOP_TIMEOUT_S": "scripts/start_all.sh", "START_TIMEOUT_S": "scripts/start_all.sh",
             "HF_HUB_OFFLINE": "scripts/lib/probe.py"}
# StartSettings leaves these unset so that deploy/omni/gpu_split.py's own defaults apply
GPU_SPLIT_DEFAULTS = {"OMNI_MAX_MODEL_LEN": gpu_split.DEFAULT_MAX_MODEL_LEN,
                      "OMNI_GPU_MARGIN_GIB": gpu_split.DEFAULT_MARGIN_GIB}
# defaults the tables describe in words
DESCRIBED = {"AGENT_SYSTEM_PROMPT": ("short spoken-style prompt", DEFAULT_SYSTEM_PROMPT),
             "START_TIMEOUT_S": ("per service", None),  # each health-check wait its own
             # 0: per device, and the cell names both numbers
             "TTS_MAX_STREAMS": (f"auto: `{MAX_STREAMS_CUDA}` on CUDA, `{MAX_STREAMS_CPU}` on the CPU", 0)}


def test_the_gpu_split_plans_the_engines_own_gpu_slot_default():
    assert gpu_split.DEFAULT_TTS_MAX_STREAMS == MAX_STREAMS_CUDA


def rows() -> list[tuple[str, str, str]]:
    """(table file, variable, its default cell) for every variable of every configuration table."""
    found = []
    for path in TABLES:
        in_table = False
        for line in path.read_text().splitlines():
            if line.startswith("| variable | default |"):
                in_table = True
                continue
            if not line.startswith("|"):
                in_table = False
            if not in_table or line.startswith("|---"):
                continue
            names_cell, default_cell = (c.strip() for c in re.split(r"(?<!\\)\|", line)[1:3])
            names = re.findall(r"`([A-Z][A-Z0-9_]*)`", names_cell)
            defaults = re.split(r"\s+/\s+|(?<=`),\s+(?=`)", default_cell) if len(names) > 1 else [default_cell]
            assert len(defaults) in (1, len(names)), f"{path.name}: {line}: one default for all, or one each"
            found += [(str(path.relative_to(ROOT)), name, defaults[i] if len(defaults) > 1 else defaults[0])
                      for i, name in enumerate(names)]
    return found


ROWS = rows()


def same(literal: str, parse: Parser, name: str, default: Any) -> bool:
    if isinstance(default, (str, Path)) and Path(default).is_absolute() and not literal.startswith("/"):
        return (ROOT / literal).resolve() == Path(default).resolve()  # a relative path: in the repository
    return parse(name, literal) == default


def check_default(name: str, cell: str) -> None:
    targets = TARGETS.get(name, [])
    defaults = [field_default(target, field) for target, field, _ in targets]
    literal = re.match(r"`([^`]*)`", cell)
    if name in DESCRIBED:
        words, expected = DESCRIBED[name]
        assert cell.startswith(words) and defaults and all(d == expected for d in defaults), (name, cell, defaults)
    elif name in GPU_SPLIT_DEFAULTS:
        assert literal and defaults == [None], (name, cell, defaults)
        assert targets[0][2](name, literal.group(1)) == GPU_SPLIT_DEFAULTS[name]
    elif name in ELSEWHERE and not targets:
        assert name in (ROOT / ELSEWHERE[name]).read_text(), f"{ELSEWHERE[name]} does not read {name}"
        if literal:  # the script's own ${NAME:-default}
            bash = re.search(rf"\$\{{{name}:-([^}}]*)\}}", (ROOT / ELSEWHERE[name]).read_text())
            assert bash and bash.group(1).removeprefix("$ROOT/") == literal.group(1).rstrip("/"), (name, cell)
        else:
            assert cell in ("(unset)", "(none)"), (name, cell)
    elif literal:
        assert defaults, f"no from_env or planner reads {name}"
        for (target, field, parse), default in zip(targets, defaults, strict=True):
            assert same(literal.group(1), parse, name, default), (name, cell, target.__name__, field, default)
    elif cell.lstrip("(").startswith("required"):  # no default: from_env says it is not set
        assert defaults and all(d is MISSING for d in defaults), (name, defaults)
    elif cell.startswith("(one required"):  # either this or its partner (EngineConfig checks)
        assert defaults and all(d is None for d in defaults), (name, defaults)
    elif cell in ("(none)", "none", "(unset)"):
        assert defaults and all(d in (None, "", ()) for d in defaults), (name, defaults)
    elif cell == "auto":  # chosen when it runs (e.g. by the device)
        assert defaults and all(d is None for d in defaults), (name, defaults)
    elif (other := re.fullmatch(r"= `([A-Z_]+)`", cell)) is not None:  # falls back to another variable
        assert other.group(1) in TARGETS and defaults and all(d is None for d in defaults), (name, defaults)
    else:
        pytest.fail(f"{name}: the default {cell!r} is neither a `literal` nor a documented form")


@pytest.mark.parametrize("table,name,cell", ROWS, ids=[f"{t}:{n}" for t, n, _ in ROWS])
def test_each_default_in_the_tables_is_the_dataclass_default(table, name, cell):
    assert name in TARGETS or name in ELSEWHERE, f"{table}: nothing reads {name}"
    check_default(name, cell)


def test_every_variable_read_is_in_a_table():
    documented = {name for _, name, _ in ROWS}
    assert sorted(set(TARGETS) - documented) == []
    assert len(ROWS) > 60  # the tables were found and read


def test_the_forms_are_checked():
    """The checks above fail on a wrong default, an unknown form and an unread variable."""
    with pytest.raises(AssertionError):
        check_default("TOKEN_SERVER_PORT", "`8090`")
    with pytest.raises(AssertionError):
        check_default("DIRECT_ALLOWED_ORIGINS", "`http://127.0.0.1:8080`")
    with pytest.raises(AssertionError):
        check_default("OMNI_BASE_URL", "(none)")
    with pytest.raises(pytest.fail.Exception):
        check_default("TTS_SPEAKER", "a nice voice")
    with pytest.raises(AssertionError):
        check_default("STOP_TIMEOUT_S", "`20`")
