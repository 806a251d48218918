"""Engine-thread state of one stream: its text so far, its phase, its frame budget.

Phases: PREFILL (waiting for the first text token), PREDICT (a codebook-0 token is waiting for the
rest of its frame), TALK (a frame is done; the talker needs the next text-track token). Only the
engine thread touches an Utterance; text crosses over from callers through TTSStream._take_text().
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import numpy as np

from .audio_packets import Packetizer
from .config import FrameCapConfig
from .errors import InvalidTextError
from .prompt import Voice
from .stream import AudioPacket, TTSStream
from .text_input import IncrementalTokenizer

PACKET_SECONDS = 0.020


class Phase(enum.Enum):
    PREFILL = "prefill"
    PREDICT = "predict"
    TALK = "talk"


@dataclass
class Utterance:
    stream: TTSStream
    slot: int
    voice: Voice
    streaming: bool  # dual-track text feeding (True) or the whole text in the prompt (False)
    seed: int
    max_frames: int | None
    tokenizer: IncrementalTokenizer
    packetizer: Packetizer
    frame_cap: FrameCapConfig
    keep_float: bool = False  # synthesize() wants the float waveform too
    bypass_lead: bool = False  # offline synthesis: no playback clock to stay close to
    slot_released: bool = False  # guarded by the engine lock: a slot is freed exactly once
    tokens: list[int] = field(default_factory=list)
    text_ended: bool = False
    phase: Phase = Phase.PREFILL
    frames: int = 0  # frames delivered
    position: int = 0  # next talker position (prompt length + talker steps so far)
    packets_sent: int = 0

    def absorb_text(self) -> None:
        chunks, ended = self.stream._take_text()
        new: list[int] = []
        for chunk in chunks:
            new += self.tokenizer.push(chunk)
        if ended and not self.text_ended:
            new += self.tokenizer.end()
            self.text_ended = True
        if new:
            self.tokens += new
            self.stream._note_tokens(new)
        if ended and not self.tokens:
            raise InvalidTextError("empty text: nothing to synthesize")

    def ready_for_prefill(self) -> bool:
        return bool(self.tokens) and (self.streaming or self.text_ended)

    def text_id_for_talk(self, tts_eos_id: int, tts_pad_id: int) -> int | None:
        """Text-track token for the talker step after the current frame; None = wait for text."""
        if not self.streaming:
            return tts_pad_id
        index = self.frames  # frame f is followed by text token f+1 (token 0 rode in the prompt)
        if index < len(self.tokens):
            return self.tokens[index]
        if not self.text_ended:
            return None
        return tts_eos_id if index == len(self.tokens) else tts_pad_id

    def frame_limit(self) -> int:
        hard = self.frame_cap.max_frames_hard
        limit = min(self.max_frames, hard) if self.max_frames is not None else hard
        if self.text_ended:
            limit = min(limit, self.frame_cap.cap(len(self.tokens)))
        return limit

    def deliver(self, codes: np.ndarray, audio: np.ndarray, step_index: int) -> int:
        """Packetize one decoded frame and hand it to the caller; return how many packets are late.

        A packet is late (an underrun) when it is ready after its playback deadline, assuming real-time
        playback from the first packet: first_packet_at + seq * 20 ms.
        """
        now = time.monotonic()
        stats = self.stream.stats
        first = stats.first_packet_at if stats.first_packet_at is not None else now
        if stats.first_packet_step is None:
            stats.first_packet_step = step_index
        packets, late = [], 0
        for pcm in self.packetizer.push(audio):
            late += now > first + self.packets_sent * PACKET_SECONDS
            packets.append(AudioPacket(pcm=pcm, sample_rate=self.packetizer.output_rate, seq=self.packets_sent,
                                       frame=self.frames, ready_at=now))
            self.packets_sent += 1
        if self.keep_float:
            self.stream._float_frames.append(audio)
        self.frames += 1
        if not self.bypass_lead:
            stats.underruns += late
        self.stream._deliver(packets, codes)
        return 0 if self.bypass_lead else late
