"""The frame math of the 12 Hz codec: every number that follows from 12.5 frames a second at 24 kHz.

One codec frame is 16 codes (one per codebook) and decodes to 80 ms = 1920 samples at 24 kHz (the
decoder upsamples by 8*5*4*3 * 2*2). Packets are 20 ms, so a frame is exactly 4 packets at every
supported output rate (480 samples at 24 kHz, 320 at 16 kHz, 960 at 48 kHz). Everything that means
these quantities imports them from here.
"""

from __future__ import annotations

import math

DECODER_RATE = 24000  # Hz: what the speech decoder produces
SAMPLES_PER_FRAME = 1920  # decoder samples per codec frame
CODEBOOKS = 16  # codes per frame: 1 semantic + 15 acoustic
FRAME_S = SAMPLES_PER_FRAME / DECODER_RATE  # 0.08 s of audio per frame
FRAME_RATE_HZ = DECODER_RATE / SAMPLES_PER_FRAME  # 12.5 (not 12)

PACKET_MS = 20
PACKET_S = PACKET_MS / 1000
PACKET_SAMPLES = DECODER_RATE * PACKET_MS // 1000  # 480 at 24 kHz
PACKETS_PER_FRAME = SAMPLES_PER_FRAME // PACKET_SAMPLES  # 4

# Output rates whose 20 ms packet is a whole number of samples and that the resampler serves.
SUPPORTED_OUTPUT_RATES = (16000, 24000, 48000)

assert PACKETS_PER_FRAME * PACKET_SAMPLES == SAMPLES_PER_FRAME, "a frame must be whole packets"


def packet_samples(rate: int) -> int:
    """Samples in one 20 ms packet at `rate` Hz."""
    return rate * PACKET_MS // 1000


def whole_frames(seconds: float) -> int:
    """Whole codec frames in `seconds` of audio (0 for negative input). The small tolerance keeps a
    position that is a float product of frames (0.24 s = 3 frames) from rounding down a frame."""
    return max(0, math.floor(seconds * FRAME_RATE_HZ + 1e-6))
