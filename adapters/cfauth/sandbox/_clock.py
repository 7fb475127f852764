"""The sandbox's clock: virtual time that only moves when a test moves it."""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

from cfauth_core import InvalidInput

__all__ = ["Clock", "SandboxClock"]


@runtime_checkable
class Clock(Protocol):
    """What the sandbox needs from a clock: wall-clock seconds, and a way to move them."""

    def now(self) -> float:
        """Return the current time in seconds since the epoch."""
        ...

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        ...


class SandboxClock:
    """A thread-safe virtual clock.

    It starts at ``start`` (default: the real ``time.time()`` when created) and only moves
    when :meth:`advance` or :meth:`set` is called, so token and code expiry are deterministic.
    """

    __slots__ = ("_lock", "_now")

    def __init__(self, start: float | None = None) -> None:
        self._lock = threading.Lock()
        self._now = time.time() if start is None else float(start)

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise InvalidInput(f"a clock only moves forward; pass seconds >= 0, not {seconds!r}")
        with self._lock:
            self._now += seconds

    def set(self, timestamp: float) -> None:
        """Jump to ``timestamp`` (forward only)."""
        with self._lock:
            if timestamp < self._now:
                raise InvalidInput(
                    f"a clock only moves forward; pass a timestamp after {self._now!r}"
                )
            self._now = float(timestamp)

    def __repr__(self) -> str:
        return f"SandboxClock(now={self.now()!r})"
