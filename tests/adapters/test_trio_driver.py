"""The trio driver over an in-memory async fake of Checkfront (no sockets).

These pin down the driver's own duties: ownership of sends, single flight
across tasks, Store before use, the lease, retries on virtual time, and
cancellation (a cancelled task never leaves the others waiting).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

import pytest
import trio
import trio.testing

from cfauth import ApiError, Response
from cfauth.stores import MemoryGrant
from cfauth.trio import Client, Driver
from cfauth_core import (
    Account,
    ApiKey,
    LocalProtocolError,
    Machine,
    OAuth2App,
    ReauthorizationRequired,
    RefreshFailed,
    Request,
    TokenSet,
)
from tests.helpers import header

NOW = 1_700_000_000.0
ORIGIN = "https://acme.checkfront.com"
TOKEN_URL = ORIGIN + "/oauth/token/"
APP = OAuth2App("client-id", "client-secret-value", "https://app.example/cb")
KEY = ApiKey("api-key", "api-secret-value")
ACCOUNT = Account.parse("acme")

Handler = Callable[[Request], Awaitable[Response]]


def expired_tokens() -> TokenSet:
    return TokenSet("AT-0", "RT-0", NOW - 1, NOW + 86400 * 10, NOW - 14001)


def fresh_tokens() -> TokenSet:
    return TokenSet("AT-0", "RT-0", NOW + 10000, NOW + 86400 * 10, NOW - 4000)


def token_response(n: int) -> Response:
    body = {"access_token": f"AT-{n}", "refresh_token": f"RT-{n}", "expires_in": 14000}
    return Response(200, [("Content-Type", "application/json")], json.dumps(body).encode())


def ok(request: Request) -> Response:
    body = json.dumps({"request": {"status": "OK"}, "auth": header(request, "Authorization")})
    return Response(200, [("Content-Type", "application/json")], body.encode())


class RecordingStore(MemoryGrant):
    """A MemoryGrant that records what happened to it, in order, in ``log``."""

    def __init__(self, tokens: TokenSet | None, log: list[str]) -> None:
        super().__init__(tokens)
        self.log = log
        self.lease_held = False

    def save(self, tokens: TokenSet, client_auth: str | None = None) -> None:
        super().save(tokens, client_auth)
        self.log.append(f"save {tokens.access_token}")

    def acquire_lease(self, timeout: float | None = None) -> None:
        super().acquire_lease(timeout)
        self.lease_held = True
        self.log.append("lease")

    def release_lease(self) -> None:
        self.lease_held = False
        self.log.append("release")
        super().release_lease()


class FakeTransport:
    """Records every request and answers with ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []

    async def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        return await self.handler(request)

    def to(self, url: str) -> list[Request]:
        return [r for r in self.requests if r.url == url]

    def api(self) -> list[Request]:
        return [r for r in self.requests if r.url != TOKEN_URL]


def run(main: Callable[[], Awaitable[None]], clock: trio.abc.Clock | None = None) -> None:
    async def guarded() -> None:
        with trio.fail_after(10):  # a hang fails the test instead of blocking it
            await main()

    trio.run(guarded, clock=clock)


def oauth_driver(
    handler: Handler, store: MemoryGrant, tokens: TokenSet | None = None
) -> tuple[Driver, FakeTransport]:
    transport = FakeTransport(handler)
    machine = Machine(ACCOUNT, APP, expired_tokens() if tokens is None else tokens)
    return Driver(machine, transport, store=store, clock=lambda: NOW), transport


def test_token_pair_call() -> None:
    async def main() -> None:
        async def handler(request: Request) -> Response:
            return ok(request)

        transport = FakeTransport(handler)
        driver = Driver(Machine(ACCOUNT, KEY), transport, clock=lambda: NOW)
        response = await driver.request("GET", "item", params={"start_date": "20240101"})
        assert response.status == 200
        assert response.url == ORIGIN + "/api/3.0/item?start_date=20240101"
        [request] = transport.requests
        assert request.url == response.url
        assert (header(request, "Authorization") or "").startswith("Basic ")
        assert response.json()["auth"] == header(request, "Authorization")
        assert driver.machine.calls_in_progress == 0

    run(main)


def test_200_tasks_share_one_refresh_and_store_comes_first() -> None:
    async def main() -> None:
        log: list[str] = []
        store = RecordingStore(expired_tokens(), log)

        async def handler(request: Request) -> Response:
            if request.url == TOKEN_URL:
                # Every task is parked inside the machine before the answer.
                await trio.testing.wait_all_tasks_blocked()
                log.append(f"refresh with {calls()} calls waiting")
                return token_response(1)
            auth = header(request, "Authorization")
            log.append(f"send {auth}")
            stored = store.load()
            assert stored is not None
            assert f"Bearer {stored.access_token}" == auth
            return ok(request)

        driver, transport = oauth_driver(handler, store)

        def calls() -> int:
            return driver.machine.calls_in_progress

        results: list[Response] = []

        async def one() -> None:
            results.append(await driver.request("GET", "booking/index"))

        async with trio.open_nursery() as nursery:
            for _ in range(200):
                nursery.start_soon(one)

        assert len(transport.to(TOKEN_URL)) == 1
        assert len(results) == 200
        assert all(r.status == 200 and r.json()["auth"] == "Bearer AT-1" for r in results)
        assert len(transport.api()) == 200
        # The lease is released in a worker thread, so sends may overtake it.
        assert log[:3] == ["lease", "refresh with 200 calls waiting", "save AT-1"]
        assert sorted(log[3:]) == ["release"] + ["send Bearer AT-1"] * 200
        assert not store.lease_held
        assert calls() == 0

    run(main)


def test_failed_refresh_fails_every_waiter_and_the_next_call_refreshes() -> None:
    async def main() -> None:
        store = RecordingStore(expired_tokens(), [])
        answers = [Response(500, [], b"oops"), token_response(1)]

        async def handler(request: Request) -> Response:
            if request.url == TOKEN_URL:
                await trio.testing.wait_all_tasks_blocked()
                return answers.pop(0)
            return ok(request)

        driver, transport = oauth_driver(handler, store)
        errors: list[BaseException] = []

        async def one() -> None:
            with pytest.raises(RefreshFailed) as caught:
                await driver.request("GET", "booking/index")
            errors.append(caught.value)

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(one)

        assert len(errors) == 10
        assert all(e is errors[0] for e in errors)
        assert "500" in str(errors[0])
        assert transport.api() == []
        assert not store.lease_held
        assert store.load() == expired_tokens()

        response = await driver.request("GET", "booking/index")
        assert response.json()["auth"] == "Bearer AT-1"
        assert len(transport.to(TOKEN_URL)) == 2
        stored = store.load()
        assert stored is not None
        assert stored.access_token == "AT-1"

    run(main)


def test_retry_after_is_honoured_on_virtual_time() -> None:
    async def main() -> None:
        seen: list[float] = []

        async def handler(request: Request) -> Response:
            seen.append(trio.current_time())
            if len(seen) == 1:
                return Response(429, [("Retry-After", "7")], b"slow down")
            return ok(request)

        transport = FakeTransport(handler)
        driver = Driver(Machine(ACCOUNT, KEY), transport, clock=lambda: NOW + trio.current_time())
        started = trio.current_time()
        response = await driver.request("GET", "item")
        assert response.status == 200
        assert [t - started for t in seen] == [0.0, 7.0]
        assert trio.current_time() - started == 7.0

    run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_cancelled_retry_wait_ends_the_call() -> None:
    async def main() -> None:
        async def handler(request: Request) -> Response:
            return Response(429, [("Retry-After", "60")], b"")

        transport = FakeTransport(handler)
        driver = Driver(Machine(ACCOUNT, KEY), transport, clock=lambda: NOW + trio.current_time())
        with trio.move_on_after(5) as scope:
            await driver.request("GET", "item")
        assert scope.cancelled_caught
        assert len(transport.requests) == 1
        assert driver.machine.calls_in_progress == 0

    run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_cancelling_the_refresher_fails_the_waiters_and_the_next_call_refreshes() -> None:
    async def main() -> None:
        store = RecordingStore(expired_tokens(), [])
        refresh_started = trio.Event()
        refresh_cancelled = trio.Event()

        async def handler(request: Request) -> Response:
            if request.url == TOKEN_URL:
                if len(transport.to(TOKEN_URL)) == 1:
                    refresh_started.set()
                    try:
                        await trio.sleep_forever()
                    finally:
                        refresh_cancelled.set()
                return token_response(1)
            return ok(request)

        driver, transport = oauth_driver(handler, store)
        refresher = trio.CancelScope()
        errors: list[BaseException] = []

        async def refresh_then_cancelled() -> None:
            with refresher:
                await driver.request("GET", "booking/index")

        async def waiter() -> None:
            with pytest.raises(RefreshFailed) as caught:
                await driver.request("GET", "booking/index")
            errors.append(caught.value)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(refresh_then_cancelled)
            await refresh_started.wait()  # (the lease is taken in a thread, unseen by trio)
            assert store.lease_held
            for _ in range(3):
                nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert driver.machine.calls_in_progress == 4
            refresher.cancel()

        assert refresher.cancelled_caught
        assert refresh_cancelled.is_set()
        assert len(errors) == 3
        assert "cancelled" in str(errors[0])
        assert driver.machine.calls_in_progress == 0
        assert not store.lease_held

        response = await driver.request("GET", "booking/index")
        assert response.json()["auth"] == "Bearer AT-1"
        assert len(transport.to(TOKEN_URL)) == 2

    run(main)


def test_cancelling_a_waiting_call_removes_it() -> None:
    async def main() -> None:
        store = RecordingStore(expired_tokens(), [])
        go = trio.Event()

        async def handler(request: Request) -> Response:
            if request.url == TOKEN_URL:
                await go.wait()
                return token_response(1)
            return ok(request)

        driver, transport = oauth_driver(handler, store)
        waiter = trio.CancelScope()
        results: list[Response] = []

        async def refresher() -> None:
            results.append(await driver.request("GET", "booking/index"))

        async def cancelled_waiter() -> None:
            with waiter:
                await driver.request("GET", "item")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(refresher)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(cancelled_waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert driver.machine.calls_in_progress == 2
            waiter.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert waiter.cancelled_caught
            assert driver.machine.calls_in_progress == 1
            go.set()

        assert [r.json()["auth"] for r in results] == ["Bearer AT-1"]
        assert [r.url for r in transport.api()] == [ORIGIN + "/api/3.0/booking/index"]
        assert driver.machine.calls_in_progress == 0

    run(main)


def test_cancelling_a_call_mid_send_does_not_wedge_the_machine() -> None:
    async def main() -> None:
        send_cancelled = trio.Event()

        async def handler(request: Request) -> Response:
            if request.url.endswith("/slow"):
                try:
                    await trio.sleep_forever()
                finally:
                    send_cancelled.set()
            return ok(request)

        transport = FakeTransport(handler)
        driver = Driver(Machine(ACCOUNT, KEY), transport, clock=lambda: NOW)
        slow = trio.CancelScope()

        async def slow_call() -> None:
            with slow:
                await driver.request("GET", "slow")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_call)
            await trio.testing.wait_all_tasks_blocked()
            assert driver.machine.calls_in_progress == 1
            response = await driver.request("GET", "item")  # runs beside it
            assert response.status == 200
            slow.cancel()

        assert slow.cancelled_caught
        assert send_cancelled.is_set()
        assert driver.machine.calls_in_progress == 0
        assert (await driver.request("GET", "item")).status == 200

    run(main)


def test_cancelling_an_oauth_call_mid_send_keeps_refreshing_possible() -> None:
    async def main() -> None:
        store = RecordingStore(fresh_tokens(), [])

        async def handler(request: Request) -> Response:
            if request.url == TOKEN_URL:
                return token_response(1)
            if request.url.endswith("/slow"):
                await trio.sleep_forever()
            if header(request, "Authorization") == "Bearer AT-0":
                return Response(401, [("WWW-Authenticate", 'Bearer error="invalid_token"')], b"")
            return ok(request)

        driver, transport = oauth_driver(handler, store, fresh_tokens())
        with trio.move_on_after(1) as scope:
            await driver.request("GET", "slow")
        assert scope.cancelled_caught
        # The rejected token triggers a refresh: nothing is stuck from the cancelled call.
        response = await driver.request("GET", "item")
        assert response.json()["auth"] == "Bearer AT-1"
        assert len(transport.to(TOKEN_URL)) == 1
        assert driver.machine.calls_in_progress == 0
        assert not store.lease_held

    run(main)


def test_login_and_tick() -> None:
    async def main() -> None:
        log: list[str] = []
        store = RecordingStore(None, log)
        now = [NOW]
        exchanged: list[dict[str, list[str]]] = []

        async def handler(request: Request) -> Response:
            assert request.url == TOKEN_URL
            assert request.body is not None
            exchanged.append(parse_qs(request.body.decode()))
            return token_response(len(exchanged))

        transport = FakeTransport(handler)
        machine = Machine(ACCOUNT, APP)
        driver = Driver(machine, transport, store=store, clock=lambda: now[0])
        state, verifier = "s" * 22, "v" * 43
        url = driver.authorize(state, verifier)
        assert url.startswith(ORIGIN + "/oauth/?")
        assert f"state={state}" in url
        await driver.complete_authorization(f"https://app.example/cb?code=abc&state={state}")
        assert exchanged[0]["grant_type"] == ["authorization_code"]
        assert exchanged[0]["code_verifier"] == [verifier]
        assert log == ["save AT-1"]

        await driver.tick()  # nothing due
        assert len(exchanged) == 1
        now[0] = NOW + 14000 - 10  # within the leeway: tick refreshes
        await driver.tick()
        assert exchanged[1]["grant_type"] == ["refresh_token"]
        assert exchanged[1]["refresh_token"] == ["RT-1"]
        assert log[1:] == ["lease", "save AT-2", "release"]

    run(main)


def test_client_headers_checks_and_close() -> None:
    async def main() -> None:
        async def handler(request: Request) -> Response:
            if request.url.endswith("/broken"):
                body = {"error": {"id": "bad", "title": "no such item"}}
                return Response(404, [], json.dumps(body).encode())
            return ok(request)

        transport = FakeTransport(handler)
        driver = Driver(Machine(ACCOUNT, KEY), transport, clock=lambda: NOW)
        async with Client(driver, on_behalf="3", forwarded_for="203.0.113.9") as client:
            await client.get("item")
            await client.post("booking/create", data={"a": "1"}, on_behalf="off")
            with pytest.raises(ApiError) as caught:
                await client.get("broken")
            assert caught.value.status == 404
            unchecked = await client.delete("broken", check=False)
            assert unchecked.status == 404
        first, second = transport.requests[:2]
        assert header(first, "X-On-Behalf") == "3"
        assert header(first, "X-Forwarded-For") == "203.0.113.9"
        assert header(second, "X-On-Behalf") == "off"
        assert second.method == "POST"
        assert second.body == b"a=1"
        with pytest.raises(LocalProtocolError, match="closed"):
            await client.put("item")

    run(main)


def test_a_failed_save_is_retried_before_the_next_refresh_reads_the_store() -> None:
    class FlakyStore(MemoryGrant):
        def __init__(self, tokens: TokenSet) -> None:
            super().__init__(tokens)
            self.fail_saves = 1

        def save(self, tokens: TokenSet, client_auth: str | None = None) -> None:
            if self.fail_saves:
                self.fail_saves -= 1
                raise OSError("disk full")
            super().save(tokens, client_auth)

    now = [NOW]
    issued = [0]

    async def handler(request: Request) -> Response:
        if request.url == TOKEN_URL:
            issued[0] += 1
            return token_response(issued[0])
        return ok(request)

    store = FlakyStore(expired_tokens())

    async def main() -> None:
        transport = FakeTransport(handler)
        machine = Machine(ACCOUNT, APP, expired_tokens())
        driver = Driver(machine, transport, store=store, clock=lambda: now[0])
        assert (await driver.request("GET", "item")).status == 200  # the save failed
        stale = store.load()
        assert stale is not None
        assert stale.refresh_token == "RT-0"
        now[0] += 14_000
        assert (await driver.request("GET", "item")).status == 200
        refreshes = [r.body for r in transport.to(TOKEN_URL)]
        assert refreshes == [
            b"grant_type=refresh_token&refresh_token=RT-0",
            b"grant_type=refresh_token&refresh_token=RT-1",
        ]
        assert store.load() == machine.tokens

    run(main)


def test_the_save_runs_off_the_event_loop_and_every_send_waits_for_it() -> None:
    import threading

    class SlowStore(RecordingStore):
        """A save that blocks its thread until the test lets it finish."""

        def __init__(self) -> None:
            super().__init__(expired_tokens(), [])
            self.started = threading.Event()
            self.finish = threading.Event()
            self.threads: list[threading.Thread] = []

        def save(self, tokens: TokenSet, client_auth: str | None = None) -> None:
            self.threads.append(threading.current_thread())
            self.started.set()
            assert self.finish.wait(10), "the event loop was blocked by the save"
            super().save(tokens, client_auth)

    async def main() -> None:
        store = SlowStore()

        async def handler(request: Request) -> Response:
            if request.url == TOKEN_URL:
                return token_response(1)
            stored = store.load()
            assert stored is not None
            assert header(request, "Authorization") == f"Bearer {stored.access_token}"
            return ok(request)

        driver, transport = oauth_driver(handler, store)
        results: list[Response] = []

        async def one() -> None:
            results.append(await driver.request("GET", "booking/index"))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(one)
            await trio.to_thread.run_sync(store.started.wait)
            # The save is blocked in its thread, yet the loop runs: every task
            # is parked, and nothing went out with the unsaved tokens.
            await trio.testing.wait_all_tasks_blocked()
            assert transport.api() == []
            async with trio.open_nursery() as late:  # a new call waits as well
                late.start_soon(one)
                await trio.testing.wait_all_tasks_blocked()
                assert transport.api() == []
                store.finish.set()
        assert len(results) == 21
        assert all(r.json()["auth"] == "Bearer AT-1" for r in results)
        assert len(transport.to(TOKEN_URL)) == 1
        assert store.threads
        assert threading.main_thread() not in store.threads

    run(main)


def test_logout_forgets_the_grant_and_deletes_the_stored_record() -> None:
    async def main() -> None:
        store = RecordingStore(fresh_tokens(), [])

        async def handler(request: Request) -> Response:
            return ok(request)

        driver, _ = oauth_driver(handler, store, fresh_tokens())
        assert (await driver.request("GET", "item")).status == 200
        driver.logout()
        assert store.load() is None
        assert driver.machine.tokens is None
        with pytest.raises(ReauthorizationRequired):
            await driver.request("GET", "item")

    run(main)


def test_client_aclose_closes_its_transport_even_when_the_driver_fails_to_close() -> None:
    """As the sync client's ``close``: the transport is closed in a ``finally``."""
    closed: list[str] = []

    class BrokenDriver(Driver):
        async def aclose(self) -> None:
            raise RuntimeError("driver close failed")

    class OwnedTransport:
        async def aclose(self) -> None:
            closed.append("transport")

    async def main() -> None:
        async def handler(request: Request) -> Response:
            return ok(request)

        driver = BrokenDriver(Machine(ACCOUNT, KEY), FakeTransport(handler), clock=lambda: NOW)
        client = Client(driver, transport=OwnedTransport())  # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match="driver close failed"):
            await client.aclose()
        assert closed == ["transport"]

    run(main)
