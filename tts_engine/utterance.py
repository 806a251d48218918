"""Utterance: the engine thread's bookkeeping of one stream - its text tokens, phase, frame budget,
talker position and packetizer.

Only the executor touches an Utterance, on the engine thread; everything the caller sees goes
through the stream's channel, which the executor alone writes from this side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .audio_packets import Packetizer
from .channel import StreamChannel
from .config import FrameCapConfig
from .errors import InvalidTextError
from .packets import AudioPacket
from .plan import Phase, Priority, StreamView
from .prompt import Voice
from .text_input import IncrementalTokenizer


@dataclass
class Utterance:
    channel: StreamChannel
    slot: int
    voice: Voice
    streaming: bool  # dual-track text feeding (True) or the whole text in the prompt (False)
    seed: int
    max_frames: int | None
    tokenizer: IncrementalTokenizer
    packetizer: Packetizer
    frame_cap: FrameCapConfig
    priority: Priority
    offline: bool = False  # synthesize(): no playback clock to stay close to
    tokens: list[int] = field(default_factory=list)
    text_ended: bool = False
    phase: Phase = Phase.PREFILL
    frames: int = 0  # frames delivered
    position: int = 0  # next talker position (prompt length + talker steps so far)
    packets_sent: int = 0

    @property
    def id(self) -> int:
        return self.channel.id

    def absorb(self, chunks: list[str], ended: bool) -> list[int]:
        """Tokenize newly arrived text; return the tokens that became final."""
        new: list[int] = []
        for chunk in chunks:
            new += self.tokenizer.push(chunk)
        if ended and not self.text_ended:
            new += self.tokenizer.end()
            self.text_ended = True
        self.tokens += new
        if ended and not self.tokens:
            raise InvalidTextError("empty text: nothing to synthesize")
        return new

    def ready_for_prefill(self) -> bool:
        return bool(self.tokens) and (self.streaming or self.text_ended)

    def text_horizon(self) -> int | None:
        """Frames after which the talker has its next text token (None: always; see StreamView)."""
        return len(self.tokens) if self.streaming and not self.text_ended else None

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

    def packets(self, audio: np.ndarray, ready_at: float) -> list[AudioPacket]:
        """Packetize one decoded frame (float at the decoder rate) and count it as delivered."""
        out = [AudioPacket(pcm=pcm, sample_rate=self.packetizer.output_rate, seq=self.packets_sent + i,
                           frame=self.frames, ready_at=ready_at)
               for i, pcm in enumerate(self.packetizer.push(audio))]
        self.packets_sent += len(out)
        self.frames += 1
        return out

    def view(self, started_at: float | None, stopping: bool) -> StreamView:
        return StreamView(id=self.id, phase=self.phase, frames=self.frames, started_at=started_at,
                          prefill_ready=self.ready_for_prefill(), text_horizon=self.text_horizon(),
                          stopping=stopping, offline=self.offline, priority=self.priority)
