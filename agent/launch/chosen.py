"""chosen.env in the run folder: what start chose and why, what it launches, and a generated key pair
(mode 0600). Shell-quoted NAME=value lines (a list is a bash array), so start_all.sh sources it and
`read_chosen` reads it back (for start, and for the soak's endpoints: testing/soak_report.py)."""

from __future__ import annotations

import contextlib
import os
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .console import TEST_VOICE_BANNER


@dataclass
class Chosen:
    items: list[tuple[str, str | list[str]]] = field(default_factory=list)  # in chosen.env's order
    test_voice: bool = False

    def __getitem__(self, name: str) -> str | list[str]:
        return dict(self.items)[name]

    def write(self, run_dir: Path) -> Path:
        """chosen.env, replaced whole; with the test voice, its banner heads the agent's log as well."""
        path, staging = run_dir / "chosen.env", run_dir / "chosen.env.new"
        staging.unlink(missing_ok=True)
        with os.fdopen(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(f"# written by scripts/start_all.sh start (python -m agent.launch plan) on "
                      f"{datetime.now().astimezone().isoformat(timespec='seconds')}; read by start, status, stop "
                      "and scripts/soak.py\n")
            for name, value in self.items:
                quoted = f"({' '.join(map(shlex.quote, value))})" if isinstance(value, list) else shlex.quote(value)
                out.write(f"{name}={quoted}\n")
        staging.replace(path)
        if self.test_voice:
            (run_dir / "logs").mkdir(parents=True, exist_ok=True)
            with (run_dir / "logs" / "agent.log").open("a") as log:
                log.write(TEST_VOICE_BANNER)
        return path


def read_chosen(path: Path) -> dict[str, str]:
    """The plain values of an earlier chosen.env (arrays and unreadable lines left out); {} if none."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    found: dict[str, str] = {}
    for name, sep, value in (line.partition("=") for line in text.splitlines()):
        if sep and name.isidentifier() and not value.startswith("("):
            with contextlib.suppress(ValueError):
                found[name] = " ".join(shlex.split(value))
    return found
