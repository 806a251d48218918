"""How one GPU is shared between the agent's TTS engine and vLLM-Omni's Qwen3-Omni thinker.

scripts/start_all.sh starts the agent first (the engine loads its weights, allocates its KV cache and
captures its CUDA graphs), measures the GPU memory that took, and gives vLLM-Omni what is left minus
a margin, as gpu_memory_utilization: a fraction of the memory CUDA reports in total, which vLLM turns
into a byte budget for weights + activations + KV cache. The arithmetic: docs/omni-on-one-gpu.md.

    python -m deploy.omni.gpu_split free-mib                        # free GPU memory now (MiB)
    python -m deploy.omni.gpu_split plan --tts-measured-from MIB --overlay run/omni-deploy.yaml
    python -m deploy.omni.gpu_split plan --tts-model DIR_OR_ID      # the TTS footprint estimated
    python -m deploy.omni.gpu_split check-version 0.30.0

`plan` prints the split, then `gpu_memory_utilization=F`; it exits 2 with an "error:" and a "fix:"
line when the thinker cannot fit. It runs in the project's .venv, which has no vLLM.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .footprint import (
    MIB,
    THINKER_RUNTIME_GIB,
    ThinkerShape,
    find_config,
    tts_engine_bytes,
    tts_size,
    weight_bits,
)

PINNED_VLLM_OMNI = "0.30.0"  # deploy/omni/requirements.txt pins the same
MIN_VLLM_OMNI = "0.28.0"  # the first release that registers the qwen3_omni_moe_thinker_only pipeline
DEPLOY_CONFIG = Path(__file__).resolve().with_name("qwen3_omni_thinker_only.yaml")
DEFAULT_MARGIN_GIB = 2.0  # CUDA graphs vLLM-Omni does not budget, the TTS engine's growth under load
DEFAULT_MAX_MODEL_LEN = 8192
# the engine's slots on a GPU when TTS_MAX_STREAMS is unset: tts_engine.config.MAX_STREAMS_CUDA, written
# again because this planner runs without torch (tests/test_config_table.py keeps the two equal)
DEFAULT_TTS_MAX_STREAMS = 16


@dataclass(frozen=True)
class GpuMemory:
    """total_mib is what CUDA reports (nvidia-smi's used + free; its memory.total also counts what
    the driver reserves): the base of vLLM's gpu_memory_utilization."""

    name: str
    total_mib: int
    free_mib: int


def read_gpu(index: str | None = None) -> GpuMemory:
    index = index or (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0].strip() or "0"
    done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.used,memory.free", "--format=csv,noheader,nounits",
                           "-i", index], capture_output=True, text=True, timeout=30)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"nvidia-smi -i {index} did not report the GPU's memory: "
                           f"{(done.stderr or done.stdout).strip() or f'exit status {done.returncode}'}")
    name, used, free = (part.strip() for part in done.stdout.strip().splitlines()[0].rsplit(",", 2))
    return GpuMemory(name=name, total_mib=int(used) + int(free), free_mib=int(free))


def read_gpu_settled(index: str | None, settle_s: float) -> GpuMemory:
    """The reading once it stops moving (the engine warms voice prefixes after it answers /healthz)."""
    deadline, last, steady = time.monotonic() + settle_s, read_gpu(index), 0
    while steady < 3 and time.monotonic() < deadline:
        time.sleep(1.0)
        now = read_gpu(index)
        steady = steady + 1 if abs(now.free_mib - last.free_mib) <= 64 else 0
        last = now
    return last


@dataclass(frozen=True)
class Split:
    gpu: GpuMemory
    tts_mib: int
    tts_how: str  # "measured: ..." or "estimated: ..."
    free_after_tts_mib: int  # read with the engine loaded, or (estimated) the reading minus tts_mib
    margin_mib: int
    max_model_len: int
    bits: int | None  # None: the checkpoint is not here to read; the fit is judged for 4-bit weights
    shape: ThinkerShape

    @property
    def vllm_mib(self) -> int:
        return max(0, self.free_after_tts_mib - self.margin_mib)

    @property
    def utilization(self) -> float:
        # rounded down: vLLM budgets ceil(total x fraction) bytes, never more than was left
        return math.floor(self.vllm_mib / self.gpu.total_mib * 10_000) / 10_000

    @property
    def weights_mib(self) -> float:
        return self.shape.weight_bytes(self.bits or 4) / MIB

    @property
    def kv_room_mib(self) -> float:
        return self.vllm_mib - self.weights_mib - THINKER_RUNTIME_GIB * 1024

    @property
    def kv_needed_mib(self) -> float:
        """vLLM refuses to start unless the KV cache holds one request of max_model_len tokens."""
        return self.max_model_len * self.shape.kv_bytes_per_token() / MIB

    @property
    def fits(self) -> bool:
        return self.kv_room_mib >= self.kv_needed_mib


def _gib(mib: float) -> str:
    return f"{mib / 1024:.1f} GiB"


def variant(bits: int | None) -> str:
    return {16: "bf16", 8: "8-bit (FP8)", 4: "4-bit (AWQ/GPTQ)"}.get(bits or 0, "unknown (judged as 4-bit)")


def describe(s: Split) -> list[str]:
    kv_tokens = max(0, int(s.kv_room_mib * MIB // s.shape.kv_bytes_per_token()))
    lines = [f"GPU {s.gpu.name}: {_gib(s.gpu.total_mib)}; the TTS engine {_gib(s.tts_mib)} ({s.tts_how}); "
             f"{_gib(s.free_after_tts_mib)} free after it",
             f"vLLM-Omni gets {_gib(s.vllm_mib)} = gpu_memory_utilization {s.utilization:.4f} "
             f"({_gib(s.free_after_tts_mib)} free - {_gib(s.margin_mib)} margin)",
             f"thinker: {variant(s.bits)} weights ~{_gib(s.weights_mib)} + runtime ~{THINKER_RUNTIME_GIB:.1f} GiB"
             f" -> KV cache ~{_gib(max(0.0, s.kv_room_mib))} (~{kv_tokens} tokens; max_model_len "
             f"{s.max_model_len} needs {s.kv_needed_mib / 1024:.2f} GiB)"]
    if s.bits is None:
        lines.append(f"the thinker's config.json could not be read: weights judged as 4-bit; the bf16 "
                     f"checkpoint needs ~{_gib(s.shape.weight_bytes(16) / MIB)} of weights")
    return lines


def problem(s: Split) -> tuple[str, str]:
    need = s.weights_mib + THINKER_RUNTIME_GIB * 1024 + s.kv_needed_mib
    error = (f"not enough GPU memory left for the Qwen3-Omni thinker after the TTS engine took "
             f"{_gib(s.tts_mib)}: vLLM-Omni would get {_gib(s.vllm_mib)} of {s.gpu.name}'s "
             f"{_gib(s.gpu.total_mib)}, and {variant(s.bits)} weights (~{_gib(s.weights_mib)}) + runtime "
             f"(~{THINKER_RUNTIME_GIB:.1f} GiB) + the KV cache of one max_model_len {s.max_model_len} request "
             f"({s.kv_needed_mib / 1024:.2f} GiB) need ~{_gib(need)}")
    smaller = {16: "use the FP8 variant (OMNI_QUANTIZATION=fp8: ~30 GiB of weights) or an AWQ 4-bit checkpoint "
                   "as OMNI_MODEL (~17 GiB), ",
               8: "use an AWQ 4-bit checkpoint as OMNI_MODEL (~17 GiB of weights), "}.get(s.bits or 0, "")
    fix = (f"{smaller}lower OMNI_MAX_MODEL_LEN, give the TTS engine fewer streams (TTS_MAX_STREAMS: 224 MiB of "
           f"KV cache each), or use a larger GPU (docs/omni-on-one-gpu.md)")
    return error, fix


def overlay_text(s: Split, base: Path, quantization: str | None) -> str:
    """The deploy overlay vLLM-Omni reads: base_config is the shipped config, stage 0 gets the split."""
    lines = ["# written by scripts/start_all.sh (deploy/omni/gpu_split.py): this run's share of the GPU",
             *(f"#   {line}" for line in describe(s)), f"base_config: {json.dumps(str(base))}"]
    if quantization:
        lines.append(f"quantization: {quantization}")
    lines += ["stages:", "  - stage_id: 0", f"    gpu_memory_utilization: {s.utilization:.4f}",
              f"    max_model_len: {s.max_model_len}"]
    return "\n".join(lines) + "\n"


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3])


def check_version(version: str) -> tuple[int, str]:
    """(0, ...) the pin; (1, why) another usable release or an unreadable version; (2, why) too old."""
    if version == PINNED_VLLM_OMNI:
        return 0, f"vLLM-Omni {version}, the pinned release"
    if not version_tuple(version):
        return 1, f"the version of vLLM-Omni could not be read ({version!r}); {PINNED_VLLM_OMNI} is the pinned release"
    if version_tuple(version) < version_tuple(MIN_VLLM_OMNI):
        return 2, (f"vLLM-Omni {version} is older than {MIN_VLLM_OMNI}, the first release that registers the "
                   f"qwen3_omni_moe_thinker_only pipeline {DEPLOY_CONFIG.name} names (0.11.0rc1 also fails every "
                   f"streamed chat request)")
    return 1, (f"vLLM-Omni {version} is not the pinned {PINNED_VLLM_OMNI} (deploy/omni/requirements.txt), the "
               f"release {DEPLOY_CONFIG.name} is checked against")


def plan(a: argparse.Namespace) -> int:
    if a.gpu_free_mib is not None:
        gpu = GpuMemory(a.gpu_name, a.gpu_total_mib, a.gpu_free_mib)
    else:
        gpu = read_gpu_settled(a.gpu, a.settle_s) if a.tts_measured_from is not None else read_gpu(a.gpu)
    if a.tts_measured_from is not None:
        tts, free_after = max(0, a.tts_measured_from - gpu.free_mib), gpu.free_mib
        how = f"measured: {_gib(a.tts_measured_from)} -> {_gib(gpu.free_mib)} free"
    else:
        if not a.tts_device.startswith("cuda"):
            tts, how = 0, f"estimated: TTS_DEVICE={a.tts_device}"
        else:
            size = tts_size(a.tts_model, a.tts_random_weights)
            dtype_bytes = 4 if a.tts_dtype == "float32" else 2
            tts = tts_engine_bytes(size or "0.6b", a.tts_max_streams, dtype_bytes=dtype_bytes) // MIB
            how = f"estimated: {size or '0.6b (assumed)'}, {a.tts_max_streams} streams"
        free_after = gpu.free_mib - tts
    cfg = find_config(a.model)
    split = Split(gpu=gpu, tts_mib=tts, tts_how=how, free_after_tts_mib=free_after,
                  margin_mib=int(a.margin_gib * 1024), max_model_len=a.max_model_len,
                  bits=weight_bits(cfg, a.quantization), shape=ThinkerShape.from_config(cfg))
    print("\n".join(describe(split)))
    if not split.fits:
        error, fix = problem(split)
        print(f"error: {error}\nfix: {fix}")
        return 2
    if a.overlay == "-":
        sys.stdout.write(overlay_text(split, DEPLOY_CONFIG, a.quantization))
    elif a.overlay:
        Path(a.overlay).write_text(overlay_text(split, DEPLOY_CONFIG, a.quantization))
    print(f"gpu_memory_utilization={split.utilization:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.omni.gpu_split", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    free = sub.add_parser("free-mib", help="free memory of the GPU now, MiB")
    free.add_argument("--gpu", help="nvidia-smi index (default: the first of CUDA_VISIBLE_DEVICES, else 0)")
    ver = sub.add_parser("check-version", help="exit 0: the pin; 1: another usable release; 2: too old")
    ver.add_argument("version")
    p = sub.add_parser("plan", help="the split, and the deploy overlay for vLLM-Omni")
    p.add_argument("--gpu")
    p.add_argument("--gpu-total-mib", type=int, help="instead of nvidia-smi (with --gpu-free-mib)")
    p.add_argument("--gpu-free-mib", type=int)
    p.add_argument("--gpu-name", default="GPU")
    p.add_argument("--tts-measured-from", type=int, metavar="MIB", help="free MiB before the TTS engine loaded")
    p.add_argument("--settle-s", type=float, default=30.0)
    p.add_argument("--tts-model")
    p.add_argument("--tts-random-weights")
    p.add_argument("--tts-device", default="cuda")
    p.add_argument("--tts-dtype", default="bfloat16")
    p.add_argument("--tts-max-streams", type=int, default=DEFAULT_TTS_MAX_STREAMS)
    p.add_argument("--model", default="Qwen/Qwen3-Omni-30B-A3B-Instruct")
    p.add_argument("--quantization", default=None, help="online quantization of the thinker, e.g. fp8")
    p.add_argument("--max-model-len", type=int, default=DEFAULT_MAX_MODEL_LEN)
    p.add_argument("--margin-gib", type=float, default=DEFAULT_MARGIN_GIB)
    p.add_argument("--overlay", help="write the deploy overlay here ('-': print it)")
    a = ap.parse_args(argv)
    if a.cmd == "free-mib":
        print(read_gpu(a.gpu).free_mib)
        return 0
    if a.cmd == "check-version":
        rc, line = check_version(a.version)
        print(line)
        return rc
    if (a.gpu_free_mib is None) != (a.gpu_total_mib is None):
        ap.error("--gpu-total-mib and --gpu-free-mib go together")
    if a.max_model_len < 1 or a.margin_gib < 0 or a.tts_max_streams < 1:
        ap.error("--max-model-len and --tts-max-streams must be >= 1, --margin-gib >= 0")
    return plan(a)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}\nfix: check that nvidia-smi works and sees the GPU (CUDA_VISIBLE_DEVICES)")
        sys.exit(2)
