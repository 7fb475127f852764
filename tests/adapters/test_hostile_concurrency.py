"""Many callers at once while the server breaks one exchange in five.

32 threads (stdlib, urllib3) or 200 trio tasks send GETs and POSTs with
unique ids; the server breaks one exchange in five at a random point (after
reading the request without answering, inside the headers, inside the body;
reset, or closed with or without TLS close_notify), which ends its
connection.  Whatever fails, every response a caller gets must be its own
(the server echoes the id) and complete, and no POST may reach the server
twice.  Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import random
import threading
from collections import Counter

import pytest

from cfauth import OutcomeUnknown, Response, TransportFailure

from .hostile import (
    Caller,
    Close,
    Hostile,
    Outcome,
    Received,
    Send,
    Step,
    answer,
    body_id,
)

pytest.importorskip("urllib3")
pytest.importorskip("trio")

THREADS = 32
CALLS_PER_THREAD = 10
TASKS = 200
ROUNDS = 2
BROKEN_SHARE = 0.2


class RandomResets:
    """The plan: one exchange in five (``BROKEN_SHARE``) is broken at a random
    point, which ends its connection; the others are answered."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)  # noqa: S311 - a test's dice
        self.lock = threading.Lock()
        self.broken = 0

    def __call__(self, request: Received) -> list[Step]:
        with self.lock:
            r = self.random
            data = answer(request.rid, pad=r.randrange(0, 20_000))
            if r.random() >= BROKEN_SHARE:
                return [Send(data)]
            self.broken += 1
            point = r.choice(["unanswered", "headers", "body"])
            how = r.choice(["reset", "notify", "eof"])
        if point == "unanswered":  # processed, then dropped without an answer
            return [Close(how)]
        head = data.index(b"\r\n\r\n")
        cut = head // 2 if point == "headers" else head + 4 + (len(data) - head - 4) // 2
        return [Send(data[:cut]), Close(how)]


def check(
    outcomes: list[tuple[str, str, Outcome]], server: Hostile, kind: str, broken: int
) -> None:
    delivered = wrong = unknown = 0
    failures: Counter[str] = Counter()
    for method, rid, outcome in outcomes:
        if isinstance(outcome, Response):
            if outcome.status == 200 and body_id(outcome) == rid:
                delivered += 1
            else:
                wrong += 1
        else:
            assert isinstance(outcome, TransportFailure)
            failures[type(outcome).__name__] += 1
            if isinstance(outcome, OutcomeUnknown):
                unknown += 1
                assert method == "POST"
    posts_twice = sum(1 for m, rid, _ in outcomes if m == "POST" and server.processed(rid) > 1)
    gets_resent = sum(1 for m, rid, _ in outcomes if m == "GET" and server.processed(rid) > 1)
    print(
        f"\n{kind}: {len(outcomes)} calls, {server.connections} connections "
        f"({broken} exchanges broken): {delivered} delivered, {wrong} wrong answers, "
        f"failures {dict(failures)}, POSTs processed twice {posts_twice}, "
        f"GETs sent again {gets_resent}"
    )
    assert wrong == 0
    assert posts_twice == 0
    assert delivered + sum(failures.values()) == len(outcomes)
    assert delivered > len(outcomes) // 2  # most calls get through
    assert all(server.processed(rid) <= 2 for _, rid, _ in outcomes)


@pytest.mark.parametrize("kind", ["stdlib", "urllib3"])
def test_threads_under_random_resets(kind: str, hostile: Hostile, ca_file: str) -> None:
    hostile.plan = plan = RandomResets(seed=12)
    options = {"pool_maxsize": THREADS} if kind == "urllib3" else {"max_idle_per_origin": THREADS}
    caller = Caller(kind, hostile, ca_file, options)
    outcomes: list[tuple[str, str, Outcome]] = []
    lock = threading.Lock()

    def work(thread: int) -> None:
        for i in range(CALLS_PER_THREAD):
            method = "POST" if (thread + i) % 2 else "GET"
            rid = f"{kind}-{thread}-{i}"
            outcome = caller.call(method, rid, body=b"booking" if method == "POST" else None)
            with lock:
                outcomes.append((method, rid, outcome))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        caller.close()
    assert len(outcomes) == THREADS * CALLS_PER_THREAD
    assert plan.broken > 0
    check(outcomes, hostile, kind, plan.broken)


def test_trio_tasks_under_random_resets(hostile: Hostile, ca_file: str) -> None:
    hostile.plan = plan = RandomResets(seed=7)
    caller = Caller("trio", hostile, ca_file)
    assert caller._trio is not None
    outcomes: list[tuple[str, str, Outcome]] = []
    try:
        for round_ in range(ROUNDS):
            methods = ["POST" if n % 2 else "GET" for n in range(TASKS)]
            rids = [f"trio-{round_}-{n}" for n in range(TASKS)]
            requests = [
                caller.request(m, rid, body=b"booking" if m == "POST" else None)
                for m, rid in zip(methods, rids, strict=True)
            ]
            results = caller._trio.send_many(requests)
            outcomes += list(zip(methods, rids, results, strict=True))
    finally:
        caller.close()
    assert len(outcomes) == TASKS * ROUNDS
    assert plan.broken > 0
    check(outcomes, hostile, "trio", plan.broken)
