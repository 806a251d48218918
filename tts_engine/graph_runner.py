"""StepRunner: runs the three per-frame stages for n streams padded to a batch bucket.

All CUDA-graph code lives here. Inputs go through fixed-address device buffers (filled from pinned
host staging buffers without a host sync); padding rows point at the runner's scratch slot. With
graphs, each (stage, bucket[, kv length]) is captured once at start-up after a warm-up, largest
bucket first, all sharing one memory pool; a step is then "copy into slices + replay". Without
graphs (CPU, or cuda_graphs=False) the identical stage functions run eagerly on the same padded
buffers - that is the path CI tests. A shape no graph covers runs eagerly with a log line.

Counters say which path ran, so a check can tell "graphs replayed" from "silently eager":
`graph_replays` and `eager_fallbacks` count stage runs, and `capture_error` holds why capture failed
(the engine then runs eagerly: a capture problem costs speed, never the service).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

import torch

from .config import SchedulerConfig
from .frames import CODEBOOKS
from .runner import ModelRunner, kv_bucket, kv_buckets_for

log = logging.getLogger(__name__)


class _Staged:
    """A fixed-address device input buffer fed from a pinned host buffer."""

    def __init__(self, size: int, fill: int, device: torch.device, shape: tuple[int, ...] = ()) -> None:
        self.fill = fill
        self.device_buf = torch.full((size, *shape), fill, dtype=torch.long, device=device)
        on_cuda = device.type == "cuda"
        self.host_buf = torch.full((size, *shape), fill, dtype=torch.long, pin_memory=on_cuda)
        self._copied = torch.cuda.Event() if on_cuda else None

    def load(self, values: list[int], bucket: int) -> torch.Tensor:
        if self._copied is not None:
            self._copied.synchronize()  # the previous async copy must finish before the host rewrites
        n = len(values)
        self.host_buf[:n] = torch.tensor(values, dtype=torch.long)
        self.host_buf[n:bucket] = self.fill
        self.device_buf[:bucket].copy_(self.host_buf[:bucket], non_blocking=True)
        if self._copied is not None:
            self._copied.record()
        return self.device_buf[:bucket]


class StepRunner:
    def __init__(self, runner: ModelRunner, sched: SchedulerConfig, use_graphs: bool) -> None:
        self.runner = runner
        self.sched = sched
        self.buckets = [b for b in sched.batch_buckets if b <= sched.bucket(sched.max_batch)]
        self.kv_buckets = kv_buckets_for(runner.cfg.max_context)
        dev = runner.device
        max_b = self.buckets[-1]
        self.slots = _Staged(max_b, runner.scratch, dev)
        self.text_ids = _Staged(max_b, runner.prompts.tts_pad_id, dev)
        self.positions = _Staged(max_b, 0, dev)
        self.codes = torch.zeros(max_b, CODEBOOKS, dtype=torch.long, device=dev)  # predict -> decode hand-over
        self.use_graphs = use_graphs
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._warned: set[tuple] = set()
        self.eager_fallbacks = 0  # stage runs that wanted a graph and found none
        self.graph_replays = 0  # stage runs served by a captured graph
        self.capture_error: str | None = None  # why capture failed; None if it did not fail

    # ---- the three stages ----------------------------------------------------------------------

    def predict(self, slots: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes [n, CODEBOOKS] and audio [n, SAMPLES_PER_FRAME] (device) for n slots."""
        n, bucket = len(slots), self.sched.bucket(len(slots))
        slot_buf = self.slots.load(slots, bucket)
        codes = self._run(("predict", bucket), lambda: self.runner.predict_fn(slot_buf))
        self.codes[:bucket].copy_(codes)
        audio = self._run(("decode", bucket), lambda: self.runner.decode_fn(self.codes[:bucket], slot_buf))
        return codes[:n], audio[:n]

    def talk(self, slots: list[int], text_ids: list[int], positions: list[int]) -> None:
        bucket = self.sched.bucket(len(slots))
        kv_len = kv_bucket(max(positions) + 1, self.runner.cfg.max_context)
        slot_buf = self.slots.load(slots, bucket)
        text_buf = self.text_ids.load(text_ids, bucket)
        pos_buf = self.positions.load(positions, bucket)
        self._run(("talk", bucket, kv_len), lambda: self.runner.talk_fn(slot_buf, text_buf, pos_buf, kv_len))

    def _run(self, key: tuple, eager):
        if not self.use_graphs:
            return eager()
        entry = self._graphs.get(key)
        if entry is None:
            if key not in self._warned:
                self._warned.add(key)
                log.warning("no CUDA graph for %s: running it eagerly", key)
            self.eager_fallbacks += 1
            return eager()
        graph, output = entry
        graph.replay()
        self.graph_replays += 1
        return output

    # ---- start-up: warm up, then capture -------------------------------------------------------

    def capture(self) -> None:
        """Capture every stage for every bucket, largest first, in one shared memory pool."""
        if not self.use_graphs:
            return
        start = time.perf_counter()
        r = self.runner
        pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        scratch = [r.scratch]
        for bucket in reversed(self.buckets):
            slot_buf = self.slots.load(scratch * bucket, bucket)
            text_buf = self.text_ids.load([r.prompts.tts_pad_id] * bucket, bucket)
            codes_buf = self.codes[:bucket]
            stages: list[tuple[tuple, Callable[[], torch.Tensor]]] = [
                (("predict", bucket), functools.partial(r.predict_fn, slot_buf)),
                (("decode", bucket), functools.partial(r.decode_fn, codes_buf, slot_buf))]
            for kv_len in reversed(self.kv_buckets):
                pos_buf = self.positions.load([kv_len - 1] * bucket, bucket)
                stages.append((("talk", bucket, kv_len), functools.partial(r.talk_fn, slot_buf, text_buf, pos_buf, kv_len)))
            for key, fn in stages:
                with torch.cuda.stream(side):
                    for _ in range(2):  # warm-up runs (allocator, kernels' lazy init) outside capture
                        fn()
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    output = fn()
                self._graphs[key] = (graph, output)
        torch.cuda.synchronize()
        r.decoder.reset([r.scratch])
        log.info("captured %d CUDA graphs (buckets %s, kv lengths %s) in %.1f s", len(self._graphs),
                 self.buckets, self.kv_buckets, time.perf_counter() - start)

    def fall_back_to_eager(self, error: str) -> None:
        """Capture failed: record why, drop any graphs captured before the failure, run eagerly."""
        self.capture_error = error
        self.use_graphs = False
        self._graphs.clear()

    @property
    def graph_count(self) -> int:
        return len(self._graphs)
