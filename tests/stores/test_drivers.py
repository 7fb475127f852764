"""The drivers persist a migration in their store, off the trio event loop,
and a failing store does not fail the call."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from cfauth.sandbox import Sandbox
from cfauth.stdlib import client
from cfauth.stores import MemoryStore
from cfauth_core import OAuth2App, RefreshFailed, TokenSet, UntrustedRedirect
from tests.e2e.harness import KINDS, Harness, RecordingStore

from .shared import issue

NEW_ORIGIN = "https://acme.manage.na1.bookingplatform.app"


class OriginStore(RecordingStore):
    """Remembers in which thread each origin was saved; can be made to fail."""

    def __init__(self, tokens: TokenSet | None = None, *, fail: bool = False) -> None:
        super().__init__(tokens)
        self.fail = fail
        self.threads: list[threading.Thread] = []

    def save_origin(self, origin: str) -> None:
        self.threads.append(threading.current_thread())
        if self.fail:
            raise OSError("disk full")
        super().save_origin(origin)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as running:
        yield running


def app(sandbox: Sandbox) -> OAuth2App:
    account = sandbox.account("acme")
    return OAuth2App(account.client_id, account.client_secret, account.redirect_uri)


@pytest.mark.parametrize("kind", KINDS)
def test_each_driver_persists_the_new_origin_in_its_store(sandbox: Sandbox, kind: str) -> None:
    tokens = issue(sandbox)
    store = OriginStore(tokens)
    harness = Harness(kind, sandbox, app(sandbox), tokens=tokens, store=store)
    try:
        sandbox.migrate("acme")
        assert harness.request("GET", "booking/index").status == 200
        record = store.load_record()
        assert record is not None
        assert record.origin == NEW_ORIGIN
        assert record.tokens == tokens
        assert len(store.threads) == 1
        if kind == "trio":  # a worker thread, not the event loop's
            assert harness._trio is not None
            assert store.threads[0] is not harness._trio._thread
    finally:
        harness.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_store_that_cannot_save_the_origin_does_not_fail_the_call(
    sandbox: Sandbox, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = issue(sandbox)
    store = OriginStore(tokens, fail=True)
    harness = Harness(kind, sandbox, app(sandbox), tokens=tokens, store=store)
    try:
        sandbox.migrate("acme")
        assert harness.request("GET", "booking/index").status == 200
        assert harness.request("GET", "booking/index").status == 200
        assert "failed to save the new origin: OSError: disk full" in caplog.text
        assert [r.status for r in sandbox.requests] == [301, 200, 200]  # in memory, it moved
    finally:
        harness.close()


def test_a_client_on_a_grant_store_starts_at_the_stored_origin(sandbox: Sandbox) -> None:
    store = MemoryStore()
    credential = app(sandbox)
    grant = store.grant("acme", credential.client_id)
    grant.save(issue(sandbox))
    grant.save_origin(NEW_ORIGIN)
    sandbox.migrate("acme")
    with client(
        "acme", credential, store=store, ssl_context=sandbox.ssl_context(), resolve=sandbox.resolve
    ) as api:
        assert api.driver.machine.account.origin == NEW_ORIGIN
        api.get("booking/index")
    assert [(r.host, r.status) for r in sandbox.requests] == [
        ("acme.manage.na1.bookingplatform.app", 200)
    ]


def test_a_stored_origin_credentials_may_not_follow_is_refused(sandbox: Sandbox) -> None:
    store = MemoryStore()
    credential = app(sandbox)
    grant = store.grant("acme", credential.client_id)
    grant.save(issue(sandbox))
    grant.save_origin("https://evil.example")
    with pytest.raises(UntrustedRedirect, match=r"evil\.example"):
        client("acme", credential, store=store, resolve=sandbox.resolve)
    assert sandbox.requests == []


def test_a_lease_that_stays_taken_fails_the_call_with_the_timeout_and_frees_it(
    sandbox: Sandbox,
) -> None:
    store = MemoryStore(lease_timeout=0.1)
    credential = app(sandbox)
    grant = store.grant("acme", credential.client_id)
    grant.save(issue(sandbox))
    sandbox.clock.advance(14001)
    with client(
        "acme", credential, store=store, ssl_context=sandbox.ssl_context(), resolve=sandbox.resolve
    ) as api:
        api.driver._clock = sandbox.clock.now
        grant.acquire_lease()  # another worker is refreshing, and hangs
        with pytest.raises(RefreshFailed, match="LeaseTimeout") as caught:
            api.get("booking/index")
        assert "was not free within 0.1 s" in str(caught.value)
        assert caught.value.retryable
        assert sandbox.requests == []
        grant.release_lease()
        assert api.get("booking/index").status == 200  # the next call refreshes
    assert [r.grant_type for r in sandbox.requests] == ["refresh_token", None]


def test_a_configured_new_origin_wins_over_the_old_one_stored(sandbox: Sandbox) -> None:
    store = MemoryStore()
    credential = app(sandbox)
    grant = store.grant("acme", credential.client_id)  # recorded at acme.checkfront.com
    grant.save(issue(sandbox))
    with client(
        NEW_ORIGIN,
        credential,
        store=store,
        ssl_context=sandbox.ssl_context(),
        resolve=sandbox.resolve,
    ) as api:
        assert api.driver.machine.account.origin == NEW_ORIGIN
        api.get("booking/index")
    assert [r.host for r in sandbox.requests] == ["acme.manage.na1.bookingplatform.app"]
