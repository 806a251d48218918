"""Which addresses the direct-mode agent offers and accepts for ICE.

aioice (under aiortc) gathers host candidates from `aioice.ice.get_host_addresses`, which skips
127.0.0.1 and offers every other interface. Neither aiortc nor aioice takes the address list as a
parameter, so the module-level function is the only override: `configure_ice` is the ONE place
that replaces it, at server start, and returns a function that restores the original. It is
process-wide: every RTCPeerConnection gathers on the configured addresses afterwards.

Loopback (the default, ["127.0.0.1"]) works out of the box; LAN use adds the machine's LAN
address (e.g. ["127.0.0.1", "192.168.1.20"]) so browsers on other machines can reach it.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Sequence

import aioice.ice

logger = logging.getLogger(__name__)


def configure_ice(host_addresses: Sequence[str]) -> Callable[[], None]:
    """Make aioice gather host candidates on exactly `host_addresses` (IP literals)."""
    addresses = [str(ipaddress.ip_address(a)) for a in host_addresses]  # ValueError on a typo
    if not addresses:
        raise ValueError("at least one ICE host address is required (e.g. 127.0.0.1)")
    original = aioice.ice.get_host_addresses

    def configured(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in addresses if (use_ipv4 if ipaddress.ip_address(a).version == 4 else use_ipv6)]

    aioice.ice.get_host_addresses = configured
    logger.info("ICE host addresses: %s", ", ".join(addresses))

    def restore() -> None:
        if aioice.ice.get_host_addresses is configured:
            aioice.ice.get_host_addresses = original

    return restore


def reachable(candidate_host: str, host_addresses: Sequence[str]) -> bool:
    """Whether a remote candidate's address can be reached from the configured host addresses:
    loopback from a loopback address, anything else from a non-loopback address of its family.
    Hostnames (mDNS `.local` names, which Chromium sends when it hides its IPs) are not: aioice
    would need multicast DNS to resolve them; a page with microphone permission sends real IPs."""
    try:
        remote = ipaddress.ip_address(candidate_host)
    except ValueError:
        return False
    for host in host_addresses:
        local = ipaddress.ip_address(host)
        if local.version == remote.version and local.is_loopback == remote.is_loopback:
            return True
    return False


def filter_candidates(sdp: str, host_addresses: Sequence[str]) -> tuple[str, int]:
    """The SDP without `a=candidate` lines we cannot reach (and without non-UDP ones: aioice speaks
    ICE over UDP only). Returns (sdp, number of candidates kept)."""
    lines, kept = [], 0
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type>
            if len(parts) < 8 or parts[2].lower() != "udp" or not reachable(parts[4], host_addresses):
                continue
            kept += 1
        lines.append(line)
    return "\r\n".join(lines) + "\r\n", kept
