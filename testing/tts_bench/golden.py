"""Golden output of the tiny test checkpoint: what the engine produced when the golden was written.

The golden is valid only for the tiny checkpoint built by
`tts_engine.tiny_checkpoint.build_tiny_checkpoint(dir, seed=0)`: its weights' fingerprint is stored
with it, and a model with any other fingerprint skips the comparison.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

GOLDEN_PATH = Path(__file__).resolve().parents[2] / "tests" / "golden" / "tiny_golden.npz"
GOLDEN_FRAMES = 16
NOTE = ("Golden output of the tts_engine streaming engine for the TINY random-weight test checkpoint built by "
        "tts_engine.tiny_checkpoint.build_tiny_checkpoint(dir, seed=0), greedy decoding, CPU float32, "
        f"max_frames={GOLDEN_FRAMES}. Valid ONLY for that checkpoint (see 'meta' -> fingerprint): "
        "scripts/tts_regression.py skips the golden check for any other model. After an intended change "
        "of the engine's numerics, rewrite it with: python scripts/tts_regression.py --write-golden")


@dataclass(frozen=True)
class GoldenCase:
    mode: str  # "stream": open_stream with the whole text pushed at once; "offline": synthesize()
    text: str
    speaker: str
    language: str


# Both prompt layouts (dual-track stream, whole text in the prompt), both voices, both scripts.
CASES = (
    GoldenCase("stream", "Hello world, this is a test.", "ryan", "english"),
    GoldenCase("stream", "你好，欢迎使用语音合成服务。", "vivian", "chinese"),
    GoldenCase("offline", "How can I help you today?", "ryan", "english"),
)


def weight_fingerprint(loaded) -> str:
    """sha256 over every parameter and buffer of the model and its speech decoder, in name order."""
    digest = hashlib.sha256()
    for module in (loaded.model, loaded.speech_decoder):
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def render(engine, case: GoldenCase, frames: int) -> tuple[np.ndarray | None, np.ndarray]:
    """(codes [frames, 16] or None for offline, audio: int16 packets for streams, float32 offline)."""
    if case.mode == "offline":
        wav, _rate = engine.synthesize(case.text, speaker=case.speaker, language=case.language, max_frames=frames)
        return None, wav
    stream = engine.open_stream(speaker=case.speaker, language=case.language, max_frames=frames)
    stream.push_text(case.text)
    stream.end_text()
    pcm = np.concatenate([p.pcm for p in stream])
    return stream.codes, pcm


def as_float(audio: np.ndarray) -> np.ndarray:
    return audio.astype(np.float64) / 32768.0 if audio.dtype == np.int16 else audio.astype(np.float64)


def write(path: Path, fingerprint: str, outputs: list[tuple[np.ndarray | None, np.ndarray]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i, (codes, audio) in enumerate(outputs):
        arrays[f"codes_{i}"] = codes if codes is not None else np.zeros((0, 16), dtype=np.int64)
        arrays[f"audio_{i}"] = audio
    meta = {"fingerprint": fingerprint, "frames": GOLDEN_FRAMES, "cases": [asdict(c) for c in CASES],
            "torch": torch.__version__}
    np.savez_compressed(path, note=np.array(NOTE), meta=np.array(json.dumps(meta, ensure_ascii=False)),
                        **arrays)  # type: ignore[arg-type]  # numpy's stub: a key could be allow_pickle


def load(path: Path) -> tuple[dict, list[tuple[np.ndarray, np.ndarray]]]:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        outputs = [(data[f"codes_{i}"], data[f"audio_{i}"]) for i in range(len(meta["cases"]))]
    return meta, outputs
