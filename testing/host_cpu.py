"""How busy the host's CPUs were over a benchmark, from Linux's /proc/stat: a run on a 2-core box
is only as quiet as its neighbours let it be, and a virtual machine's steal time (CPU its hypervisor
gave to someone else) slows every stage at once. None where /proc/stat is not there."""

from __future__ import annotations

from pathlib import Path

PROC_STAT = Path("/proc/stat")
# the aggregate "cpu" line's columns (man 5 proc): user nice system idle iowait irq softirq steal ...
IDLE, IOWAIT, STEAL = 3, 4, 7


def cpu_ticks(stat: Path = PROC_STAT) -> list[int] | None:
    """The aggregate CPU line's tick counters, or None where the file is missing or unreadable."""
    try:
        first = stat.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not first or first[0] != "cpu":
        return None
    return [int(v) for v in first[1:]]


def cpu_share(before: list[int] | None, after: list[int] | None) -> dict[str, float] | None:
    """Busy and stolen shares (percent of all CPU time) between two readings of cpu_ticks()."""
    if before is None or after is None or len(before) <= STEAL or len(after) <= STEAL:
        return None
    delta = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(delta[:STEAL + 1])  # guest time is counted inside user already
    if total <= 0:
        return None
    busy = total - delta[IDLE] - delta[IOWAIT] - delta[STEAL]
    return {"busy_pct": round(100 * busy / total, 1), "steal_pct": round(100 * delta[STEAL] / total, 1)}
