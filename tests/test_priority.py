"""Priority classes on the tiny checkpoint: a live call keeps real time while API requests fill the
engine, and admission keeps slots free for live calls.

The tiny model is much faster than real time, and this CPU's speed and load are not a device's, so
the saturation tests run the engine on a modeled device: its clock (the executor's, which times
every packet and every plan) advances by a cost per stage - STEP_S + ROW_S per row for a predict,
PREFILL_S for a prefill - and by the real length of the engine's idle waits, never by how long this
CPU took. With the live reply and every API request in one batch a step costs more than the 80 ms
of audio it makes (the control test shows the underruns that follow); alone, the live reply's step
costs well under it. Everything else is the real engine: plan_step, the executor, the channels that
count a packet late when it is ready after its stream's first packet plus its place on the 20 ms
playout clock. So "zero live underruns" here is a property of the scheduling policy, not a timing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest
from engine_waits import wait_idle, wait_stats

from tts_engine import EngineBusy, EngineConfig, Priority, SchedulerConfig, TTSEngine
from tts_engine.frames import PACKET_S, PACKETS_PER_FRAME, SAMPLES_PER_FRAME
from tts_engine.slots import SlotPool

STEP_S, ROW_S, PREFILL_S = 0.020, 0.012, 0.030  # the modeled device: 7 rows cost 104 ms, one 32 ms
API_STREAMING, API_WHOLE = 3, 3  # requests of each kind that saturate the engine
API_FRAMES = 30
REPLIES, REPLY_FRAMES = 3, 24  # the live session: three replies of 1.92 s each
TEXT = "The service reads this request aloud while a call goes on beside it. " * 2
# room for every API request and the call: the reserve is what a live reply may still take
MAX_STREAMS = API_STREAMING + API_WHOLE + 2


class ModeledDevice:
    """The engine's clock, moved by the modeled cost of what the engine runs (engine thread only)."""

    def __init__(self, engine: TTSEngine, monkeypatch) -> None:
        self.now = 0.0
        self._idle: float | None = None  # what the last step asked to sleep, and when it returned
        self._idle_since = 0.0
        predict, prefill, step = engine.steps.predict, engine.runner.prefill, engine.executor.step

        def timed_predict(slots):
            self.now += STEP_S + ROW_S * len(slots)
            return predict(slots)

        def timed_prefill(*args):
            self.now += PREFILL_S
            return prefill(*args)

        def timed_step():
            if self._idle is not None:  # the engine slept until woken or until the plan's time
                self.now += min(self._idle, time.monotonic() - self._idle_since)
            self._idle = step()
            self._idle_since = time.monotonic()
            return self._idle

        # installed while no stream exists, so no stream mixes the two clocks
        monkeypatch.setattr(engine.executor, "clock", lambda: self.now)
        monkeypatch.setattr(engine.steps, "predict", timed_predict)
        monkeypatch.setattr(engine.runner, "prefill", timed_prefill)
        monkeypatch.setattr(engine.executor, "step", timed_step)


def _late(packets) -> int:
    """Packets ready after their place on a playout clock that starts at the first packet."""
    first = packets[0].ready_at
    return sum(p.ready_at > first + p.seq * PACKET_S for p in packets)


@dataclass
class ApiLoad:
    """N API requests running on threads: streams read as they decode, and whole files."""

    engine: TTSEngine
    streaming: Priority = Priority.STREAMING  # the class the streams read as they decode open with
    whole: Priority = Priority.WHOLE  # and the whole files
    done: list[str] = field(default_factory=list)  # one finish reason per finished request
    errors: list[BaseException] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        started = []
        for i in range(API_STREAMING):
            stream = self.engine.open_stream("ryan", "english", max_frames=API_FRAMES, seed=i,
                                             priority=self.streaming)
            stream.push_text(TEXT)
            stream.end_text()
            first = threading.Event()
            started.append(first)
            self._spawn(self._read, stream, first)
        for i in range(API_WHOLE):
            self._spawn(self._whole, i)
        for first in started:
            assert first.wait(30), "an API stream never started"
        wait_stats(self.engine, lambda s: s["active_streams"] == API_STREAMING + API_WHOLE, what="API requests")

    def join(self) -> None:
        for t in self.threads:
            t.join(120)
        assert not self.errors, self.errors
        assert len(self.done) == API_STREAMING + API_WHOLE, self.done

    def _spawn(self, target, *args) -> None:
        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:  # reported by join()
                self.errors.append(exc)

        self.threads.append(threading.Thread(target=run, daemon=True))
        self.threads[-1].start()

    def _read(self, stream, first: threading.Event) -> None:
        for _ in stream:
            first.set()
        self.done.append(stream.stats.finish_reason or "none")

    def _whole(self, i: int) -> None:
        wav, _rate = self.engine.synthesize(TEXT, "vivian", "english", max_frames=API_FRAMES, seed=10 + i,
                                            priority=self.whole)
        assert len(wav) == API_FRAMES * SAMPLES_PER_FRAME
        self.done.append("whole")


def _live_session(engine: TTSEngine) -> list[int]:
    """A call's replies, one after the other: the late packets of each."""
    late = []
    for i in range(REPLIES):
        stream = engine.open_stream("ryan", "english", max_frames=REPLY_FRAMES, seed=100 + i)
        stream.push_text(f"Reply number {i} of the call, spoken while the engine is full.")
        stream.end_text()
        packets = list(stream)
        assert len(packets) == PACKETS_PER_FRAME * REPLY_FRAMES
        assert _late(packets) == stream.stats.underruns  # the engine counts them the same way
        late.append(stream.stats.underruns)
    return late


@pytest.fixture
def modeled_engine(tiny_checkpoint, monkeypatch):
    with TTSEngine(EngineConfig(model=tiny_checkpoint, max_streams=MAX_STREAMS)) as engine:  # default scheduler
        ModeledDevice(engine, monkeypatch)
        yield engine


@pytest.mark.slow
def test_a_live_session_has_no_underruns_while_api_requests_saturate_the_engine(modeled_engine):
    api = ApiLoad(modeled_engine)
    api.start()
    assert modeled_engine.stats()["live_reserve_slots"] == 2
    with pytest.raises(EngineBusy, match="kept for live calls"):  # the API is full; the call is not
        modeled_engine.open_stream("ryan", "english", priority=Priority.STREAMING)
    before = modeled_engine.stats()["packets"]
    assert _live_session(modeled_engine) == [0] * REPLIES
    live_packets = REPLIES * REPLY_FRAMES * PACKETS_PER_FRAME
    assert modeled_engine.stats()["packets"] - before > 2 * live_packets  # the API went on beside the call
    api.join()  # and every API request still completes
    assert sorted(api.done) == sorted(["frame_cap"] * API_STREAMING + ["whole"] * API_WHOLE)
    stats = wait_idle(modeled_engine)
    assert stats["live_underruns"] == 0


@pytest.mark.slow
def test_without_classes_the_same_load_makes_the_live_session_underrun(modeled_engine):
    """The control: with every request a live one, all share each step and the device is too slow."""
    api = ApiLoad(modeled_engine, streaming=Priority.LIVE, whole=Priority.LIVE)
    api.start()
    assert sum(_live_session(modeled_engine)) > 0
    api.join()


def test_the_live_reserve_refuses_api_and_whole_file_opens_only(tiny_checkpoint):
    with TTSEngine(EngineConfig(model=tiny_checkpoint, max_streams=4, live_reserve_slots=2)) as engine:
        api = [engine.open_stream("ryan", "english", priority=Priority.STREAMING) for _ in range(2)]
        for refused in (lambda: engine.open_stream("ryan", "english", priority=Priority.WHOLE),
                        lambda: engine.synthesize("No room for a file.", "ryan", "english")):
            with pytest.raises(EngineBusy, match=r"2 of 4 TTS stream slots are free and 2 are kept for live"):
                refused()
        calls = [engine.open_stream("vivian", "english") for _ in range(2)]  # live: the default
        with pytest.raises(EngineBusy, match="all 4 TTS stream slots are in use"):
            engine.open_stream("vivian", "english")
        stats = engine.stats()
        assert stats["live_reserve_slots"] == 2 and stats["active_streams"] == 4
        for s in api + calls:
            s.cancel()
        wav, _rate = engine.synthesize("Room again.", "ryan", "english", max_frames=2)
        assert len(wav) == 2 * SAMPLES_PER_FRAME
        wait_idle(engine)


def test_stats_count_streams_per_class(tiny_checkpoint):
    with TTSEngine(EngineConfig(model=tiny_checkpoint, max_streams=4)) as engine:
        streams = [engine.open_stream("ryan", "english", priority=p) for p in (Priority.LIVE, Priority.WHOLE)]
        stats = wait_stats(engine, lambda s: s["running_utterances"] == 2)
        assert (stats["live_streams"], stats["streaming_streams"], stats["whole_streams"]) == (1, 0, 1)
        assert stats["live_underruns"] == stats["streaming_underruns"] == 0
        for s in streams:
            s.cancel()


def test_a_priority_must_be_a_priority(tiny_checkpoint):
    with TTSEngine(EngineConfig(model=tiny_checkpoint, max_streams=1)) as engine:
        with pytest.raises(TypeError, match="LIVE, STREAMING, WHOLE"):
            engine.open_stream("ryan", "english", priority="live")


@pytest.mark.parametrize("max_streams,asked,kept", [(16, 2, 2), (2, 2, 1), (1, 2, 0), (8, 0, 0)])
def test_the_reserve_always_leaves_a_slot_for_anyone(max_streams, asked, kept):
    cfg = EngineConfig(random_weights="0.6b", max_streams=max_streams, live_reserve_slots=asked)
    assert cfg.live_reserve == kept


def test_config_and_pool_validation():
    with pytest.raises(ValueError, match="live_reserve_slots"):
        EngineConfig(random_weights="0.6b", live_reserve_slots=-1)
    with pytest.raises(ValueError, match="guard_s"):
        SchedulerConfig(guard_s=-0.1)
    with pytest.raises(ValueError, match="reserve 0..1"):
        SlotPool(2, reserve=2)
    pool = SlotPool(3, reserve=1)
    assert pool.take(1, use_reserve=False) == 0 and pool.take(2, use_reserve=False) == 1
    with pytest.raises(EngineBusy, match="1 are kept"):
        pool.take(3, use_reserve=False)
    assert pool.take(3) == 2  # the reserve is for those allowed to use it
