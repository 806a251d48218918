"""Engine packets -> the bytes of one response format, as they decode (PyAV / FFmpeg does all coding).

    pcm   raw s16le, 24 kHz, mono (OpenAI's pcm)             no container, no header
    wav   pcm_s16le in RIFF/WAVE, 24 kHz mono                44-byte header whose RIFF and data sizes
                                                              are 0xFFFFFFFF: "length unknown, read to
                                                              the end" (FFmpeg's wav muxer on a stream
                                                              it cannot seek back into; bitexact: no
                                                              LIST chunk)
    mp3   libmp3lame 64 kb/s, 24 kHz (MPEG-2 Layer III)      no ID3 tag, no Xing header
    opus  libopus 32 kb/s in Ogg, 24 kHz input               20 ms Ogg pages: every frame leaves at once
    aac   FFmpeg's aac 64 kb/s in ADTS, 24 kHz               ADTS frames (no MP4 atoms to seek back for)
    flac  FFmpeg's flac in native FLAC, 24 kHz               STREAMINFO without total length or MD5

Everything is 24 kHz: an engine running at 16 or 48 kHz (TTS_OUTPUT_RATE) is resampled by
FFmpeg's aresample. `speed` other than 1.0 is FFmpeg's atempo (a time stretch that keeps the pitch;
chained for 0.25..0.5), which holds back up to ~1 frame of audio; 1.0 skips the filter (bit-exact).
Lossy encoders add their own delay and padding (mp3 ~1500, aac ~1000 samples at the end of the
decoded audio, well under one 80 ms codec frame); opus (pre-skip) and flac decode to the exact length.
"""

from __future__ import annotations

import fractions
import logging
from typing import cast

import av
import numpy as np
from av.audio.stream import AudioStream

log = logging.getLogger(__name__)

OUTPUT_RATE = 24000  # what OpenAI's pcm is, and what every format here carries
MIN_SPEED, MAX_SPEED = 0.25, 4.0
FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg; codecs=opus", "aac": "audio/aac", "flac": "audio/flac",
                 "wav": "audio/wav", "pcm": "audio/pcm; rate=24000; channels=1; encoding=s16le"}
# format -> (FFmpeg muxer, encoder, bit rate or 0, muxer options)
_CODING: dict[str, tuple[str, str, int, dict[str, str]]] = {
    "mp3": ("mp3", "libmp3lame", 64000, {"id3v2_version": "0", "write_xing": "0"}),
    "opus": ("ogg", "libopus", 32000, {"page_duration": "20000"}),
    "aac": ("adts", "aac", 64000, {}),
    "flac": ("flac", "flac", 0, {}),
    "wav": ("wav", "pcm_s16le", 0, {"fflags": "+bitexact"}),
}


def _frame(pcm: np.ndarray, rate: int, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16",
                                       layout="mono")
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, rate)
    return frame


class _Sink:
    """A write-only file for FFmpeg: no seek(), so muxers write streamable output and never go back."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        self._buf += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out


class _Encoder:
    """One FFmpeg muxer + encoder writing into memory; each call returns the bytes it produced."""

    def __init__(self, response_format: str) -> None:
        muxer, codec, bit_rate, options = _CODING[response_format]
        self._sink = _Sink()
        self._container = av.open(self._sink, "w", format=muxer, options=options)
        self._stream = cast(AudioStream, self._container.add_stream(codec, rate=OUTPUT_RATE))
        self._stream.layout = "mono"
        if bit_rate:
            self._stream.bit_rate = bit_rate
        self._pts = 0
        self._open = True

    def encode(self, pcm: np.ndarray) -> bytes:
        for packet in self._stream.encode(_frame(pcm, OUTPUT_RATE, self._pts)):  # PyAV converts s16 to the codec's format
            self._container.mux(packet)
        self._pts += len(pcm)
        return self._sink.take()

    def finish(self) -> bytes:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self.close()
        return self._sink.take()

    def close(self) -> None:
        if self._open:
            self._open = False
            self._container.close()


class _Retimer:
    """FFmpeg filter graph: aresample to 24 kHz and/or atempo, streaming (push a chunk, pull what is out)."""

    def __init__(self, input_rate: int, speed: float) -> None:
        graph = av.filter.Graph()
        chain = [graph.add_abuffer(format="s16", sample_rate=input_rate, layout="mono",
                                   time_base=fractions.Fraction(1, input_rate))]
        if input_rate != OUTPUT_RATE:
            chain.append(graph.add("aresample", str(OUTPUT_RATE)))
        while speed < 0.5:  # one atempo takes 0.5..100: below 0.5, chain halvings
            chain.append(graph.add("atempo", "0.5"))
            speed /= 0.5
        if speed != 1.0:
            chain.append(graph.add("atempo", repr(speed)))
        chain.append(graph.add("aformat", f"sample_fmts=s16:channel_layouts=mono:sample_rates={OUTPUT_RATE}"))
        chain.append(graph.add("abuffersink"))
        for a, b in zip(chain, chain[1:], strict=False):
            a.link_to(b)
        graph.configure()
        self._graph = graph
        self._rate = input_rate
        self._pts = 0

    def push(self, pcm: np.ndarray) -> np.ndarray:
        self._graph.push(_frame(pcm, self._rate, self._pts))
        self._pts += len(pcm)
        return self._pull()

    def finish(self) -> np.ndarray:
        self._graph.push(None)
        return self._pull()

    def _pull(self) -> np.ndarray:
        out = []
        while True:
            try:
                frame = self._graph.pull()
            except (av.BlockingIOError, av.EOFError):
                break
            out.append(frame.to_ndarray().reshape(-1))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int16)


class AudioChain:
    """int16 mono packets at the engine's rate in, bytes of `response_format` out."""

    def __init__(self, response_format: str, input_rate: int, speed: float = 1.0) -> None:
        if response_format not in FORMATS:
            raise ValueError(f"response_format must be one of {FORMATS}")
        self.content_type = CONTENT_TYPES[response_format]
        self._retimer = _Retimer(input_rate, speed) if input_rate != OUTPUT_RATE or speed != 1.0 else None
        self._encoder = _Encoder(response_format) if response_format != "pcm" else None
        self.samples_out = 0  # 24 kHz samples handed to the encoder

    @property
    def seconds_out(self) -> float:
        return self.samples_out / OUTPUT_RATE

    def push(self, pcm: np.ndarray) -> bytes:
        return self._encode(self._retimer.push(pcm) if self._retimer is not None else pcm, final=False)

    def finish(self) -> bytes:
        """The rest: what the filter and the encoder still hold, and the container's trailer."""
        return self._encode(self._retimer.finish() if self._retimer is not None else None, final=True)

    def close(self) -> None:
        """Abandon an unfinished chain (the client went away): free the encoder, write nothing."""
        if self._encoder is not None:
            try:
                self._encoder.close()
            except av.FFmpegError as exc:  # a trailer nobody will read: not worth more than a line
                log.debug("closing an abandoned encoder: %s", exc)

    def _encode(self, pcm: np.ndarray | None, final: bool) -> bytes:
        out = b""
        if pcm is not None and len(pcm):
            self.samples_out += len(pcm)
            out = self._encoder.encode(pcm) if self._encoder is not None else pcm.astype("<i2", copy=False).tobytes()
        if final and self._encoder is not None:
            out += self._encoder.finish()
        return out
