"""SlotPool: the one owner of the engine's stream slots (rows of every per-stream device buffer).

A slot is held by one stream id from open_stream() until it is released. Release is by owner and
idempotent: the caller's cancel() and the engine's end of the stream both release, and neither can
free a slot twice or free the slot a newer stream now holds. The last `reserve` free slots go only to
takers allowed to use them (the engine's live calls), so API traffic can never fill the engine
against a call's next reply.
"""

from __future__ import annotations

import threading

from .errors import EngineBusy


class SlotPool:
    def __init__(self, size: int, reserve: int = 0) -> None:
        if not 0 <= reserve < size:
            raise ValueError(f"a pool of {size} slots can reserve 0..{size - 1}, not {reserve}")
        self.size = size
        self.reserve = reserve
        self._lock = threading.Lock()
        self._free = list(range(size - 1, -1, -1))  # pop() hands out slot 0 first
        self._held: dict[int, int] = {}  # owner (stream id) -> slot

    def take(self, owner: int, use_reserve: bool = True) -> int:
        with self._lock:
            if not self._free:
                raise EngineBusy(f"all {self.size} TTS stream slots are in use "
                                 f"(EngineConfig.max_streams); retry when a stream ends")
            if not use_reserve and len(self._free) <= self.reserve:
                raise EngineBusy(f"{len(self._free)} of {self.size} TTS stream slots are free and "
                                 f"{self.reserve} are kept for live calls (EngineConfig.live_reserve_slots); "
                                 f"retry when a stream ends")
            slot = self._free.pop()
            self._held[owner] = slot
            return slot

    def release(self, owner: int) -> None:
        with self._lock:
            slot = self._held.pop(owner, None)
            if slot is not None:
                self._free.append(slot)

    @property
    def in_use(self) -> int:
        with self._lock:
            return len(self._held)

    def load(self) -> float:
        """0..1: the share of slots in use."""
        return self.in_use / self.size
