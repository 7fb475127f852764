"""A failed save (``StoreFailed``): the machine keeps the pair and has it saved
again under the lease before the store is read; nothing else changes."""

from __future__ import annotations

import json

import pytest

from cfauth_core import (
    Account,
    AcquireLease,
    ApiKey,
    CallRequested,
    ClockTick,
    LeaseFailed,
    LocalProtocolError,
    LogoutRequested,
    Machine,
    OAuth2App,
    Send,
    SendFailed,
    Store,
    StoreFailed,
    TokenSet,
    TokensLoaded,
)
from tests.helpers import NOW, one, respond

APP = OAuth2App("cfauth-test-client", "SECRET-client-0001", "https://app.example/callback")
LIFE = 14_000


def pair(n: int, at: float) -> TokenSet:
    return TokenSet(f"ACCESS-{n:04d}", f"REFRESH-{n:04d}", at + LIFE, at + 14 * 86_400, at)


def refresh(machine: Machine, now: float, n: int, loaded: TokenSet | None = None) -> Store:
    """Run one refresh (due at ``now``) to its Store; return the Store."""
    due = one(machine.handle(ClockTick(now=now)), AcquireLease)
    del due
    send = one(machine.handle(TokensLoaded(now=now, tokens=loaded or machine.tokens)), Send)
    body = {
        "access_token": f"ACCESS-{n:04d}",
        "refresh_token": f"REFRESH-{n:04d}",
        "expires_in": LIFE,
    }
    return one(respond(machine, send, 200, json.dumps(body).encode(), now=now), Store)


def due_at(machine: Machine) -> float:
    assert machine.tokens is not None
    return machine.tokens.expires_at - 10


def test_failed_save_is_saved_again_under_the_next_lease() -> None:
    machine = Machine(Account.parse("acme"), APP, pair(1, NOW - LIFE + 100))
    store = refresh(machine, NOW, 2)
    assert machine.handle(StoreFailed(now=NOW, tokens=store.tokens, reason="disk full")) == []
    # The pair stays in use.
    (send,) = machine.handle(CallRequested(now=NOW, method="GET", path="item"))
    assert isinstance(send, Send)
    assert ("Authorization", "Bearer ACCESS-0002") in send.request.headers
    # The next refresh asks for it to be saved under the lease, again after a LeaseFailed.
    later = due_at(machine)
    assert machine.handle(ClockTick(now=later))[-1] == AcquireLease("expiring", store.tokens)
    machine.handle(LeaseFailed(now=later))
    assert machine.handle(ClockTick(now=later + 1))[-1] == AcquireLease("expiring", store.tokens)
    # Saved and loaded under the lease: even if that refresh fails, the next
    # one has nothing to save.
    send = one(machine.handle(TokensLoaded(now=later + 1, tokens=store.tokens)), Send)
    machine.handle(SendFailed(now=later + 1, request_id=send.request_id))
    assert machine.handle(ClockTick(now=later + 2))[-1] == AcquireLease("expiring", None)


@pytest.mark.parametrize("then", ["saved", "logout", "other-process"])
def test_failed_save_is_forgotten_once_the_pair_is_replaced(then: str) -> None:
    machine = Machine(Account.parse("acme"), APP, pair(1, NOW - LIFE + 100))
    failed = refresh(machine, NOW, 2).tokens
    machine.handle(StoreFailed(now=NOW, tokens=failed))
    later = due_at(machine)
    if then == "saved":
        # The next refresh (lease answered with what the adapter saved) stores a new
        # pair that saves fine: the one after it has nothing to save again.
        refresh(machine, later, 3, loaded=failed)
    elif then == "logout":
        assert len(machine.handle(LogoutRequested(now=NOW))) == 1
        machine.handle(TokensLoaded(now=NOW, tokens=pair(5, NOW)))
    else:
        # Another process stored a newer pair, loaded outside the lease.
        machine.handle(TokensLoaded(now=NOW + 1, tokens=pair(7, NOW + 1)))
    due = one(machine.handle(ClockTick(now=due_at(machine))), AcquireLease)
    assert due.unsaved is None


def test_failure_for_a_pair_no_longer_held_changes_nothing() -> None:
    machine = Machine(Account.parse("acme"), APP, pair(1, NOW - LIFE + 100))
    refresh(machine, NOW, 2)
    assert machine.handle(StoreFailed(now=NOW, tokens=pair(1, NOW - LIFE + 100))) == []
    due = one(machine.handle(ClockTick(now=due_at(machine))), AcquireLease)
    assert due.unsaved is None


def test_api_key_machine_refuses_store_failed() -> None:
    machine = Machine(Account.parse("acme"), ApiKey("key-0001", "SECRET-api-0001"))
    with pytest.raises(LocalProtocolError, match="emits no Store"):
        machine.handle(StoreFailed(now=NOW, tokens=pair(1, NOW)))


def test_store_failed_checks_its_fields() -> None:
    from cfauth_core import InvalidInput

    with pytest.raises(InvalidInput, match="tokens"):
        StoreFailed(now=NOW, tokens="ACCESS-0001")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="reason"):
        StoreFailed(now=NOW, tokens=pair(1, NOW), reason=3)  # type: ignore[arg-type]
