"""Token stores: where a grant's tokens live between runs, and the refresh lease.

A store holds one grant's :class:`~cfauth_core.TokenSet`.  Its *lease* is the
lock that makes refreshing single-flight across everything sharing the store
(threads, tasks, processes, machines): the drivers take it when the machine
emits ``RefreshDue``, reload, and release it after the new tokens are saved.
"""

from __future__ import annotations

import threading
from typing import Protocol

from cfauth_core import TokenSet

__all__ = ["MemoryStore", "TokenStore"]


class TokenStore(Protocol):
    """What the drivers need of a store."""

    def load(self) -> TokenSet | None:
        """The stored tokens, or ``None``; a corrupt record raises ``InvalidTokenRecord``."""

    def save(self, tokens: TokenSet) -> None:
        """Persist ``tokens`` durably before returning."""

    def acquire_lease(self) -> None:
        """Take the refresh lease, blocking until it is free."""

    def release_lease(self) -> None:
        """Release the refresh lease taken by :meth:`acquire_lease`."""

    def delete(self) -> None:
        """Delete the stored grant (the program logged out)."""


class MemoryStore:
    """Tokens in memory: shared by the clients of one process, lost at exit."""

    def __init__(self, tokens: TokenSet | None = None) -> None:
        self._tokens = tokens
        self._lease = threading.Lock()
        self._guard = threading.Lock()

    def load(self) -> TokenSet | None:
        with self._guard:
            return self._tokens

    def save(self, tokens: TokenSet) -> None:
        with self._guard:
            self._tokens = tokens

    def delete(self) -> None:
        with self._guard:
            self._tokens = None

    def acquire_lease(self) -> None:
        self._lease.acquire()

    def release_lease(self) -> None:
        self._lease.release()

    def __repr__(self) -> str:
        return f"<MemoryStore {'with' if self._tokens else 'without'} tokens>"
