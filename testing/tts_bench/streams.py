"""End-to-end stream measurements through the public API: first-packet latency, RTF, underruns.

Packets carry the engine's delivery time (`ready_at`), and the engine queues packets without
back-pressure, so the streams of a run can be read one after another after all were opened: the
order of reading changes no timestamp.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .common import TEXTS, log, ms_summary

PACKET_S = 0.020


@dataclass
class StreamRecord:
    ttfp_s: float  # open_stream + push_text + end_text -> first packet ready
    wall_s: float  # open -> last packet ready
    audio_s: float
    packets: int
    underruns: int  # packets ready after first_packet.ready_at + seq * 20 ms
    frames: int


def _record(opened_at: float, stream) -> StreamRecord:
    packets = list(stream)
    if not packets:
        raise RuntimeError(f"stream {stream.id} produced no audio (finish reason {stream.stats.finish_reason})")
    first = packets[0].ready_at
    late = sum(p.ready_at > first + p.seq * PACKET_S for p in packets)
    samples = sum(len(p.pcm) for p in packets)
    return StreamRecord(ttfp_s=first - opened_at, wall_s=packets[-1].ready_at - opened_at,
                        audio_s=samples / packets[0].sample_rate, packets=len(packets), underruns=late,
                        frames=stream.stats.frames)


def run_concurrent(engine, count: int, frames: int, speaker: str, language: str,
                   seed: int) -> tuple[list[StreamRecord], float]:
    """Open `count` streams at once with different texts; return their records and the run's wall time."""
    opened = []
    for i in range(count):
        start = time.monotonic()
        stream = engine.open_stream(speaker=speaker, language=language, max_frames=frames, seed=seed + i)
        stream.push_text(TEXTS[i % len(TEXTS)])
        stream.end_text()
        opened.append((start, stream))
    records = [_record(start, stream) for start, stream in opened]
    run_wall = max(start + r.wall_s for (start, _), r in zip(opened, records, strict=True)) - opened[0][0]
    return records, run_wall


def measure_streams(engine, counts: list[int], runs: int, frames: int, speaker: str,
                    language: str) -> list[dict]:
    results = []
    for count in counts:
        records: list[StreamRecord] = []
        throughput_rtf = []
        for run in range(runs):
            recs, wall = run_concurrent(engine, count, frames, speaker, language, seed=1000 * run)
            records += recs
            throughput_rtf.append(wall / sum(r.audio_s for r in recs))
            log(f"  streams={count} run {run + 1}/{runs}: first packet "
                f"{', '.join(f'{r.ttfp_s * 1000:.0f}' for r in recs)} ms, wall {wall:.2f} s")
        short = [r.frames for r in records if r.frames != frames]
        if short:
            log(f"  warning: {len(short)} stream(s) ended before {frames} frames: {short}")
        packets = sum(r.packets for r in records)
        underruns = sum(r.underruns for r in records)
        stream_rtf = [r.wall_s / r.audio_s for r in records]
        results.append({
            "streams": count, "runs": runs, "frames_per_stream": float(np.mean([r.frames for r in records])),
            "ttfp_ms": ms_summary([r.ttfp_s for r in records]),
            # open -> last packet ready: text in to all audio out, prefill and codec included
            "wall_ms": ms_summary([r.wall_s for r in records]),
            # per stream: its wall time over its own audio time; throughput: the run's wall time over
            # all the audio it produced (what concurrency buys)
            "rtf_stream": {"mean": float(np.mean(stream_rtf)), "max": float(np.max(stream_rtf))},
            "rtf_throughput": float(np.mean(throughput_rtf)),
            "packets": packets, "underruns": underruns, "underrun_rate": underruns / packets,
        })
    return results
