"""Grant store benchmarks.

    python3 bench/stores.py            # the figures (about a minute)
    python3 bench/stores.py --smoke    # a quick run that checks the harness works

1. Per-call overhead: the blocking driver over an in-memory transport (no
   network), fresh tokens, with a MemoryGrant and with an SqliteStore or
   FileStore grant: calls per second (median of 25 short batches, the order rotating) and the
   store operations made per call (the goal: none).
2. Refresh storm: N grants whose access tokens all expired, in one store
   (SQLite, PostgreSQL), 4 worker processes ticking all of them at once through
   the blocking driver against the sandbox: wall time until all are refreshed,
   token requests (must equal N) and store operations per refresh.

Run from the repository root with the project's virtual environment.  It
starts its own sandbox and a throwaway PostgreSQL server (tests/stores/postgres.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cfauth import Response  # noqa: E402
from cfauth.sandbox import Sandbox  # noqa: E402
from cfauth.stores import (  # noqa: E402
    FileStore,
    Grant,
    GrantKey,
    GrantRecord,
    MemoryGrant,
    PostgresStore,
    SqliteStore,
)
from cfauth.sync import Driver  # noqa: E402
from cfauth_core import Account, Machine, OAuth2App, Request, TokenSet  # noqa: E402
from tests.stores.postgres import running_postgres  # noqa: E402
from tests.stores.shared import FileClock, issue, worker  # noqa: E402
from tests.stores.worker import count_operations  # noqa: E402

APP = OAuth2App("client-1", "secret-1", "https://example.com/cb")
BODY = b'{"request": {"status": "OK"}, "booking/index": []}'


def _transport(request: Request) -> Response:
    return Response(200, [("Content-Type", "application/json")], BODY, request.url)


def per_call(calls: int, folder: str) -> dict[str, Any]:
    now = time.time()
    tokens = TokenSet("access-1", "refresh-1", now + 14000, now + 86400 * 14, now)
    key = GrantKey("acme", APP.client_id)
    sqlite = SqliteStore(os.path.join(folder, "grants.sqlite3"))
    files = FileStore(os.path.join(folder, "grants.json"))
    grants: dict[str, Grant] = {"memory": MemoryGrant(tokens, key=key)}
    for name, store in (("sqlite", sqlite), ("file", files)):
        grant = store.grant(key)
        grant.save(tokens)
        grants[name] = grant
    operations = {name: count_operations(grant.store) for name, grant in grants.items()}
    drivers = {
        name: Driver(Machine(Account.parse("acme"), APP, tokens), _transport, store=grant)
        for name, grant in grants.items()
    }
    times: dict[str, list[float]] = {name: [] for name in drivers}
    order = list(drivers)
    batch = calls // 5
    for repeat in range(25):  # short batches, the order rotating: the machine is shared
        for name in order[repeat % 3 :] + order[: repeat % 3]:
            driver = drivers[name]
            start = time.perf_counter()
            for _ in range(batch):
                driver.request("GET", "booking/index")
            times[name].append(batch / (time.perf_counter() - start))
    sqlite.close()
    files.close()
    result = {
        name: {
            "calls_per_s": round(statistics.median(rates)),
            "store_ops_per_call": operations[name][0] / (25 * batch),
        }
        for name, rates in times.items()
    }
    for name in ("sqlite", "file"):
        result[name]["ratio_to_memory"] = round(
            result[name]["calls_per_s"] / result["memory"]["calls_per_s"], 3
        )
    return result


def storm(
    kind: str, url: str, grants: int, folder: str, seed: Callable[[list[GrantRecord]], None]
) -> dict[str, Any]:
    clock_path = os.path.join(folder, f"clock-{kind}")
    clock = FileClock(clock_path, start=1_800_000_000.0)
    with Sandbox(clock=clock) as sandbox:
        client_id = sandbox.account("acme").client_id
        now = clock.now()
        seed(
            [
                GrantRecord(
                    GrantKey("acme", client_id, f"g{n:04}"),
                    "https://acme.checkfront.com",
                    tokens=issue(sandbox),
                    updated_at=now,
                )
                for n in range(grants)
            ]
        )
        clock.advance(14001)
        sandbox.clear_requests()
        processes = [worker(sandbox, clock_path, url, "grants", str(n)) for n in range(4)]
        try:
            for process in processes:
                assert process.stdout is not None
                line = process.stdout.readline().strip()
                assert line == "ready", process.stderr.read() if process.stderr else line
            start = time.perf_counter()
            for process in processes:
                assert process.stdin is not None
                process.stdin.write("go\n")
                process.stdin.flush()
            done = [p.stdout.readline().split() for p in processes if p.stdout is not None]
            wall = time.perf_counter() - start
        finally:
            for process in processes:
                if process.stdin is not None:
                    process.stdin.close()
                process.wait(60)
                for pipe in (process.stdout, process.stderr):
                    if pipe is not None:
                        pipe.close()
        statuses = [r.status for r in sandbox.token_requests("refresh_token")]
    clock.close()
    errors = sum(int(line[1]) for line in done)
    operations = sum(int(line[3]) for line in done)
    return {
        "grants": grants,
        "processes": 4,
        "wall_s": round(wall, 2),
        "token_requests": len(statuses),
        "refused": sum(status != 200 for status in statuses),
        "call_errors": errors,
        "store_ops_per_refresh": round(operations / max(len(statuses), 1), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a small, quick run")
    args = parser.parse_args()
    calls, grants = (2000, 40) if args.smoke else (20000, 1000)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cfauth-bench-") as folder:
        os.chmod(folder, 0o700)
        results["per_call"] = per_call(calls, folder)
        sqlite_path = os.path.join(folder, "storm.sqlite3")

        def seed_sqlite(records: list[GrantRecord]) -> None:
            with SqliteStore(sqlite_path) as store:
                for record in records:
                    store.save(record)

        results["storm_sqlite"] = storm("sqlite", sqlite_path, grants, folder, seed_sqlite)
        with running_postgres() as url:

            def seed_postgres(records: list[GrantRecord]) -> None:
                with PostgresStore(url) as store:
                    store.save_many(records)

            results["storm_postgres"] = storm("postgres", url, grants, folder, seed_postgres)
    print(json.dumps(results, indent=2))
    if not args.smoke:
        os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
        with open(os.path.join(ROOT, "bench", "results", "stores.json"), "w") as file:
            json.dump(results, file, indent=2)
    for name in ("storm_sqlite", "storm_postgres"):
        storm_result = results[name]
        if storm_result["token_requests"] != grants or storm_result["call_errors"]:
            print(f"{name}: expected {grants} token requests and no errors", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
