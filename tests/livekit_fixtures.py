"""A real LiveKit server and real agent workers for the LiveKit-mode tests.

The server is the project's own: installed by scripts/install_livekit.sh (when missing) and run by
scripts/livekit_server.sh with a fresh key pair and free ports, loopback only. Workers are
`python -m agent start` subprocesses whose log goes to a file that a failure prints.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jwt

from testing.ports import free_port, free_port_block

ROOT = Path(__file__).resolve().parents[1]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError):
        return 0, ""


def install_livekit() -> None:
    done = subprocess.run(["bash", str(ROOT / "scripts" / "install_livekit.sh")], capture_output=True, text=True,
                          timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/install_livekit.sh failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


class LiveKitServer:
    """scripts/livekit_server.sh on free loopback ports with a key pair of its own."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port_block()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.api_key = f"test-{secrets.token_hex(4)}"
        self.api_secret = secrets.token_hex(24)
        self.log = workdir / "livekit.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> LiveKitServer:
        install_livekit()
        env = {**os.environ, "LIVEKIT_API_KEY": self.api_key, "LIVEKIT_API_SECRET": self.api_secret}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "livekit_server.sh"), str(self.workdir),
                                          "--port", str(self.port)], env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the LiveKit server exited ({self.proc.returncode}):\n{tail(self.log)}")
            if http_get(self.http_url + "/")[0] == 200:
                return self
            time.sleep(0.2)
        raise RuntimeError(f"the LiveKit server did not answer within {timeout_s} s:\n{tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def token(self, room: str, identity: str, ttl_s: int = 600, agent_name: str | None = None,
              not_before: int | None = None) -> str:
        """An access token as the token server mints them (tests mint odd ones: expired, other room)."""
        now = int(time.time()) if not_before is None else not_before
        claims: dict[str, Any] = {"iss": self.api_key, "sub": identity, "nbf": now, "exp": now + ttl_s,
                                  "video": {"roomJoin": True, "room": room, "canPublish": True,
                                            "canSubscribe": True, "canPublishData": True}}
        if agent_name:
            claims["roomConfig"] = {"agents": [{"agentName": agent_name}]}
        return jwt.encode(claims, self.api_secret, algorithm="HS256")

    def env(self) -> dict[str, str]:
        return {"LIVEKIT_URL": self.url, "LIVEKIT_API_KEY": self.api_key, "LIVEKIT_API_SECRET": self.api_secret}


class AgentWorker:
    """One `python -m agent start` process registered with `server`."""

    def __init__(self, server: LiveKitServer, workdir: Path, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.health_port = free_port()
        self.health_url = f"http://127.0.0.1:{self.health_port}/healthz"
        self.metrics_url = f"http://127.0.0.1:{self.health_port}/metrics"
        self.log = workdir / f"worker-{name}.log"
        self.env = {**os.environ, **server.env(), "AGENT_HEALTH_PORT": str(self.health_port),
                    "AGENT_TRACES_DIR": str(workdir / f"traces-{name}"), "OMP_NUM_THREADS": "1",
                    "PYTHONUNBUFFERED": "1", **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentWorker:
        with self.log.open("ab") as out:
            # its own process group: stop() and kill() take down whatever the worker started, too
            self.proc = subprocess.Popen([sys.executable, "-m", "agent", "start"], env=self.env, cwd=ROOT,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def health(self) -> tuple[int, dict[str, Any]]:
        status, body = http_get(self.health_url)
        try:
            return status, json.loads(body) if body else {}
        except ValueError:
            return status, {"raw": body}

    def wait_healthy(self, timeout_s: float = 180.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited ({self.proc.returncode}):\n{tail(self.log)}")
            status, last = self.health()
            if status == 200:
                return last
            time.sleep(0.3)
        raise AssertionError(f"worker {self.name} not healthy within {timeout_s} s (last: {last}):\n{tail(self.log)}")

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """Die the way a crashed machine does: no goodbye to the LiveKit server (nor from its children)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the group is gone already
        self.proc.wait(10)
