"""What an agent process does when its TTS engine thread dies: it exits, for its supervisor to restart.

Per-stream faults never get here (the engine fails just that stream); a dead engine thread is a bug
or a broken device, and on a GPU a CUDA fault poisons the whole context, so restarting the engine
inside the same process cannot be trusted. Until the process is gone its health endpoints answer
503 and the LiveKit worker reports itself full, so nothing new is sent to it. The exit status is
EXIT_ENGINE_DEAD, so a supervisor (systemd `Restart=on-failure`, Kubernetes, `start_all.sh start`
after `status` showed the service stopped) can tell it from a clean stop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

EXIT_ENGINE_DEAD = 70  # EX_SOFTWARE: an internal error
WATCH_INTERVAL_S = 1.0


class EngineWatch:
    """Polls `running()` on a daemon thread; calls `on_death()` once when it turns False."""

    def __init__(self, running: Callable[[], bool], on_death: Callable[[], None],
                 interval_s: float = WATCH_INTERVAL_S) -> None:
        self.running = running
        self.on_death = on_death
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="engine-watch", daemon=True)

    def start(self) -> EngineWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self.running():
                log.critical("the TTS engine thread is dead: every session of this process has lost its voice; "
                             "exiting with status %d so the supervisor restarts it", EXIT_ENGINE_DEAD)
                self.on_death()
                return
