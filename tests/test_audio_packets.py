"""Packetizer: 20 ms int16 packets, onset fade-in, exact streaming resampling to 16/48 kHz."""

from __future__ import annotations

import numpy as np
import pytest

from tts_engine.audio_packets import SUPPORTED_RATES, Packetizer, StreamingResampler, to_int16

FRAME = 1920  # one codec frame at 24 kHz
RATES = [16000, 24000, 48000]


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
        assert len(packets) == 4
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
    # the fade reaches the output after the resampler's delay, spread by its filter (~1.3 ms each side)
    reach = int((5.0 + 2 * 1.4) * rate / 1000)
    assert np.array_equal(a[0][reach:], b[0][reach:])
    assert not np.array_equal(a[0][:reach], b[0][:reach])
    for i in (1, 2):
        assert np.array_equal(a[i], b[i])


@pytest.mark.parametrize("rate", [16000, 48000])
def test_chunked_resampling_equals_whole_signal(rate):
    up, down = SUPPORTED_RATES[rate]
    signal = _noise(12 * FRAME, seed=3)
    whole = StreamingResampler(up, down).process(signal)
    assert len(whole) == len(signal) * up // down
    chunked_rs = StreamingResampler(up, down)
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
        up, down = SUPPORTED_RATES[rate]
        rs = StreamingResampler(up, down)
        impulse = np.zeros(480)
        impulse[99] = 1.0  # 99 lands on a whole output sample at both rates
        y = rs.process(impulse)
        peak = int(np.argmax(y))
        assert peak == 99 * up // down + rs.delay_samples
        assert rs.delay_s == pytest.approx(rs.delay_samples / rate)
        assert rs.delay_s < 0.002


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
