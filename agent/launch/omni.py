"""vLLM-Omni beside the TTS engine on this GPU (docs/omni-on-one-gpu.md): finding it, checking its
release, the memory split and the command line. The arithmetic is deploy/omni/gpu_split.py's, run as a
process (the planner only passes on the settings that are set, so its defaults stay its own)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from token_server.env import field_default, given

from ..plugins.omni_config import OmniConfig
from .console import Console, LaunchError
from .probes import Probes
from .settings import DEFAULT_TTS_HUB_ID, StartSettings

VLLM_OMNI_START_S = 1800  # its stage start-up includes downloading the checkpoint on a first run


class OmniOnGpu:
    def __init__(self, env: Mapping[str, str], settings: StartSettings, probes: Probes, console: Console,
                 run_dir: Path) -> None:
        self.env, self.settings, self.probes, self.console = env, settings, probes, console
        self.deploy = run_dir / "omni-deploy.yaml"  # this run's overlay with the split
        self.vllm, self.python = "vllm", ""

    @property
    def model(self) -> str:
        return given(self.env, "OMNI_MODEL") or field_default(OmniConfig, "model")

    def find(self) -> bool:
        """$OMNI_VENV/bin/vllm, else `vllm` on PATH, whose interpreter can import vllm_omni."""
        found = self.probes.vllm_omni(self.settings.omni_venv)
        if found is not None:
            self.vllm, self.python = found
        return found is not None

    def check_version(self) -> None:
        """The pin (deploy/omni/requirements.txt), another usable release (a warning), or one older than
        the thinker-only deploy config (an error)."""
        version = self.probes.vllm_omni_version(self.python)
        status, out = self.probes.gpu_split(["check-version", version])
        line = f"{out.rstrip()} ({self.vllm})"
        if status == 0:
            self.console.say(line)
        elif status == 1:
            self.console.warn(line)
        else:
            raise LaunchError(line, f"install the pinned release next to it: {os.path.dirname(self.vllm)}/pip install "
                                    "-r deploy/omni/requirements.txt (docs/omni-on-one-gpu.md)")

    def split(self, *args: str) -> None:
        """gpu_split.py plan with this run's settings; `args` say how the TTS engine's share is known.
        Prints the split; fails with the helper's error and fix when the thinker cannot fit."""
        s = self.settings
        command = ["plan", "--model", self.model]
        if s.omni_max_model_len is not None:
            command += ["--max-model-len", str(s.omni_max_model_len)]
        if s.omni_gpu_margin_gib is not None:
            command += ["--margin-gib", f"{s.omni_gpu_margin_gib:g}"]
        if s.omni_quantization:
            command += ["--quantization", s.omni_quantization]
        status, out = self.probes.gpu_split(command + list(args))
        lines = out.splitlines()
        if status != 0:
            for line in lines:
                if not line.startswith(("error: ", "fix: ")):
                    self.console.detail(line, to_stderr=True)
            error = next((line.removeprefix("error: ") for line in lines if line.startswith("error: ")), "")
            raise LaunchError(error or f"deploy/omni/gpu_split.py plan failed (exit status {status}, output above)",
                              next((line.removeprefix("fix: ") for line in lines if line.startswith("fix: ")), ""))
        for line in lines:
            if not line.startswith("gpu_memory_utilization="):  # for scripts; the line above it says the same
                self.console.say(f"  {line}")

    def split_estimated(self, *args: str) -> None:
        """The TTS engine's share estimated from its settings (before it loads): start's fail-fast check."""
        self.console.say("GPU split for vLLM-Omni (the TTS engine's share estimated; start measures it):")
        tts: list[str] = []
        for option, var in (("--tts-device", "TTS_DEVICE"), ("--tts-model", "TTS_MODEL"),
                            ("--tts-random-weights", "TTS_RANDOM_WEIGHTS"), ("--tts-dtype", "TTS_DTYPE"),
                            ("--tts-max-streams", "TTS_MAX_STREAMS")):
            if (value := given(self.env, var)) is not None:
                tts += [option, value]
        self.split(*tts, *args)

    def split_measured(self, free_before_mib: int) -> None:
        """After the agent loaded: what its engine took is measured (free memory before it loaded -> now)
        and vLLM-Omni gets the rest minus OMNI_GPU_MARGIN_GIB, written into the deploy overlay."""
        self.console.say("GPU split for vLLM-Omni (the TTS engine's share measured):")
        self.split("--tts-measured-from", str(free_before_mib), "--overlay", str(self.deploy))

    @property
    def start_s(self) -> int:
        return VLLM_OMNI_START_S if self.settings.start_timeout_s is None else self.settings.start_timeout_s

    def command(self) -> list[str]:
        """vLLM-Omni's own stage timeouts (300 / 600 s by default) follow start_all's health-check wait."""
        return [self.vllm, "serve", self.model, "--omni", "--deploy-config", str(self.deploy),
                "--host", "127.0.0.1", "--port", str(self.settings.omni_local_port),
                "--stage-init-timeout", str(self.start_s), "--init-timeout", str(self.start_s)]

    def plan_only(self) -> None:
        """omni-plan: on the GPU machine, what start would give vLLM-Omni and the command it would run;
        starts nothing (the TTS engine's share estimated from TTS_*, where start measures it)."""
        if not self.probes.gpu_present():
            raise LaunchError("no GPU here (nvidia-smi lists none): start would use OMNI_BASE_URL or the CPU stand-ins",
                              "run omni-plan on the GPU machine")
        if self.find():
            self.check_version()
        else:
            venv = self.settings.omni_venv
            self.console.warn(f"vLLM-Omni is not installed ({venv}/bin/vllm, or vllm on PATH): python3.12 -m venv "
                              f"{venv} && {venv}/bin/pip install -r deploy/omni/requirements.txt")
        env = dict(self.env)  # the engine start would run: on the GPU, the default voice unless one is set
        if not given(env, "TTS_DEVICE"):
            env["TTS_DEVICE"] = "cuda"
        if not given(env, "TTS_MODEL") and not given(env, "TTS_RANDOM_WEIGHTS"):
            env["TTS_MODEL"] = DEFAULT_TTS_HUB_ID
        self.env = env
        self.split_estimated("--overlay", "-")
        self.console.say(f"start would run (after the agent, with {self.deploy} holding the measured split):")
        self.console.say(f"  {' '.join(self.command())}")
