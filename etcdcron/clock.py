"""Time, injected: the core reads the clock through this seam so tests can skew or freeze it."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Wall time (Unix seconds, for slots) and monotonic time (for deadlines)."""

    def time(self) -> float:
        """Unix seconds by this node's wall clock."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes back."""


class SystemClock:
    """The real clock, optionally skewed by a fixed offset (fault tests use the offset)."""

    def __init__(self, skew: float = 0.0) -> None:
        self.skew = skew

    def time(self) -> float:
        return time.time() + self.skew

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.mono = 0.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds
