"""One conversation: a livekit AgentSession wired to the shared TTS engine, the duplex controller,
the echo gate and the per-turn tracer, over any audio input/output (LiveKit room, direct WebRTC,
or the headless test harness).

Every turn and interruption setting is explicit so nothing reaches for a cloud model: VAD turn
detection (no turn-detector model), VAD interruption (no adaptive model), no AEC warm-up window
(the echo gate does that job without muting the user for 3 s), no preemptive LLM requests unless
configured.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from livekit import rtc
from livekit.agents import APIConnectOptions
from livekit.agents import llm as lk_llm
from livekit.agents import stt as lk_stt
from livekit.agents import vad as lk_vad
from livekit.agents.voice import Agent, AgentSession, io, room_io
from livekit.agents.voice.agent_session import SessionConnectOptions
from livekit.plugins import silero

from tts_engine import TTSEngine

from ..config import AgentConfig
from ..observe.traces import TraceWriter, TurnTracer
from ..plugins.omni_llm import OmniLLM
from ..plugins.omni_stt import OmniSTT
from ..plugins.tts_plugin import EngineTTS, SynthesisTiming
from ..transport.audio_output import PacedAudioOutput
from .barge_in import BargeIn
from .clock import monotonic_from_wall
from .duplex import DuplexController
from .echo_gate import EchoGate
from .turn_end import SmartTurnDetector, SmartTurnModel, TurnAudio
from .vad_tap import ObservedVAD

log = logging.getLogger(__name__)

# The user's audio from a room as the VAD wants it: 20 ms frames (RoomIO's default of 50 ms holds every
# word back for up to 50 ms before the VAD sees it) at Silero's own 16 kHz (no second resampling),
# as direct mode's WebRTCAudioInput delivers it
ROOM_AUDIO_INPUT = room_io.AudioInputOptions(sample_rate=16000, frame_size_ms=20)
STALE_TURN_S = 2.0  # after the agent stops, how long a turn may wait for its assistant message


def vad_silence_s(cfg: AgentConfig) -> float:
    """The silence Silero waits before END_OF_SPEECH: shorter with the turn model, which decides the rest."""
    return cfg.turn.smart_turn_min_silence_s if cfg.turn.end_of_turn == "smart_turn" else cfg.vad.min_silence_s


def load_vad(cfg: AgentConfig) -> lk_vad.VAD:
    """Silero from the plugin wheel (no download). Load once per process and share it."""
    return silero.VAD.load(min_speech_duration=cfg.vad.min_speech_s, min_silence_duration=vad_silence_s(cfg),
                           activation_threshold=cfg.vad.activation_threshold)


def turn_handling(cfg: AgentConfig, detector: SmartTurnDetector | None = None) -> dict[str, Any]:
    # with a detector, livekit waits max_delay instead of min_delay when it says "unlikely finished"
    max_delay = cfg.turn.smart_turn_max_delay_s if detector is not None else cfg.turn.endpointing_max_delay_s
    return {
        "turn_detection": detector if detector is not None else "vad",
        "endpointing": {"min_delay": cfg.turn.endpointing_min_delay_s, "max_delay": max_delay},
        "interruption": {
            "enabled": True, "mode": "vad",
            # the duplex controller silences and cuts barge-ins itself (session/duplex.py); livekit's own
            # VAD interruption is its backstop, after the controller's minimum plus the silence Silero
            # counts into speech_duration before its END_OF_SPEECH (else a short "mm-hm" and its
            # trailing silence would reach the minimum and cut the reply)
            "min_duration": max(cfg.duplex.barge_in_min_speech_s + vad_silence_s(cfg), 0.05)
            if cfg.duplex.barge_in_min_speech_s > 0 else 0.05,
            "min_words": 0, "resume_false_interruption": False, "false_interruption_timeout": None,
            "discard_audio_if_uninterruptible": True, "backchannel_boundary": None,
        },
        "preemptive_generation": {"enabled": cfg.turn.preemptive_generation},
    }


def connect_options(cfg: AgentConfig) -> SessionConnectOptions:
    """One quick retry (the framework's default is 3 retries 2 s apart: seconds of dead air), and a
    session that survives a backend outage instead of closing after 3 failed turns."""
    quick = APIConnectOptions(max_retry=1, retry_interval=0.2, timeout=cfg.omni.request_timeout_s)
    return SessionConnectOptions(stt_conn_options=quick, llm_conn_options=quick, tts_conn_options=quick,
                                 max_unrecoverable_errors=cfg.max_consecutive_errors)


class DuplexAgent(Agent):
    """The conversation's Agent: the default nodes, except that a backchannel the duplex controller
    tolerated (and talked through) does not become a user turn."""

    def __init__(self, instructions: str, controller: DuplexController) -> None:
        super().__init__(instructions=instructions)
        self._controller = controller

    async def stt_node(self, audio: Any, model_settings: Any) -> Any:
        async for event in Agent.default.stt_node(self, audio, model_settings):
            if event.type == lk_stt.SpeechEventType.FINAL_TRANSCRIPT and not await self._controller.keep_transcript():
                continue
            yield event


class VoicePipeline:
    def __init__(self, engine: TTSEngine, cfg: AgentConfig, vad: lk_vad.VAD, session_id: str | None = None,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None,
                 turn_model: SmartTurnModel | None = None) -> None:
        self.cfg = cfg
        self.session_id = session_id or f"s-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.on_event = on_event  # transcripts, state, per-turn latency -> data channel / logs
        self.tracer = TurnTracer(self.session_id, TraceWriter(cfg.traces_dir, self.session_id),
                                 on_turn=lambda rec: self._emit("turn", rec))
        self.stt = OmniSTT(cfg.omni, hooks=self.tracer)
        self.llm = OmniLLM(cfg.omni, cfg.llm, hooks=self.tracer)
        self.tts = EngineTTS(engine, cfg.voice, on_timing=self._on_tts_timing)
        self.echo_gate: EchoGate | None = None
        self._speaking: SynthesisTiming | None = None  # the synthesis whose audio is being played
        self._interrupted_at_s: float | None = None  # playback position where the last reply was cut
        # the shared Silero, seen window by window by this session's duplex controller (the early pause)
        # and, with a turn model, by the audio it judges
        self.turn_audio = TurnAudio() if turn_model is not None else None
        self.turn_detector = (SmartTurnDetector(turn_model, self.turn_audio, cfg.turn.smart_turn_threshold,
                                                on_prediction=self.tracer.end_of_turn_predicted)
                              if turn_model is not None and self.turn_audio is not None else None)
        session_vad = ObservedVAD(vad, self._on_vad_event)
        self.session: AgentSession = AgentSession(
            stt=self.stt, llm=self.llm, tts=self.tts, vad=session_vad,
            turn_handling=turn_handling(cfg, self.turn_detector),  # type: ignore[arg-type]
            aec_warmup_duration=None, user_away_timeout=None, conn_options=connect_options(cfg))
        self.controller = DuplexController(self.session, self.tts, cfg.duplex, on_barge_in=self._on_barge_in)
        self._started = False
        self._closed = False
        self.errors: list[str] = []

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self, audio_out: PacedAudioOutput, audio_in: io.AudioInput | None = None,
                    room: rtc.Room | None = None) -> None:
        """Start with our own audio output, hearing `audio_in` (direct WebRTC, tests) or the room's
        participant through RoomIO. The room's own audio output is never used (see
        agent/transport/room_audio.py)."""
        s = self.session
        if (audio_in is None) == (room is None):
            raise ValueError("give exactly one of audio_in (custom transport) or room (RoomIO input)")
        if audio_in is not None:
            s.input.audio = audio_in
        s.output.audio = audio_out
        self._subscribe()
        agent = DuplexAgent(self.cfg.llm.system_prompt, self.controller)
        if room is None:
            await s.start(agent, record=False)
        else:
            # transcripts still go out on lk.transcription, unsynchronised: a synchronizer would wrap
            # (and hide) our output, and the page shows transcripts from the agent-events topic
            await s.start(agent, room=room, record=False, room_options=room_io.RoomOptions(
                audio_input=ROOM_AUDIO_INPUT, audio_output=False,
                text_output=room_io.TextOutputOptions(sync_transcription=False)))
        # the echo gate sits between whatever microphone the session got and its VAD/STT
        assert s.input.audio is not None
        self.echo_gate = EchoGate(s.input.audio, self.cfg.echo, on_voice_over_playback=self.controller.on_microphone_frame)
        s.input.audio = self.echo_gate
        audio_out.on("playback_started", lambda ev: self.tracer.playback_started())
        audio_out.on("playback_finished", self._on_playback_finished)
        audio_out.add_frame_tap(self.echo_gate.observe_played)  # each frame, as it is played
        self._started = True
        # the page shows this session's id and warns loudly when the voice is a random-weight test voice
        self._emit("session", {"session_id": self.session_id, "test_voice": self.tts.engine.is_test_voice,
                               "voice": {"speaker": self.cfg.voice.speaker, "language": self.cfg.voice.language}})
        if self.cfg.greeting:
            s.say(self.cfg.greeting)
        log.info("session %s started", self.session_id)

    def _subscribe(self) -> None:
        s = self.session
        s.on("user_state_changed", self._on_user_state)
        s.on("agent_state_changed", self._on_agent_state)
        s.on("user_input_transcribed", self._on_transcribed)
        s.on("conversation_item_added", self._on_item)
        s.on("error", self._on_error)
        self.controller.attach()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.controller.stop_replies()
        if self._started:
            await self.session.aclose()
        self.tracer.flush_closing()
        self.tracer.close(reason="session_end")
        await self.stt.aclose()
        await self.llm.aclose()
        log.info("session %s closed", self.session_id)

    # ---- event plumbing ------------------------------------------------------------------------

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        if self.on_event is not None:
            try:
                self.on_event(kind, data)
            except Exception:  # a dead data channel must never break the conversation
                log.exception("event listener failed")

    def _on_vad_event(self, ev: lk_vad.VADEvent) -> None:
        self.controller.on_vad_event(ev)
        if self.turn_audio is not None:
            self.turn_audio.on_vad_event(ev)

    def _on_user_state(self, ev: Any) -> None:
        if ev.new_state == "listening" and ev.old_state == "speaking":
            # created_at: livekit backdates the end of speech by the silence its VAD waited for
            self.tracer.user_speech_ended(ended_at=monotonic_from_wall(getattr(ev, "created_at", None)))
        self._emit("user_state", {"state": ev.new_state})

    def _on_agent_state(self, ev: Any) -> None:
        if ev.new_state == "listening":
            due = self.tracer.agent_idle()
            if due is not None:  # the assistant message normally follows at once; never wait forever
                asyncio.get_running_loop().call_later(STALE_TURN_S, self.tracer.close_if_stale, due)
        self._emit("agent_state", {"state": ev.new_state})

    def _on_transcribed(self, ev: Any) -> None:
        if ev.is_final:
            self._emit("transcript", {"role": "user", "text": ev.transcript, "final": True})

    def _on_playback_finished(self, ev: Any) -> None:
        self._interrupted_at_s = ev.playback_position if ev.interrupted else None

    def _spoken_part(self, text: str) -> str:
        """livekit keeps every word the LLM had produced when a reply is cut; keep only what was heard."""
        synthesis, played_s = self._speaking, self._interrupted_at_s
        if synthesis is None or synthesis.engine_stream is None or played_s is None:
            return text
        spoken = synthesis.engine_stream.spoken_text(played_s)
        return spoken if len(spoken) < len(text) else text

    def _on_item(self, ev: Any) -> None:
        item = ev.item
        if not isinstance(item, lk_llm.ChatMessage) or item.role != "assistant":
            return
        text = item.text_content or ""
        if item.interrupted:
            spoken = self._spoken_part(text)
            if spoken != text:  # the same message object is in the chat history the LLM sees next
                item.content = [spoken]
                text = spoken
        self.tracer.agent_message(text, bool(item.interrupted))
        self._emit("transcript", {"role": "agent", "text": text, "final": True, "interrupted": bool(item.interrupted)})

    def _on_error(self, ev: Any) -> None:
        err = ev.error
        stage = str(getattr(err, "type", "error")).removesuffix("_error")  # "stt", "llm", "tts"
        cause = getattr(err, "error", err)
        message = f"{stage}: {cause}"
        log.warning("session %s: %s (recoverable=%s)", self.session_id, message, getattr(err, "recoverable", None))
        self.errors.append(message)
        turn = self.tracer.turn
        if turn is not None and not any(e.startswith(f"{stage}:") for e in turn.errors):
            self.tracer.error(message)  # the stage's own hook did not report it already
        self._emit("error", {"message": message})

    def _on_tts_timing(self, timing: SynthesisTiming) -> None:
        if timing.first_audio_at is not None and timing.finished_at is None:
            self._speaking = timing
        self.tracer.tts_timing(timing.synthesis_id, timing.first_text_at, timing.first_audio_at, timing.error)

    def _on_barge_in(self, barge_in: BargeIn) -> None:
        self.tracer.barge_in(barge_in.cancel_to_silence_ms, barge_in.outcome,
                             onset_to_silence_ms=barge_in.onset_to_silence_ms, detect_ms=barge_in.detect_ms,
                             clock=barge_in.clock(), paused_by=barge_in.paused_by)
        self._emit("barge_in", {"outcome": barge_in.outcome.value, "cancel_to_silence_ms": barge_in.cancel_to_silence_ms,
                                "paused_by": barge_in.paused_by,
                                "onset_to_silence_ms": barge_in.onset_to_silence_ms,
                                "detect_ms": barge_in.detect_ms})
