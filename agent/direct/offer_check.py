"""What an offer must be before aiortc sees it: SDP text with plain line breaks, parsed by aiortc's
own SDP parser, holding exactly one audio section (the microphone) and at most one data-channel
section (the page's `agent-events` channel). Anything else is refused with a message naming the
rule, so a crafted SDP cannot add tracks nobody reads or reach aiortc's internal assertions."""

from __future__ import annotations

import re

from aiortc.sdp import SessionDescription

# SDP lines end in CRLF (RFC 8866; LF alone is tolerated). Any other break Python's splitlines()
# honours (VT, FF, FS/GS/RS, NEL, U+2028/U+2029, a lone CR) would let one parser see a section
# another does not, so none may appear, nor any other control character but TAB.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f\x85\u2028\u2029]|\r(?!\n)")
_AUDIO_PROFILES = ("UDP/TLS/RTP/SAVPF", "UDP/TLS/RTP/SAVP", "RTP/SAVPF")
_DATA_PROFILES = ("UDP/DTLS/SCTP", "DTLS/SCTP")
_OUR_CODECS = ("opus", "PCMU", "PCMA")  # what the answer can send and receive


class OfferRejected(ValueError):
    """The offer breaks one of the rules above; the message says which."""


def check_offer_sdp(sdp: str) -> SessionDescription:
    """The parsed offer, or OfferRejected."""
    if not sdp.startswith("v=0"):
        raise OfferRejected("an SDP offer starts with 'v=0'")
    bad = _FORBIDDEN.search(sdp)
    if bad is not None:
        raise OfferRejected(f"the SDP contains {bad.group()!r} at offset {bad.start()}: lines must end in CRLF and "
                            "hold no control characters")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises ValueError, IndexError, AssertionError, ...
        raise OfferRejected(f"the SDP cannot be parsed ({type(exc).__name__}: {exc})") from None
    kinds = [m.kind for m in parsed.media]
    if kinds.count("audio") != 1 or kinds.count("application") > 1 or set(kinds) - {"audio", "application"}:
        raise OfferRejected(f"the offer must have exactly one audio section and at most one data channel, "
                            f"no video; it has {', '.join(kinds) or 'none'}")
    for media in parsed.media:
        profiles = _AUDIO_PROFILES if media.kind == "audio" else _DATA_PROFILES
        if media.profile not in profiles:
            raise OfferRejected(f"the {media.kind} section uses {media.profile!r}; expected one of {', '.join(profiles)}")
        if media.kind == "audio" and any(not 0 <= int(fmt) <= 127 for fmt in media.fmt):
            raise OfferRejected("RTP payload types are 0-127")
        if media.kind == "audio" and not any(codec.name in _OUR_CODECS for codec in media.rtp.codecs):
            raise OfferRejected(f"the audio section offers none of {', '.join(_OUR_CODECS)}")
    return parsed
