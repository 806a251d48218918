"""What the planner finds out about the machine, and the few things it does on the way (install the
LiveKit server or the turn model, build the tiny checkpoint): `SystemProbes` asks the machine,
`GivenFacts` answers from plain data (unit tests, `python -m agent.launch plan --facts FILE`).

Each probe is the same command start_all.sh ran: scripts/lib/probe.py (http, port, hub), the install
scripts, deploy/omni/gpu_split.py, nvidia-smi."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .settings import ROOT

PROBE = ROOT / "scripts" / "lib" / "probe.py"
INSTALL_LIVEKIT = ROOT / "scripts" / "install_livekit.sh"
INSTALL_TURN_MODEL = ROOT / "scripts" / "install_turn_model.sh"


class Probes(Protocol):
    def gpu_present(self) -> bool: ...
    def livekit_binary(self) -> str: ...  # where scripts/install_livekit.sh puts the server
    def executable(self, path: str) -> bool: ...
    def go_present(self) -> bool: ...
    def install_livekit(self, log: Path) -> bool: ...  # minutes, once; its output is shown and logged
    def livekit_version(self) -> str: ...
    def vllm_omni(self, omni_venv: Path) -> tuple[str, str] | None: ...  # (vllm, its python) if usable
    def vllm_omni_version(self, python: str) -> str: ...
    def gpu_split(self, args: list[str]) -> tuple[int, str]: ...  # deploy/omni/gpu_split.py: status, output
    def hub(self, repo_id: str) -> tuple[bool, str]: ...  # cached | reachable | unavailable: <why>
    def is_dir(self, path: str) -> bool: ...
    def is_file(self, path: str) -> bool: ...
    def nonempty_file(self, path: str) -> bool: ...
    def install_turn_model(self) -> bool: ...  # its output is shown
    def turn_model_path(self) -> str: ...
    def port_owner(self, host: str, port: int) -> str | None: ...  # None: HOST:PORT can be bound
    def http(self, url: str, timeout: float, bearer: str | None = None) -> tuple[bool, str]: ...  # 2xx?, answer
    def build_tiny_checkpoint(self, folder: Path, log: Path) -> bool: ...


def _run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True)


def _stream(cmd: list[str], line: Callable[[str], None]) -> int:
    """Runs cmd (stderr into stdout) and hands each line of its output to `line` as it comes."""
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for text in proc.stdout:
            line(text.rstrip("\n"))
    return proc.returncode


@dataclass
class SystemProbes:
    """The machine itself. `show(line, to_stderr)` prints a line of an install's output, already tagged."""

    show: Callable[[str, bool], None]

    def gpu_present(self) -> bool:
        if shutil.which("nvidia-smi") is None:
            return False
        return any(line.startswith("GPU") for line in _run("nvidia-smi", "-L").stdout.splitlines())

    def livekit_binary(self) -> str:
        return _run("bash", INSTALL_LIVEKIT, "--path").stdout.strip()

    def executable(self, path: str) -> bool:
        return os.path.isfile(path) and os.access(path, os.X_OK)

    def go_present(self) -> bool:
        return shutil.which("go") is not None

    def install_livekit(self, log: Path) -> bool:
        with log.open("a") as kept:
            def line(text: str) -> None:
                kept.write(text + "\n")
                self.show(text, False)
            return _stream(["bash", str(INSTALL_LIVEKIT)], line) == 0

    def livekit_version(self) -> str:
        return _run("bash", INSTALL_LIVEKIT, "--version").stdout.strip()

    def vllm_omni(self, omni_venv: Path) -> tuple[str, str] | None:
        vllm = omni_venv / "bin" / "vllm"
        path = str(vllm) if os.access(vllm, os.X_OK) else shutil.which("vllm")
        if path is None:
            return None
        try:
            with open(path, encoding="utf-8", errors="replace") as script:
                first = script.readline()
        except OSError:
            return None
        python = first[2:].strip().split(" ")[0] if first.startswith("#!") else ""
        if not python or not self.executable(python):
            return None
        found = _run(python, "-c", 'import importlib.util, sys; sys.exit(importlib.util.find_spec("vllm_omni") is None)')
        return (path, python) if found.returncode == 0 else None

    def vllm_omni_version(self, python: str) -> str:
        done = _run(python, "-c", 'import importlib.metadata as m; print(m.version("vllm-omni"))')
        return done.stdout.strip() if done.returncode == 0 else "unknown"

    def gpu_split(self, args: list[str]) -> tuple[int, str]:
        done = subprocess.run([sys.executable, "-m", "deploy.omni.gpu_split", *args], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        return done.returncode, done.stdout

    def hub(self, repo_id: str) -> tuple[bool, str]:
        done = _run(sys.executable, PROBE, "hub", repo_id)
        return done.returncode == 0, done.stdout.strip()

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def is_file(self, path: str) -> bool:
        return os.path.isfile(path)

    def nonempty_file(self, path: str) -> bool:
        return os.path.isfile(path) and os.path.getsize(path) > 0

    def install_turn_model(self) -> bool:
        return _stream(["bash", str(INSTALL_TURN_MODEL)], lambda text: self.show(text, False)) == 0

    def turn_model_path(self) -> str:
        return _run("bash", INSTALL_TURN_MODEL, "--path").stdout.strip()

    def port_owner(self, host: str, port: int) -> str | None:
        done = _run(sys.executable, PROBE, "port", host, str(port))
        return None if done.returncode == 0 else done.stdout.strip()

    def http(self, url: str, timeout: float, bearer: str | None = None) -> tuple[bool, str]:
        done = _run(sys.executable, PROBE, "http", url, "--timeout", f"{timeout:g}",
                    *(("--bearer", bearer) if bearer else ()))
        return done.returncode == 0, done.stdout.strip()

    def build_tiny_checkpoint(self, folder: Path, log: Path) -> bool:
        staging = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        with log.open("a") as kept:
            done = subprocess.run([sys.executable, "-m", "tts_engine.tiny_checkpoint", str(staging)], cwd=ROOT,
                                  stdout=kept, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            for text in log.read_text(errors="replace").splitlines()[-20:]:
                self.show(text, True)
            return False
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
        return True


@dataclass
class GivenFacts:
    """The machine as plain data. Paths in `files` are "dir", "file" or "empty" (a file of no bytes);
    `http` maps a URL to probe.py's answer ("200", "HTTP 401", "unreachable (...)"); `gpu_split` maps
    its subcommand ("check-version", "plan") to (exit status, output). `done` records every install and
    build, in order."""

    gpu: bool = False
    go: bool = False
    livekit_at: str = "/tools/bin/livekit-server"
    livekit_builds: bool = True
    livekit_pinned: str = "v0.0.0"
    vllm: tuple[str, str] | None = None
    vllm_version: str = "unknown"
    split: dict[str, tuple[int, str]] = field(default_factory=dict)
    hub_answers: dict[str, str] = field(default_factory=dict)  # repo id -> cached | reachable
    files: dict[str, str] = field(default_factory=dict)
    turn_model_at: str = "/tools/smart-turn/model.onnx"
    turn_model_installs: bool = True
    ports_in_use: dict[str, str] = field(default_factory=dict)  # "host:port" -> its owner
    answers: dict[str, str] = field(default_factory=dict)  # url -> probe.py's answer
    tiny_builds: bool = True
    done: list[str] = field(default_factory=list)

    def gpu_present(self) -> bool:
        return self.gpu

    def livekit_binary(self) -> str:
        return self.livekit_at

    def executable(self, path: str) -> bool:
        return self.files.get(path) == "file"

    def go_present(self) -> bool:
        return self.go

    def _install(self, what: str, path: str, works: bool) -> bool:
        self.done.append(f"install {what}")
        if works:
            self.files[path] = "file"
        return works

    def install_livekit(self, log: Path) -> bool:
        return self._install("livekit", self.livekit_at, self.livekit_builds)

    def livekit_version(self) -> str:
        return self.livekit_pinned

    def vllm_omni(self, omni_venv: Path) -> tuple[str, str] | None:
        return self.vllm

    def vllm_omni_version(self, python: str) -> str:
        return self.vllm_version

    def gpu_split(self, args: list[str]) -> tuple[int, str]:
        self.done.append(" ".join(["gpu_split", *args]))
        return self.split.get(args[0], (0, ""))

    def hub(self, repo_id: str) -> tuple[bool, str]:
        answer = self.hub_answers.get(repo_id, "unavailable: not in the Hugging Face cache and HF_HUB_OFFLINE is set")
        return not answer.startswith("unavailable"), answer

    def is_dir(self, path: str) -> bool:
        return self.files.get(path) == "dir"

    def is_file(self, path: str) -> bool:
        return self.files.get(path) in ("file", "empty")

    def nonempty_file(self, path: str) -> bool:
        return self.files.get(path) == "file"

    def install_turn_model(self) -> bool:
        return self._install("turn model", self.turn_model_at, self.turn_model_installs)

    def turn_model_path(self) -> str:
        return self.turn_model_at

    def port_owner(self, host: str, port: int) -> str | None:
        return self.ports_in_use.get(f"{host}:{port}")

    def http(self, url: str, timeout: float, bearer: str | None = None) -> tuple[bool, str]:
        answer = self.answers.get(url, "unreachable ([Errno 111] Connection refused)")
        return answer.isdigit() and 200 <= int(answer) < 300, answer

    def build_tiny_checkpoint(self, folder: Path, log: Path) -> bool:
        self.done.append(f"build {folder}")
        return self.tiny_builds
