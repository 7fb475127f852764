"""Quick figures for the core: import time and one call/send/response/deliver cycle.

    python bench/core_cycle.py [--cycles N] [--repeats R]

Prints the median of R repeats.  The full benchmark harness (drivers, peers,
ratios) is separate; this script only keeps the core's own figures honest.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from cfauth_core import (
    Account,
    ApiKey,
    CallRequested,
    Machine,
    OAuth2App,
    ResponseReceived,
    Send,
    TokenSet,
)


def import_ms(repeats: int) -> float:
    """Median cumulative ``-X importtime`` of ``import cfauth_core``, in ms (bytecode cached)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": ""}
    subprocess.run([sys.executable, "-c", "import cfauth_core"], check=True, env=env)
    figures = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import cfauth_core"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stderr
        last = [line for line in out.splitlines() if line.rstrip().endswith("| cfauth_core")][-1]
        figures.append(int(last.split("|")[1]) / 1000)
    return statistics.median(figures)


def cycle_ns(machine: Machine, cycles: int, repeats: int) -> float:
    """Median ns of CallRequested -> Send -> ResponseReceived(200) -> Deliver."""
    headers = [("Content-Type", "application/json")]
    body = b'{"request": {"status": "OK"}}'
    results = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(cycles):
            actions = machine.handle(CallRequested(now=1000.0, method="GET", path="booking/index"))
            send = actions[0]
            assert isinstance(send, Send)
            machine.handle(
                ResponseReceived(
                    now=1000.0, request_id=send.request_id, status=200, headers=headers, body=body
                )
            )
        results.append((time.perf_counter_ns() - start) / cycles)
    return statistics.median(results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    account = Account.parse("acme")
    tokens = TokenSet("a" * 40, "r" * 40, 1e12, 1e12, 0.0)
    bearer = Machine(account, OAuth2App("id", "secret", "https://app.example/cb"), tokens)
    basic = Machine(account, ApiKey("key", "secret"))
    print(f"import cfauth_core (median of {args.repeats}): {import_ms(args.repeats):.1f} ms")
    print(f"cycle, bearer: {cycle_ns(bearer, args.cycles, args.repeats):,.0f} ns")
    print(f"cycle, basic:  {cycle_ns(basic, args.cycles, args.repeats):,.0f} ns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
