"""Packetizer: 20 ms int16 packets, onset fade-in, streaming resampling to 16/48 kHz (libswresample)
with a known group delay: chunking never changes a sample, and a sine comes out as the ideal
resampled sine delayed by exactly `delay_samples`."""

from __future__ import annotations

import numpy as np
import pytest

from tts_engine.audio_packets import Packetizer, StreamingResampler, to_int16
from tts_engine.frames import DECODER_RATE, PACKETS_PER_FRAME, SAMPLES_PER_FRAME

FRAME = SAMPLES_PER_FRAME  # one codec frame at 24 kHz


def _noise(n: int, seed: int = 0, scale: float = 0.3) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def _sine(freq: float, n: int, amp: float = 0.5, rate: int = 24000) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)


@pytest.mark.parametrize("rate, size", [(16000, 320), (24000, 480), (48000, 960)])
def test_each_frame_gives_four_20ms_packets(rate, size):
    pk = Packetizer(output_rate=rate)
    assert pk.packet_samples == size
    signal = _noise(10 * FRAME)
    for i in range(10):
        packets = pk.push(signal[i * FRAME:(i + 1) * FRAME])
        assert len(packets) == PACKETS_PER_FRAME == 4
        assert all(p.dtype == np.int16 and p.shape == (size,) for p in packets)


def test_int16_rounds_to_nearest_and_clips():
    x = np.array([0.0, 2.6 / 32767, -2.6 / 32767, 0.3, 1.0, -1.0, 1.5, -3.0, 1e-6])
    assert to_int16(x).tolist() == [0, 3, -3, 9830, 32767, -32767, 32767, -32768, 0]
    # at 24 kHz (no resampler) the packets are exactly the rounded frame past the fade
    frame = _noise(FRAME, seed=1, scale=0.8)
    frame[1000:1010] = [1.7, -1.7, 0.99999, -0.99999, 2.4 / 32767, 0.6 / 32767, 0, 0, 0, 0]
    got = np.concatenate(Packetizer(24000, fade_in_ms=0).push(frame))
    assert np.array_equal(got, to_int16(frame))
    assert got[1000:1006].tolist() == [32767, -32768, 32767, -32767, 2, 1]


def test_bad_output_rate_names_the_supported_ones():
    with pytest.raises(ValueError, match="16000.*24000.*48000"):
        Packetizer(output_rate=44100)
    with pytest.raises(ValueError):
        Packetizer(24000).push(np.zeros(1000, dtype=np.float32))  # not a multiple of 20 ms


def test_fade_in_touches_only_the_first_fade_ms_at_24k():
    frames = [_noise(FRAME, seed=s, scale=0.5) for s in range(3)]
    faded, plain = Packetizer(24000, fade_in_ms=5.0), Packetizer(24000, fade_in_ms=0)
    a = [np.concatenate(faded.push(f)) for f in frames]
    b = [np.concatenate(plain.push(f)) for f in frames]
    n = 120  # 5 ms at 24 kHz
    assert a[0][0] == 0  # starts from silence: no step
    assert np.array_equal(a[0][n:], b[0][n:])
    assert np.all(np.abs(a[0][:n].astype(int)) <= np.abs(b[0][:n].astype(int)))
    gain = a[0][1:n] / np.where(b[0][1:n] == 0, 1, b[0][1:n])
    big = np.abs(b[0][1:n]) > 500  # where rounding cannot hide the ramp
    assert np.all(np.diff(gain[big]) > -0.02)  # a rising ramp
    for i in (1, 2):
        assert np.array_equal(a[i], b[i])


@pytest.mark.parametrize("rate", [16000, 48000])
def test_fade_in_changes_only_the_first_frame_when_resampling(rate):
    frames = [_noise(FRAME, seed=s, scale=0.5) for s in range(3)]
    faded, plain = Packetizer(rate, fade_in_ms=5.0), Packetizer(rate, fade_in_ms=0)
    a = [np.concatenate(faded.push(f)) for f in frames]
    b = [np.concatenate(plain.push(f)) for f in frames]
    # the fade reaches the output after the resampler's delay, spread by its filter (one look-ahead
    # either side), so past 5 ms + 2 delays nothing may differ
    reach = int(5.0 * rate / 1000) + 2 * faded.delay_samples + 1
    assert faded.delay_s < 0.002
    assert np.array_equal(a[0][reach:], b[0][reach:])
    assert not np.array_equal(a[0][:reach], b[0][:reach])
    for i in (1, 2):
        assert np.array_equal(a[i], b[i])


@pytest.mark.parametrize("rate", [16000, 48000])
def test_chunked_resampling_equals_whole_signal(rate):
    signal = _noise(12 * FRAME, seed=3)
    whole = StreamingResampler(rate).process(signal)
    assert len(whole) == len(signal) * rate // DECODER_RATE  # the look-ahead silence makes up the held-back tail
    chunked_rs = StreamingResampler(rate)
    cuts = [0, 7, 480, 1921, 5000, 5001, 9999, len(signal)]  # uneven chunks, not just frames
    chunked = np.concatenate([chunked_rs.process(signal[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)])
    assert np.array_equal(chunked, whole)
    # and through the packetizer, frame by frame, the packets are the whole signal's samples
    pk = Packetizer(rate, fade_in_ms=0)
    packets = np.concatenate([p for i in range(12) for p in pk.push(signal[i * FRAME:(i + 1) * FRAME])])
    assert np.array_equal(packets, to_int16(whole))


@pytest.mark.parametrize("rate", [16000, 48000])
def test_sine_keeps_frequency_and_amplitude(rate):
    pk = Packetizer(rate, fade_in_ms=5.0)
    signal = _sine(1000.0, 25 * FRAME, amp=0.5)  # 2 s
    out = np.concatenate([p for i in range(25) for p in pk.push(signal[i * FRAME:(i + 1) * FRAME])])
    assert len(out) == 2 * rate
    steady = out[rate // 2:].astype(np.float64) / 32767  # past the fade and the filter's start
    spectrum = np.abs(np.fft.rfft(steady * np.hanning(len(steady))))
    peak_hz = np.argmax(spectrum) * rate / len(steady)
    assert abs(peak_hz - 1000.0) <= 2 * rate / len(steady)
    amplitude = np.sqrt(2) * steady.std()
    assert abs(amplitude - 0.5) < 0.01
    # almost all energy stays at 1 kHz (no images or aliases)
    near = spectrum[int(0.9 * np.argmax(spectrum)):int(1.1 * np.argmax(spectrum))]
    assert (near**2).sum() / (spectrum**2).sum() > 0.999


def test_resampler_group_delay_is_documented_and_whole():
    for rate in (16000, 48000):
        rs = StreamingResampler(rate)
        impulse = np.zeros(FRAME)
        impulse[99] = 1.0  # 99 lands on a whole output sample at both rates
        y = rs.process(impulse)
        peak = int(np.argmax(y))
        assert peak == 99 * rate // DECODER_RATE + rs.delay_samples
        assert rs.delay_samples > 0  # a look-ahead filter: not a pass-through
        assert rs.delay_s == pytest.approx(rs.delay_samples / rate)
        assert rs.delay_s < 0.002
        assert Packetizer(rate).delay_samples == rs.delay_samples


def test_reset_starts_a_new_stream():
    frame = _noise(FRAME, seed=4)
    pk = Packetizer(16000)
    first = pk.push(frame)
    pk.push(frame)
    pk.reset()
    again = pk.push(frame)
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))


def test_downsampling_removes_what_16k_cannot_carry():
    # an 11 kHz tone is above 16 kHz's Nyquist: without the low-pass it would alias to 5 kHz
    pk = Packetizer(16000, fade_in_ms=0)
    signal = _sine(11000.0, 10 * FRAME, amp=0.5)
    out = np.concatenate([p for i in range(10) for p in pk.push(signal[i * FRAME:(i + 1) * FRAME])])
    assert np.abs(out[1600:].astype(np.float64) / 32767).max() < 1e-3


def _snr_db(got: np.ndarray, ideal: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ideal**2) / np.sum((got - ideal) ** 2)))


@pytest.mark.parametrize("rate, freqs", [(16000, (440.0, 1000.0, 3000.0, 6000.0)),
                                         (48000, (440.0, 1000.0, 6000.0, 9000.0))])
def test_resampled_sine_equals_the_ideal_sine_delayed_by_the_group_delay(rate, freqs):
    """Frame by frame through the packetizer, a sine comes out as the ideally resampled sine shifted
    by exactly `delay_samples`: the packets line up with the input up to that fixed delay (a delay
    off by one sample leaves 25 dB at best), with only int16 rounding left (~92 dB at this level)."""
    frames = 30
    for freq in freqs:
        pk = Packetizer(rate, fade_in_ms=0)
        signal = _sine(freq, frames * FRAME, amp=0.5)
        out = np.concatenate([p for i in range(frames) for p in pk.push(signal[i * FRAME:(i + 1) * FRAME])])
        assert len(out) == frames * PACKETS_PER_FRAME * rate // 50
        t = (np.arange(len(out)) - pk.delay_samples) / rate
        ideal = 0.5 * np.sin(2 * np.pi * freq * t)
        steady = slice(rate // 10, len(out) - rate // 10)  # past the start-up, away from the held-back tail
        snr = _snr_db(out[steady].astype(np.float64) / 32767, ideal[steady])
        assert snr > 85, f"{freq} Hz at {rate}: SNR {snr:.1f} dB"
        assert np.abs(out[:pk.delay_samples]).max() == 0  # the delay is silence


@pytest.mark.parametrize("rate", [16000, 48000])
def test_every_frame_of_a_long_stream_gives_its_packets_at_once(rate):
    """The held-back look-ahead never grows: 10 minutes of frames, each exactly 4 packets."""
    pk = Packetizer(rate, fade_in_ms=0)
    frame = _noise(FRAME, seed=5)
    for _ in range(7500):
        assert len(pk.push(frame)) == PACKETS_PER_FRAME


def test_upsampling_to_48k_leaves_no_images():
    """24 -> 48 kHz: a 9 kHz tone must not come back mirrored at 15 kHz."""
    pk = Packetizer(48000, fade_in_ms=0)
    signal = _sine(9000.0, 25 * FRAME, amp=0.5)
    out = np.concatenate([p for i in range(25) for p in pk.push(signal[i * FRAME:(i + 1) * FRAME])])
    steady = out[4800:].astype(np.float64) / 32767
    spectrum = np.abs(np.fft.rfft(steady * np.blackman(len(steady))))
    freqs = np.fft.rfftfreq(len(steady), 1 / 48000)
    assert 20 * np.log10(spectrum[freqs > 12500].max() / spectrum.max()) < -80
