"""Helpers for the tests of large bodies: bodies made up on the spot, and the process's resident memory."""

from __future__ import annotations

import hashlib

RSS_BOUND = 64 * 2**20  # bytes of peak resident-memory growth allowed for a large body (issue 10's goal per server)


def body_of(size: int) -> bytes:
    """``size`` bytes that differ from one size to the next (no run of one byte value)."""
    return (hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1))[:size]


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: writing 5 to clear_refs); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True
