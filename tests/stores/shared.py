"""What the store tests share with their worker processes: a virtual clock
in a file (the sandbox and every worker read the same time) and how a worker
is started."""

from __future__ import annotations

import json
import mmap
import os
import struct
import subprocess
import sys
import threading

from cfauth.sandbox import Sandbox
from cfauth_core import TokenSet

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FileClock:
    """A virtual clock whose time is 8 bytes in a file, mapped in every process."""

    def __init__(self, path: str, start: float | None = None) -> None:
        if start is not None:
            with open(path, "wb") as file:
                file.write(struct.pack("d", start))
        self._file = open(path, "r+b")  # noqa: SIM115 - kept mapped for the clock's life
        self._map = mmap.mmap(self._file.fileno(), 8)
        self._lock = threading.Lock()

    def now(self) -> float:
        return float(struct.unpack("d", self._map[:8])[0])

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._map[:8] = struct.pack("d", self.now() + seconds)

    def set(self, timestamp: float) -> None:
        with self._lock:
            self._map[:8] = struct.pack("d", timestamp)

    def close(self) -> None:
        self._map.close()
        self._file.close()


def issue(sandbox: Sandbox, account: str = "acme") -> TokenSet:
    """A fresh token pair minted by the sandbox, as the driver would store it."""
    now = sandbox.clock.now()
    answer = sandbox.issue_tokens(account)
    return TokenSet(
        answer["access_token"],
        answer["refresh_token"],
        now + answer["expires_in"],
        now + 14 * 86400,
        now,
    )


def worker(sandbox: Sandbox, clock_path: str, store: str, *args: str) -> subprocess.Popen[str]:
    """Start ``python -m tests.stores.worker`` against ``sandbox`` and ``store``."""
    account = sandbox.account("acme")
    config = {
        "store": store,
        "clock": clock_path,
        "ca": sandbox.ca_file,
        "resolve": sandbox.resolve,
        "client_id": account.client_id,
        "client_secret": account.client_secret,
        "redirect_uri": account.redirect_uri,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.stores.worker", json.dumps(config), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
