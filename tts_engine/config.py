"""Engine configuration: one dataclass per concern, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .cpu_precision import cpu_has_int8_dot
from .frames import DECODER_RATE, SUPPORTED_OUTPUT_RATES

RANDOM_WEIGHT_SIZES = ("0.6b", "1.7b")
QUANTIZE_MODES = ("auto", "none", "int8")
# Stream slots when EngineConfig.max_streams is 0 (per device): a GPU serves many calls at once; a
# CPU box serves a few calls (AGENT_MAX_SESSIONS, 4) plus the speech API, and every slot's KV is RAM.
MAX_STREAMS_CUDA = 16
MAX_STREAMS_CPU = 8


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling rules, same meaning and defaults as the qwen-tts package's generate()."""

    do_sample: bool = True
    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.05
    subtalker_do_sample: bool = True
    subtalker_temperature: float = 0.9
    subtalker_top_k: int = 50
    subtalker_top_p: float = 1.0
    min_new_tokens: int = 2  # EOS is not allowed before this many codec tokens

    def __post_init__(self) -> None:
        for name in ("temperature", "subtalker_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 (use do_sample=False for greedy decoding)")
        for name in ("top_p", "subtalker_top_p"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1]")
        for name in ("top_k", "subtalker_top_k"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 disables top-k)")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0 (1.0 disables it)")


@dataclass(frozen=True)
class FrameCapConfig:
    """Upper bound on frames per utterance, so a model that never emits EOS cannot run for minutes.

    cap = base_frames + frames_per_text_token * text_tokens, at most max_frames_hard. Speech runs at
    roughly 3-4 text tokens per second (FRAME_RATE_HZ = 12.5 frames per second), so 8 frames per
    token is about twice the normal duration.
    """

    base_frames: int = 25
    frames_per_text_token: float = 8.0
    max_frames_hard: int = 3000  # 4 minutes of audio

    def cap(self, text_tokens: int) -> int:
        return int(min(self.max_frames_hard, self.base_frames + self.frames_per_text_token * text_tokens))


@dataclass(frozen=True)
class SchedulerConfig:
    """How the engine shares the device between streams each step.

    max_lead_s: a stream whose delivered audio is this far ahead of real-time playback (counted
    from its first packet) is not stepped, so the device goes to streams that need it and little is
    thrown away on barge-in; None disables the limit. max_batch: most streams advanced in one step
    (at most the largest batch bucket); beyond it live calls, then API streams, then whole files go
    first, each class the streams with the least playout slack first. guard_s: a less urgent class
    joins a step only when every runnable stream of the classes before it has this much audio
    buffered (plan.py: the guard rule) - so it must exceed the longest step a full batch takes, or
    a live call can underrun during one; at or above max_lead_s, lower classes run only while the
    urgent streams are held back by the lead limit.
    """

    max_lead_s: float | None = 1.5
    max_batch: int = 32
    batch_buckets: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    guard_s: float = 0.3

    def __post_init__(self) -> None:
        if self.max_lead_s is not None and self.max_lead_s <= 0:
            raise ValueError("max_lead_s must be > 0 (or None to disable)")
        if self.guard_s < 0:
            raise ValueError("guard_s must be >= 0 (0: lower classes wait only for a stream's first packet)")
        if not self.batch_buckets or list(self.batch_buckets) != sorted(set(self.batch_buckets)):
            raise ValueError("batch_buckets must be increasing and unique")
        if self.max_batch < 1 or self.max_batch > self.batch_buckets[-1]:
            raise ValueError(f"max_batch must be in 1..{self.batch_buckets[-1]} (the largest batch bucket)")

    def bucket(self, n: int) -> int:
        """Smallest batch bucket holding n rows."""
        for size in self.batch_buckets:
            if size >= n:
                return size
        raise ValueError(f"{n} rows exceed the largest batch bucket {self.batch_buckets[-1]}")


@dataclass(frozen=True)
class EngineConfig:
    """What to load and how to run it.

    model: a local checkpoint folder or a hub id (Qwen3-TTS-12Hz CustomVoice). random_weights: instead
    of a checkpoint, the full-size architecture ('0.6b' or '1.7b') with random weights (benchmarks).
    live_reserve_slots: of the max_streams slots, this many are kept for live calls - an API or
    whole-file open is refused (EngineBusy) when no more than these are free - so a call's next reply
    always finds a slot; at most max_streams - 1 are kept (`live_reserve`).
    dtype None: float32 on the CPU (bf16 is allowed there but measured no faster at batch 1),
    bfloat16 on CUDA. quantize: 'int8' swaps the talker's and code predictor's large linears for
    dynamic int8 ones (CPU, float32 only; cpu_precision.py); 'auto' does so on a CPU with int8 dot
    products (VNNI/AMX) when the dtype is float32 - the CPU fast path; 'none' keeps the checkpoint's
    arithmetic, which is what is exactly equivalent to the qwen-tts package. codec_dtype None: the
    engine dtype on CUDA; on the CPU bfloat16 for a full-size decoder where AVX512-BF16/AMX exist
    (its convs have real matrix shapes: 1.4x faster measured), else the engine dtype.
    max_streams: concurrent stream slots; each holds its talker KV cache (max_context positions) from
    the start. 0: MAX_STREAMS_CUDA on a GPU, MAX_STREAMS_CPU on the CPU, where one full-size stream
    already runs slower than real time and each slot of the 0.6B is ~470 MB of float32 KV (16 slots
    took the agent to 11 GB RSS, measured).
    cpu_threads: torch's intra-op threads for this process, set when the engine starts on the CPU
    (the engine is the process's torch user); None: one core fewer than torch would use, at least 1
    (`cpu_precision.engine_cpu_threads`) - the rest of the process (event loop, VAD, WebRTC) and,
    on a small box, the STT/LLM stand-ins need a core, and OpenMP threads that find their core busy
    collapse (measured, docs/benchmarks.md). Ignored on CUDA devices.
    """

    model: str | None = None
    random_weights: str | None = None
    device: str = "cpu"
    dtype: str | None = None  # default: float32 on CPU, bfloat16 on CUDA
    quantize: str = "auto"  # auto | none | int8 (see the docstring)
    codec_dtype: str | None = None  # None: see the docstring
    do_sample: bool = True
    seed: int = 0
    sampling: SamplingConfig | None = None  # overrides do_sample when given
    frame_cap: FrameCapConfig = field(default_factory=FrameCapConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    prefix_cache: bool = True  # reuse the talker KV of the voice's fixed prompt part
    max_streams: int = 0  # 0: per device, MAX_STREAMS_CUDA or MAX_STREAMS_CPU (see the docstring)
    live_reserve_slots: int = 2
    max_context: int = 2048  # talker KV positions per stream (prompt + frames)
    max_text_chars: int = 4000
    output_sample_rate: int = DECODER_RATE  # the decoder's own rate: no resampling
    cuda_graphs: bool | None = None  # None: on for CUDA devices, off on the CPU
    local_files_only: bool = False
    cpu_threads: int | None = None  # None: see the docstring

    def __post_init__(self) -> None:
        if (self.model is None) == (self.random_weights is None):
            raise ValueError("set exactly one of EngineConfig.model (checkpoint) or EngineConfig.random_weights")
        if self.random_weights is not None and self.random_weights not in RANDOM_WEIGHT_SIZES:
            raise ValueError(f"random_weights must be one of {RANDOM_WEIGHT_SIZES}, got {self.random_weights!r}")
        if self.output_sample_rate not in SUPPORTED_OUTPUT_RATES:
            raise ValueError(f"output_sample_rate must be one of {SUPPORTED_OUTPUT_RATES}")
        if self.max_streams < 0:
            raise ValueError("max_streams must be >= 1 (or 0: per device)")
        if self.max_streams == 0:  # frozen: the per-device default is resolved once, here
            object.__setattr__(self, "max_streams",
                               MAX_STREAMS_CUDA if self.device.startswith("cuda") else MAX_STREAMS_CPU)
        if self.live_reserve_slots < 0:
            raise ValueError("live_reserve_slots must be >= 0")
        if self.max_context < 64:
            raise ValueError("max_context must be >= 64")
        if self.dtype is not None and self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError("dtype must be float32, bfloat16 or float16")
        if self.dtype == "float16" and not self.device.startswith("cuda"):
            raise ValueError("float16 is for CUDA devices; on the CPU use float32 or bfloat16")
        if self.codec_dtype not in (None, "float32", "bfloat16", "float16"):
            raise ValueError("codec_dtype must be float32, bfloat16 or float16 (or None: automatic)")
        if self.codec_dtype == "float16" and not self.device.startswith("cuda"):
            raise ValueError("codec_dtype float16 is for CUDA devices")
        if self.quantize not in QUANTIZE_MODES:
            raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {self.quantize!r}")
        if self.quantize == "int8" and (self.device.startswith("cuda") or self.torch_dtype != torch.float32):
            raise ValueError("quantize='int8' is for the CPU in float32 (dynamic int8 linears take float32 input)")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError("cpu_threads must be >= 1 (or None: one core fewer than torch would use)")
        if self.cuda_graphs is True and not self.device.startswith("cuda"):
            raise ValueError("cuda_graphs=True needs a CUDA device")

    @property
    def torch_dtype(self) -> torch.dtype:
        name = self.dtype or ("bfloat16" if self.device.startswith("cuda") else "float32")
        return getattr(torch, name)

    @property
    def use_int8(self) -> bool:
        """Whether the talker's and predictor's large linears run in int8 (the resolved `quantize`)."""
        if self.quantize == "auto":
            return (not self.device.startswith("cuda") and self.torch_dtype == torch.float32
                    and cpu_has_int8_dot())
        return self.quantize == "int8"

    @property
    def live_reserve(self) -> int:
        """Slots kept for live calls: live_reserve_slots, leaving at least one slot for anyone."""
        return min(self.live_reserve_slots, self.max_streams - 1)

    @property
    def use_cuda_graphs(self) -> bool:
        return self.device.startswith("cuda") if self.cuda_graphs is None else self.cuda_graphs

    @property
    def sampling_rules(self) -> SamplingConfig:
        if self.sampling is not None:
            return self.sampling
        return SamplingConfig(do_sample=self.do_sample, subtalker_do_sample=self.do_sample)
