"""The blocking driver over an in-memory fake of Checkfront (no sockets).

The end-to-end tests over real TLS against the sandbox live elsewhere; these
pin down the driver's own duties: ownership of sends, single flight across
threads, Store before use, the lease, retries, interruption.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from cfauth import ApiError, Response
from cfauth.stores import MemoryGrant
from cfauth.sync import Client, Driver
from cfauth_core import (
    Account,
    ApiKey,
    CredentialsRejected,
    LocalProtocolError,
    Machine,
    NetworkError,
    OAuth2App,
    RateLimited,
    ReauthorizationRequired,
    RefreshFailed,
    Request,
    TokenSet,
)

ORIGIN = "https://acme.checkfront.com"
APP = OAuth2App("client-id", "client-secret-value", "https://app.example/cb")


class FakeCheckfront:
    """Just enough of Checkfront: rotating refresh, bearer checks, a log."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.generation = 0
        self.valid_access = {"access-0"}
        self.valid_refresh = {"refresh-0"}
        self.log: list[Request] = []
        self.gate: threading.Event | None = None  # holds refresh responses back
        self.refresh_status = 200
        self.store: MemoryGrant | None = None
        self.stored_when_used: list[bool] = []

    def __call__(self, request: Request) -> Response:
        with self.lock:
            self.log.append(request)
        auth = dict(request.headers).get("Authorization", "")
        path = urlsplit(request.url).path
        if path == "/oauth/token/":
            if self.gate is not None:
                self.gate.wait(10)
            return self.token(request)
        if auth.startswith("Bearer "):
            token = auth[len("Bearer ") :]
            if self.store is not None:
                stored = self.store.load()
                self.stored_when_used.append(stored is not None and stored.access_token == token)
            if token not in self.valid_access:
                return Response(401, [("WWW-Authenticate", 'Bearer error="invalid_token"')], b"")
        body = json.dumps({"request": {"status": "OK", "resource": path}, "path": path})
        return Response(200, [("Content-Type", "application/json")], body.encode())

    def token(self, request: Request) -> Response:
        assert request.body is not None
        form = parse_qs(request.body.decode())
        with self.lock:
            if self.refresh_status != 200:
                return Response(self.refresh_status, [], b"oops")
            if form["refresh_token"][0] not in self.valid_refresh:
                error = {"error": "invalid_grant", "error_description": "Invalid refresh token"}
                return Response(400, [], json.dumps(error).encode())
            self.generation += 1
            access, refresh = f"access-{self.generation}", f"refresh-{self.generation}"
            self.valid_access = {access}
            self.valid_refresh = {refresh}
        body: dict[str, object] = {
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": 14000,
        }
        return Response(200, [], json.dumps(body).encode())


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def expired_tokens(now: float) -> TokenSet:
    return TokenSet("access-0", "refresh-0", now - 1, now + 86400 * 10, now - 14001)


def fresh_tokens(now: float) -> TokenSet:
    return TokenSet("access-0", "refresh-0", now + 10000, now + 86400 * 10, now - 4000)


@pytest.fixture
def server() -> Iterator[FakeCheckfront]:
    fake = FakeCheckfront()
    yield fake
    if fake.gate is not None:
        fake.gate.set()


def oauth_driver(
    server: FakeCheckfront, tokens: TokenSet, clock: Clock, store: MemoryGrant | None = None
) -> Driver:
    machine = Machine(Account.parse("acme"), APP, tokens)
    return Driver(machine, server, store=store, clock=clock, sleep=clock.sleep)


def test_token_pair_call_and_api_error(server: FakeCheckfront) -> None:
    driver = Driver(Machine(Account.parse("acme"), ApiKey("key", "secret")), server)
    client = Client(driver, on_behalf="off", forwarded_for="203.0.113.9")
    response = client.get("booking/index", params={"status_id": "PAID"})
    assert response.status == 200
    assert response.json()["path"] == "/api/3.0/booking/index"
    sent = dict(server.log[-1].headers)
    assert sent["Authorization"].startswith("Basic ")
    assert sent["X-On-Behalf"] == "off"
    assert sent["X-Forwarded-For"] == "203.0.113.9"
    assert server.log[-1].url == ORIGIN + "/api/3.0/booking/index?status_id=PAID"


def test_api_error_object_raises(server: FakeCheckfront) -> None:
    def erroring(request: Request) -> Response:
        body = {"error": {"id": "E404", "title": "Booking not found"}}
        return Response(404, [], json.dumps(body).encode(), request.url)

    client = Client(Driver(Machine(Account.parse("acme"), ApiKey("key", "secret")), erroring))
    with pytest.raises(ApiError) as caught:
        client.get("booking/9")
    assert caught.value.status == 404
    assert caught.value.error["title"] == "Booking not found"
    assert client.get("booking/9", check=False).status == 404


def test_rejected_pair_is_a_credentials_error() -> None:
    def refuse(request: Request) -> Response:
        return Response(401, [], b'{"error": "invalid"}')

    driver = Driver(Machine(Account.parse("acme"), ApiKey("key", "secret")), refuse)
    with pytest.raises(CredentialsRejected, match="API key and secret"):
        driver.request("GET", "item")


def test_32_threads_share_one_refresh(server: FakeCheckfront) -> None:
    clock = Clock()
    store = MemoryGrant(expired_tokens(clock.now))
    server.store = store
    server.gate = threading.Event()
    driver = oauth_driver(server, expired_tokens(clock.now), clock, store)
    results: list[int] = []
    errors: list[BaseException] = []
    started = threading.Barrier(33)

    def worker() -> None:
        started.wait()
        try:
            results.append(driver.request("GET", "booking/index").status)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    started.wait()
    # Let every thread reach the machine before the refresh answers.
    deadline = threading.Event()
    for _ in range(200):
        if driver.machine.calls_in_progress == 32:
            break
        deadline.wait(0.01)
    server.gate.set()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert results == [200] * 32
    token_requests = [r for r in server.log if r.url.endswith("/oauth/token/")]
    assert len(token_requests) == 1
    assert all(server.stored_when_used)
    assert len(server.stored_when_used) == 32
    assert store.load() == driver.machine.tokens


def test_refresh_failure_fails_every_waiter_then_recovers(server: FakeCheckfront) -> None:
    clock = Clock()
    server.refresh_status = 500
    server.gate = threading.Event()
    driver = oauth_driver(server, expired_tokens(clock.now), clock, MemoryGrant())
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            driver.request("GET", "item")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for _ in range(200):
        if driver.machine.calls_in_progress == 8:
            break
        threading.Event().wait(0.01)
    server.gate.set()
    for thread in threads:
        thread.join(10)
    assert len(errors) == 8
    assert all(isinstance(e, RefreshFailed) for e in errors)
    assert len({id(e) for e in errors}) == 1
    server.refresh_status = 200
    assert driver.request("GET", "item").status == 200
    assert driver.machine.tokens is not None
    assert driver.machine.tokens.access_token == "access-1"


def test_rotated_token_reuse_needs_reauthorization(server: FakeCheckfront) -> None:
    clock = Clock()
    server.valid_refresh = {"someone-else-rotated-it"}
    driver = oauth_driver(server, expired_tokens(clock.now), clock)
    with pytest.raises(ReauthorizationRequired):
        driver.request("GET", "item")
    with pytest.raises(ReauthorizationRequired):
        driver.request("GET", "item")
    assert len([r for r in server.log if r.url.endswith("/oauth/token/")]) == 1


def test_lease_adopts_tokens_another_process_stored(server: FakeCheckfront) -> None:
    clock = Clock()
    newer = TokenSet("access-7", "refresh-7", clock.now + 14000, clock.now + 86400 * 14, clock.now)
    server.valid_access = {"access-7"}
    store = MemoryGrant(newer)
    driver = oauth_driver(server, expired_tokens(clock.now), clock, store)
    assert driver.request("GET", "item").status == 200
    assert not [r for r in server.log if r.url.endswith("/oauth/token/")]
    assert dict(server.log[-1].headers)["Authorization"] == "Bearer access-7"
    store.acquire_lease(timeout=0)  # the lease was released
    store.release_lease()


def test_reactive_refresh_after_revocation(server: FakeCheckfront) -> None:
    clock = Clock()
    driver = oauth_driver(server, fresh_tokens(clock.now), clock, MemoryGrant())
    server.valid_access = set()  # revoked
    assert driver.request("GET", "item").status == 200
    auths = [dict(r.headers)["Authorization"] for r in server.log if "/api/" in r.url]
    assert auths == ["Bearer access-0", "Bearer access-1"]


def test_retry_after_is_honoured_by_sleeping() -> None:
    clock = Clock()
    answers = [Response(429, [("Retry-After", "3")], b""), Response(200, [], b"{}")]

    def limited(request: Request) -> Response:
        return answers.pop(0)

    driver = Driver(
        Machine(Account.parse("acme"), ApiKey("k", "secret")),
        limited,
        clock=clock,
        sleep=clock.sleep,
    )
    assert driver.request("GET", "item").status == 200
    assert clock.slept == [3.0]


def test_rate_limit_gives_up() -> None:
    clock = Clock()

    def limited(request: Request) -> Response:
        return Response(429, [("Retry-After", "1")], b"")

    driver = Driver(
        Machine(Account.parse("acme"), ApiKey("k", "secret")),
        limited,
        clock=clock,
        sleep=clock.sleep,
    )
    with pytest.raises(RateLimited) as caught:
        driver.request("GET", "item")
    assert caught.value.retry_after == 1.0
    assert clock.slept == [1.0, 1.0, 1.0]


def test_transport_failure_is_a_transport_error() -> None:
    def broken(request: Request) -> Response:
        raise ConnectionResetError("reset by peer")

    driver = Driver(Machine(Account.parse("acme"), ApiKey("k", "secret")), broken)
    with pytest.raises(NetworkError, match="ConnectionResetError"):
        driver.request("GET", "item")


def test_interrupted_refresh_releases_the_waiters(server: FakeCheckfront) -> None:
    clock = Clock()
    store = MemoryGrant()
    calls = 0

    def interrupting(request: Request) -> Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyboardInterrupt
        return server(request)

    driver = Driver(
        Machine(Account.parse("acme"), APP, expired_tokens(clock.now)),
        interrupting,
        store=store,
        clock=clock,
    )
    with pytest.raises(KeyboardInterrupt):
        driver.request("GET", "item")
    assert driver.machine.calls_in_progress == 0
    store.acquire_lease(timeout=0)  # released by the interrupted thread
    store.release_lease()
    assert driver.request("GET", "item").status == 200


def test_login_then_call(server: FakeCheckfront) -> None:
    clock = Clock()
    exchanged: list[dict[str, list[str]]] = []

    def with_exchange(request: Request) -> Response:
        if (
            request.url.endswith("/oauth/token/")
            and request.body
            and b"authorization_code" in (request.body)
        ):
            exchanged.append(parse_qs(request.body.decode()))
            body = {"access_token": "access-0", "refresh_token": "refresh-0", "expires_in": 14000}
            return Response(200, [], json.dumps(body).encode())
        return server(request)

    store = MemoryGrant()
    driver = Driver(Machine(Account.parse("acme"), APP), with_exchange, store=store, clock=clock)
    state, verifier = "s" * 22, "v" * 43
    url = driver.authorize(state, verifier)
    assert url.startswith(ORIGIN + "/oauth/?")
    driver.complete_authorization(f"https://app.example/cb?code=abc&state={state}")
    assert exchanged[0]["code"] == ["abc"]
    assert exchanged[0]["code_verifier"] == [verifier]
    stored = store.load()
    assert stored is not None
    assert stored.access_token == "access-0"
    assert driver.request("GET", "item").status == 200


def test_closed_driver_refuses_calls(server: FakeCheckfront) -> None:
    with Driver(Machine(Account.parse("acme"), ApiKey("k", "secret")), server) as driver:
        assert driver.request("GET", "item").status == 200
    with pytest.raises(LocalProtocolError, match="this client is closed; create a new one"):
        driver.request("GET", "item")


class FlakyStore(MemoryGrant):
    """A store whose next ``fail_saves`` saves raise."""

    def __init__(self, tokens: TokenSet | None = None) -> None:
        super().__init__(tokens)
        self.fail_saves = 0

    def save(self, tokens: TokenSet, client_auth: str | None = None) -> None:
        if self.fail_saves:
            self.fail_saves -= 1
            raise OSError("disk full")
        super().save(tokens, client_auth)


def test_a_failed_save_is_retried_before_the_next_refresh_reads_the_store(
    server: FakeCheckfront,
) -> None:
    clock = Clock()
    store = FlakyStore(expired_tokens(clock.now))
    store.fail_saves = 1
    driver = oauth_driver(server, expired_tokens(clock.now), clock, store)
    assert driver.request("GET", "item").status == 200  # refreshed; the save failed
    stale = store.load()
    assert stale is not None
    assert stale.refresh_token == "refresh-0"
    clock.now += 14_000  # the next refresh must not adopt the stale stored pair
    assert driver.request("GET", "item").status == 200
    stored = store.load()
    assert stored is not None
    assert stored == driver.machine.tokens
    assert stored.refresh_token == "refresh-2"
    bodies = [r.body for r in server.log if r.url.endswith("/oauth/token/")]
    assert bodies == [
        b"grant_type=refresh_token&refresh_token=refresh-0",
        b"grant_type=refresh_token&refresh_token=refresh-1",
    ]


def test_logout_forgets_the_grant_and_deletes_the_stored_record(server: FakeCheckfront) -> None:
    clock = Clock()
    store = MemoryGrant(fresh_tokens(clock.now))
    driver = oauth_driver(server, fresh_tokens(clock.now), clock, store)
    assert driver.request("GET", "item").status == 200
    driver.logout()
    assert store.load() is None
    assert driver.machine.tokens is None
    with pytest.raises(ReauthorizationRequired):
        driver.request("GET", "item")
    # A new login can start at once; a second logout is harmless.
    assert driver.authorize("s" * 22, "v" * 43).startswith("https://acme.checkfront.com/oauth/?")
    driver.logout()


def test_a_new_login_over_a_held_grant(server: FakeCheckfront) -> None:
    clock = Clock()
    driver = oauth_driver(server, fresh_tokens(clock.now), clock)
    url = driver.authorize("s" * 22, "v" * 43)
    assert "state=" + "s" * 22 in url
    # Calls keep the old token while the user logs in.
    assert driver.request("GET", "item").status == 200
    assert dict(server.log[-1].headers)["Authorization"] == "Bearer access-0"
