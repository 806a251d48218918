"""The duplex controller's early pause, event by event: the first hot VAD window silences the agent;
the VAD's start of speech turns it into a barge-in; a burst that does not become speech lets the
reply play on; a reply that ends while paused never leaves the output paused."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from livekit.agents import vad as lk_vad

from agent.session.barge_in import BargeInOutcome
from agent.session.duplex import EARLY_PAUSE_COLD_WINDOWS, DuplexConfig, DuplexController, DuplexState


class _Output:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.audible_until = 0.0

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")

    def clear_buffer(self) -> None:
        self.calls.append("clear")


def _controller(threshold: float | None = 0.5, dbfs: float | None = -40.0) -> tuple[DuplexController, _Output]:
    output = _Output()
    session = SimpleNamespace(output=SimpleNamespace(audio=output), current_speech=None, on=lambda *a: None)
    controller = DuplexController(session, SimpleNamespace(active_streams=set()),  # type: ignore[arg-type]
                                  DuplexConfig(early_pause_threshold=threshold, early_pause_dbfs=dbfs))
    controller.state = DuplexState.SPEAKING
    return controller, output


def _window(p: float, speaking: bool = False) -> lk_vad.VADEvent:
    return lk_vad.VADEvent(type=lk_vad.VADEventType.INFERENCE_DONE, samples_index=0, timestamp=0.0,
                           speech_duration=0.0, silence_duration=0.0, probability=p, speaking=speaking)


def _user_state(new_state: str) -> SimpleNamespace:
    return SimpleNamespace(new_state=new_state, created_at=time.time())


def test_a_hot_window_pauses_and_the_vads_start_makes_it_a_barge_in():
    controller, output = _controller()
    controller.on_vad_event(_window(0.2))
    assert output.calls == []  # below the threshold: nothing
    controller.on_vad_event(_window(0.6))
    assert output.calls == ["pause"] and controller.early is not None
    paused_at = controller.early.paused_at
    controller.on_vad_event(_window(0.7))  # still hot: no second pause, no release
    controller._on_user_state(_user_state("speaking"))  # the VAD's START_OF_SPEECH
    assert controller.early is None and len(controller.history) == 1
    barge = controller.history[0]
    assert barge.outcome is BargeInOutcome.CUT and barge.paused_at == paused_at <= barge.detected_at
    assert barge.paused_by == "vad"
    assert barge.silent_at <= barge.detected_at  # silence began at the early pause, not at detection
    assert controller.early_pauses == 1 and controller.early_pauses_released == 0


def test_a_burst_that_is_not_speech_lets_the_reply_play_on():
    controller, output = _controller()
    controller.on_vad_event(_window(0.9))
    for _ in range(EARLY_PAUSE_COLD_WINDOWS - 1):
        controller.on_vad_event(_window(0.1))
    assert output.calls == ["pause"]  # one quiet window is not yet the end of it
    controller.on_vad_event(_window(0.1))
    assert output.calls == ["pause", "resume"] and controller.early is None
    assert controller.history == [] and controller.early_pauses_released == 1


def test_the_reply_ending_while_paused_releases_the_output():
    controller, output = _controller()
    controller.on_vad_event(_window(0.9))
    controller._on_agent_state(SimpleNamespace(new_state="listening"))
    assert output.calls == ["pause", "resume"] and controller.state is DuplexState.LISTENING


def test_no_early_pause_while_listening_or_when_disabled():
    controller, output = _controller()
    controller.state = DuplexState.LISTENING  # the user's own turn: nothing to silence
    controller.on_vad_event(_window(0.9))
    off, off_output = _controller(threshold=None)
    off.on_vad_event(_window(0.9))
    assert output.calls == [] and off_output.calls == []


async def test_a_backchannel_is_measured_without_the_silence_after_it():
    """With 0.5 s of speech needed, Silero's speech_duration counting the silence it waits out after a
    short "mm-hm" does not confirm a barge-in; 0.5 s of real speech does."""
    controller, output = _controller()
    controller.config = DuplexConfig(barge_in_min_speech_s=0.5)
    controller._on_user_state(_user_state("speaking"))  # START_OF_SPEECH: pending, output paused
    assert controller.pending is not None and "clear" not in output.calls

    def hangover(speech: float, silence: float) -> lk_vad.VADEvent:
        ev = _window(0.1, speaking=True)
        ev.speech_duration, ev.raw_accumulated_silence = speech, silence
        return ev

    controller.on_vad_event(hangover(0.6, 0.25))  # 0.35 s of "mm-hm" + 0.25 s of the silence after it
    assert controller.pending is not None and controller.history == []
    controller.on_vad_event(hangover(0.55, 0.0))  # a user who keeps talking
    assert controller.history[0].outcome is BargeInOutcome.CUT and "clear" in output.calls


LOUD, QUIET = 0.05, 0.001  # -26 and -60 dBFS against the -40 dBFS default
BLOCK_S = 0.005


def _frame(level: float) -> tuple[list[float], float]:
    """A 20 ms microphone frame at one level, as the echo gate reports it: four 5 ms blocks."""
    return [level] * 4, BLOCK_S


def test_a_loud_frame_over_the_playback_pauses_before_the_vad_and_its_start_makes_the_barge_in():
    controller, output = _controller()
    before = time.monotonic()
    controller.on_microphone_frame(*_frame(LOUD))
    early = controller.early
    assert output.calls == ["pause"] and early is not None and early.cause == "level"
    assert before - 0.02 <= early.speech_by <= early.paused_at  # the onset lies in that frame
    controller.on_microphone_frame(*_frame(LOUD))  # still loud: no second pause
    controller.on_vad_event(_window(0.1))  # Silero trails the onset: a cold window while the level is up
    controller.on_vad_event(_window(0.1))
    assert controller.early is early and output.calls == ["pause"]
    controller._on_user_state(_user_state("speaking"))  # the VAD's START_OF_SPEECH
    barge = controller.history[0]
    assert barge.paused_at == early.paused_at and barge.onset_at is not None and barge.onset_at <= early.speech_by
    assert barge.paused_by == "level"
    assert controller.early_pauses == controller.early_pauses_by_level == 1


def test_an_onset_in_the_last_block_of_a_frame_pauses_and_is_placed_in_that_block():
    controller, output = _controller()
    controller.on_microphone_frame([QUIET, QUIET, QUIET, LOUD], BLOCK_S)
    early = controller.early
    assert output.calls == ["pause"] and early is not None
    assert early.speech_by == pytest.approx(early.paused_at - BLOCK_S / 2)  # not the frame's middle


def test_a_click_lets_the_reply_play_on_and_a_steady_level_pauses_only_once():
    controller, output = _controller()
    controller.on_microphone_frame(*_frame(LOUD))
    controller.on_microphone_frame(*_frame(QUIET))
    time.sleep(0.05)  # more than a VAD window since the last loud frame
    for _ in range(EARLY_PAUSE_COLD_WINDOWS):
        controller.on_vad_event(_window(0.1))
    assert output.calls == ["pause", "resume"] and controller.early_pauses_released == 1
    # a steady noise over the threshold: one pause on its rise, none while it stays
    controller.on_microphone_frame(*_frame(LOUD))
    controller._release_early("test: let go")
    controller.on_microphone_frame(*_frame(LOUD))
    assert output.calls == ["pause", "resume", "pause", "resume"]


def test_a_rise_is_known_by_the_gap_before_it_not_by_a_quiet_frame_reported_in_between():
    # the echo gate reports only the frames it lets through while the agent plays: the previous barge-in's
    # last loud frame must not hide the next one's first (the frames between were gated or came with no playback)
    controller, output = _controller()
    controller.on_microphone_frame(*_frame(LOUD))
    controller._release_early("test: that barge-in is over")
    time.sleep(0.05)  # more than one 20 ms frame and a half with no loud frame reported
    controller.on_microphone_frame(*_frame(LOUD))
    assert output.calls == ["pause", "resume", "pause"] and controller.early_pauses_by_level == 2


def test_no_level_pause_below_the_threshold_while_listening_or_when_off():
    controller, output = _controller()
    controller.on_microphone_frame(*_frame(QUIET))
    controller.state = DuplexState.LISTENING
    controller.on_microphone_frame(*_frame(LOUD))
    off, off_output = _controller(dbfs=None)
    off.on_microphone_frame(*_frame(LOUD))
    assert output.calls == [] and off_output.calls == []


def test_the_vads_release_still_works_when_only_the_level_pauses_early():
    controller, output = _controller(threshold=None)
    controller.on_vad_event(_window(0.9))  # no VAD-triggered pause
    assert output.calls == []
    controller.on_microphone_frame(*_frame(LOUD))
    time.sleep(0.05)
    for _ in range(EARLY_PAUSE_COLD_WINDOWS):
        controller.on_vad_event(_window(0.1))
    assert output.calls == ["pause", "resume"]
