"""Decoded 24 kHz float frames -> 20 ms int16 packets, optionally resampled to 16 or 48 kHz.

One codec frame is 1920 samples (80 ms) at 24 kHz, so it always yields exactly 4 packets of 20 ms:
480 samples at 24 kHz, 320 at 16 kHz, 960 at 48 kHz.
"""

from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)

DECODER_RATE = 24000
PACKET_MS = 20
# output rate -> (up, down) for the rational resampler from 24 kHz
SUPPORTED_RATES = {16000: (2, 3), 24000: (1, 1), 48000: (2, 1)}

# Filter design at the up-sampled rate (48 kHz for both supported conversions): 2*63+1 taps keep
# the group delay a whole number of output samples (63 at 48 kHz, 21 at 16 kHz).
_HALF_TAPS = 63
_KAISER_BETA = 8.6  # ~-80 dB stopband
# -6 dB point as a fraction of the lower Nyquist: 6.8 kHz for 16 kHz out, 10.2 kHz for 48 kHz out;
# the transition band is about +/-0.95 kHz around it.
_CUTOFF = 0.85


def _design_filter(up: int, down: int) -> np.ndarray:
    """Kaiser-windowed sinc low-pass at the up-sampled rate, scaled so the output keeps its level."""
    n = np.arange(2 * _HALF_TAPS + 1) - _HALF_TAPS
    fc = _CUTOFF * 0.5 / max(up, down)  # cycles per up-sampled sample
    h = 2 * fc * np.sinc(2 * fc * n) * np.kaiser(len(n), _KAISER_BETA)
    return h * (up / h.sum())  # zero-stuffing by `up` divides the level by `up`


class StreamingResampler:
    """Stateful windowed-sinc polyphase resampler by up/down (numpy, float64 inside).

    A causal FIR: output sample m is sum_j h[p + up*j] * x[floor(m*down/up) - j], p = m*down % up,
    over an input history that starts as zeros. Feeding a signal in chunks gives bit-identical
    output to feeding it whole (same products, summed in the same order), with a fixed group delay
    of `delay_samples` output samples (silence comes out first, the stream length is unchanged).
    """

    def __init__(self, up: int, down: int):
        self.up, self.down = up, down
        h = _design_filter(up, down)
        taps = math.ceil(len(h) / up)
        h = np.concatenate([h, np.zeros(taps * up - len(h))])
        self.phases = h.reshape(taps, up).T.copy()  # [up, taps]: phases[p, j] = h[p + up*j]
        self.delay_samples = _HALF_TAPS // down  # (len(h)-1)/2 up-sampled samples
        # The next output's newest input is always >= _n_in, so taps - 1 older inputs suffice.
        self._history = np.zeros(taps - 1)
        self._n_in = 0  # inputs consumed
        self._n_out = 0  # outputs produced

    @property
    def delay_s(self) -> float:
        return self.delay_samples * self.down / (self.up * DECODER_RATE)

    def process(self, x: np.ndarray) -> np.ndarray:
        """x: [n] input samples -> every output sample whose inputs have now all arrived."""
        buf = np.concatenate([self._history, np.asarray(x, dtype=np.float64)])  # buf[i] = input first + i
        first = self._n_in - len(self._history)
        self._n_in += len(x)
        # outputs m with newest input floor(m*down/up) < _n_in
        end = -(-self._n_in * self.up // self.down)
        m = np.arange(self._n_out, end)
        newest = m * self.down // self.up - first  # [n_out] index into buf
        coef = self.phases[m * self.down % self.up]  # [n_out, taps]
        y = np.zeros(len(m))
        for j in range(coef.shape[1]):  # fixed summation order: chunking cannot change rounding
            y += coef[:, j] * buf[newest - j]
        self._n_out = end
        self._history = buf[len(buf) - len(self._history):]
        return y


class Packetizer:
    """Turn each decoded 1920-sample float frame into 4 int16 packets of 20 ms at `output_rate`.

    The stream's first `fade_in_ms` get a raised-cosine fade-in (applied at 24 kHz, before any
    resampling). The streaming decoder is frame-exact, so the only artefact left on the first frame
    is the step from silence to the first decoded sample, which a listener hears as an onset click;
    the fade turns that step into a smooth ramp. Later frames are never touched. One Packetizer
    per stream: create a new one (or `reset`) for the next utterance.
    """

    def __init__(self, output_rate: int = DECODER_RATE, fade_in_ms: float = 5.0):
        if output_rate not in SUPPORTED_RATES:
            raise ValueError(f"unsupported output rate {output_rate}; supported: {sorted(SUPPORTED_RATES)}")
        if fade_in_ms < 0:
            raise ValueError(f"fade_in_ms must be >= 0, got {fade_in_ms}")
        self.output_rate = output_rate
        self.fade_in_ms = fade_in_ms
        self.packet_samples = output_rate * PACKET_MS // 1000
        n = round(fade_in_ms * DECODER_RATE / 1000)
        self._fade = 0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n) if n else np.zeros(0)  # 0 -> ~1
        self.reset()

    def reset(self) -> None:
        """Start a new stream: the fade-in applies again and the resampler history is silence."""
        up, down = SUPPORTED_RATES[self.output_rate]
        self._resampler = StreamingResampler(up, down) if up != down else None
        self._n_in = 0  # 24 kHz samples pushed so far

    @property
    def delay_samples(self) -> int:
        """Fixed group delay of the resampler, in output samples (0 at 24 kHz)."""
        return self._resampler.delay_samples if self._resampler is not None else 0

    def push(self, frame: np.ndarray) -> list[np.ndarray]:
        """frame: [1920] float32 in [-1, 1] at 24 kHz -> 4 int16 packets of `packet_samples`."""
        x = np.asarray(frame, dtype=np.float32)
        in_packet = DECODER_RATE * PACKET_MS // 1000
        if x.ndim != 1 or len(x) == 0 or len(x) % in_packet:
            raise ValueError(f"expected a 1-D frame of a multiple of {in_packet} samples, got {x.shape}")
        if self._n_in < len(self._fade):
            x = x.copy()
            k = min(len(x), len(self._fade) - self._n_in)
            x[:k] *= self._fade[self._n_in:self._n_in + k]
        self._n_in += len(x)
        y = self._resampler.process(x) if self._resampler is not None else x  # [n * rate / 24000]
        pcm = to_int16(y)
        return [pcm[i:i + self.packet_samples] for i in range(0, len(pcm), self.packet_samples)]


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float in [-1, 1] -> int16, rounded to nearest and clipped (out-of-range input saturates)."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * 32767.0), -32768, 32767).astype(np.int16)
