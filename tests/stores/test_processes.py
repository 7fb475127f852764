"""Real processes sharing one store, against the sandbox: cross-process single
flight, many grants, crashes in the middle of a refresh, and a migration that
outlives the process that saw it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from cfauth.sandbox import Sandbox
from cfauth.stores import GrantKey, GrantRecord, GrantStore, PostgresStore, open_store

from .shared import FileClock, issue, worker

ACCESS_LIFETIME = 14000


@pytest.fixture
def clock_path(private_dir: str) -> str:
    return os.path.join(private_dir, "clock")


@pytest.fixture
def sandbox(clock_path: str) -> Iterator[Sandbox]:
    clock = FileClock(clock_path, start=1_800_000_000.0)
    with Sandbox(clock=clock) as running:
        yield running
    clock.close()


def store_url(kind: str, private_dir: str, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return os.path.join(private_dir, "grants.sqlite3")
    if kind == "file":
        return os.path.join(private_dir, "grants.json")
    url: str = request.getfixturevalue("postgres_url")
    return url


def seed(sandbox: Sandbox, store: GrantStore) -> GrantKey:
    key = GrantKey.for_account("acme", sandbox.account("acme").client_id)
    store.grant(key).save(issue(sandbox))
    return key


def answer(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line:
        assert process.stderr is not None
        process.wait(10)
        raise AssertionError(f"worker died ({process.returncode}): {process.stderr.read()[-3000:]}")
    return line


def finish(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        assert process.stdin is not None
        if not process.stdin.closed:
            process.stdin.close()
    for process in processes:
        process.wait(30)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def refreshes(sandbox: Sandbox) -> list[int]:
    return [r.status for r in sandbox.token_requests("refresh_token")]


@pytest.mark.parametrize(("kind", "count"), [("sqlite", 8), ("file", 8), ("postgres", 4)])
def test_many_processes_one_grant_refresh_once_per_expiry(
    sandbox: Sandbox,
    clock_path: str,
    private_dir: str,
    request: pytest.FixtureRequest,
    kind: str,
    count: int,
) -> None:
    url = store_url(kind, private_dir, request)
    with open_store(url) as store:
        seed(sandbox, store)
    processes = [worker(sandbox, clock_path, url, "serve") for _ in range(count)]
    try:
        assert [answer(p) for p in processes] == ["ready"] * count
        rounds = 3
        for expiry in range(rounds + 1):
            if expiry:  # past the access token's expiry: every process's machine wants a refresh
                sandbox.clock.advance(ACCESS_LIFETIME + 1)
            for process in processes:
                assert process.stdin is not None
                process.stdin.write("call 3\n")
                process.stdin.flush()
            assert [answer(p) for p in processes] == ["ok"] * count
            assert refreshes(sandbox) == [200] * expiry  # exactly one per expiry, none refused
        api = [r for r in sandbox.requests if r.path.startswith("/api/")]
        assert len(api) == count * 3 * (rounds + 1)
        assert all(r.status == 200 for r in api)
    finally:
        finish(processes)


def test_many_grants_on_postgres_four_processes_refresh_each_exactly_once(
    sandbox: Sandbox, clock_path: str, postgres_url: str, pg_table: str
) -> None:
    grants = 1000
    client_id = sandbox.account("acme").client_id
    url = f"{postgres_url}?options=-csearch_path%3D{pg_table}"
    with PostgresStore(postgres_url) as admin, admin._pool.connection() as conn:
        conn.execute(f"CREATE SCHEMA {pg_table}")
    with PostgresStore(url) as store:
        now = sandbox.clock.now()
        store.save_many(
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
        assert len(store.grants()) == grants
    sandbox.clock.advance(ACCESS_LIFETIME + 1)
    sandbox.clear_requests()
    processes = [worker(sandbox, clock_path, url, "grants", str(n)) for n in range(4)]
    try:
        assert [answer(p) for p in processes] == ["ready"] * 4
        for process in processes:  # all at once
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        done = [answer(p).split() for p in processes]
        assert [line[:3] for line in done] == [["done", "0", str(grants)]] * 4
    finally:
        finish(processes)
    statuses = refreshes(sandbox)
    assert len(statuses) == grants
    assert set(statuses) == {200}
    with PostgresStore(url) as store:
        fresh = [store.load(key) for key in store.grants()]
    now = sandbox.clock.now()
    assert all(r is not None and r.tokens and r.tokens.expires_at > now for r in fresh)


CRASH_POINTS = {
    "file": [
        "before_request",
        "after_response",
        "mid_write",
        "before_rename",
        "after_rename",
        "after_save",
    ],
    "sqlite": [
        "before_request",
        "after_response",
        "mid_statement_1",
        "mid_statement_40",
        "before_commit",
        "after_save",
    ],
}


@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_a_process_killed_during_a_refresh_leaves_a_complete_record(
    sandbox: Sandbox,
    clock_path: str,
    private_dir: str,
    request: pytest.FixtureRequest,
    kind: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = store_url(kind, private_dir, request)
    outcomes: dict[str, int] = {"old record, next process refreshed": 0}
    lost = 0
    runs = 0
    for repeat in range(2):
        for point in CRASH_POINTS[kind]:
            runs += 1
            with open_store(url) as store:
                key = seed(sandbox, store)
                before = store.load(key)
            assert before is not None
            assert before.tokens is not None
            sandbox.clock.advance(ACCESS_LIFETIME + 1)
            sandbox.clear_requests()
            process = worker(sandbox, clock_path, url, "crash", point)
            process.wait(30)
            finish([process])
            assert process.returncode == -9, (point, repeat)
            rotated = refreshes(sandbox) == [200]
            with open_store(url) as store:  # a complete record: old or new, never torn
                after = store.load(key)
            assert after is not None
            assert after.tokens is not None
            kept_old = after.tokens == before.tokens
            assert kept_old or after.tokens.updated_at > before.tokens.updated_at
            # The next process: one call, through the same store.
            sandbox.clear_requests()
            follower = worker(sandbox, clock_path, url, "serve")
            assert answer(follower) == "ready"
            assert follower.stdin is not None
            follower.stdin.write("call 1\n")
            follower.stdin.flush()
            result = answer(follower)
            finish([follower])
            if rotated and kept_old:  # killed between the server's rotation and the save
                assert result == "error ReauthorizationRequired", point
                lost += 1
            else:
                assert result == "ok", point
                label = f"new record ({point})"
                if kept_old:
                    label = "old record, next process refreshed"
                outcomes[label] = outcomes.get(label, 0) + 1
    assert runs >= 12
    with capsys.disabled():
        print(f"\n{kind}: {runs} kills; {lost} between rotation and save; {outcomes}")
    assert lost == 2 * sum(
        p in ("after_response", "mid_write", "before_rename", "before_commit")
        or p.startswith("mid_statement")
        for p in CRASH_POINTS[kind]
    )


def test_a_migration_seen_by_one_process_sends_the_next_straight_to_the_new_host(
    sandbox: Sandbox, clock_path: str, private_dir: str
) -> None:
    url = os.path.join(private_dir, "grants.sqlite3")
    with open_store(url) as store:
        key = seed(sandbox, store)
    sandbox.migrate("acme")
    first = worker(sandbox, clock_path, url, "serve")
    try:
        assert answer(first) == "ready"
        assert first.stdin is not None
        first.stdin.write("call 1\n")
        first.stdin.flush()
        assert answer(first) == "ok"
    finally:
        finish([first])
    assert [r.status for r in sandbox.requests] == [301, 200]
    with open_store(url) as store:
        stored = store.load(key)
    assert stored is not None
    assert stored.origin == "https://acme.manage.na1.bookingplatform.app"
    sandbox.clear_requests()
    second = worker(sandbox, clock_path, url, "serve")
    try:
        assert answer(second) == "ready"
        assert second.stdin is not None
        second.stdin.write("call 1\n")
        second.stdin.flush()
        assert answer(second) == "ok"
    finally:
        finish([second])
    requests: list[Any] = sandbox.requests
    assert [(r.host, r.status) for r in requests] == [("acme.manage.na1.bookingplatform.app", 200)]
