"""SlotPool: the one owner of the engine's stream slots (rows of every per-stream device buffer).

A slot is held by one stream id from open_stream() until it is released. Release is by owner and
idempotent: the caller's cancel() and the engine's end of the stream both release, and neither can
free a slot twice or free the slot a newer stream now holds.
"""

from __future__ import annotations

import threading

from .errors import EngineBusy


class SlotPool:
    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._free = list(range(size - 1, -1, -1))  # pop() hands out slot 0 first
        self._held: dict[int, int] = {}  # owner (stream id) -> slot

    def take(self, owner: int) -> int:
        with self._lock:
            if not self._free:
                raise EngineBusy(f"all {self.size} TTS stream slots are in use "
                                 f"(EngineConfig.max_streams); retry when a stream ends")
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
