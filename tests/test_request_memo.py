"""The machine reuses the request of a plain call (no params, data or extra
headers) while the credential and the origin stay the same.  Whatever the
order of calls, token changes and migrations, every Send must be exactly the
request a fresh machine in the same situation would build."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cfauth_core import (
    Account,
    ApiKey,
    CallRequested,
    Machine,
    OAuth2App,
    ResponseReceived,
    Send,
    TokenSet,
    TokensLoaded,
    call_id_of,
)

NOW = 1_000_000.0
APP = OAuth2App("client-id", "client-secret", "https://app.example/cb")
NEW_HOST = "https://acme.manage.na1.bookingplatform.app"
PATHS = ["booking/index", "item", "api/3.0/item", "/item", "x" * 300]


def tokens(n: int) -> TokenSet:
    return TokenSet(f"AT-{n}", f"RT-{n}", NOW + 10_000, NOW + 86_400 * 10, NOW - 4_000 + n)


def expected(machine: Machine, event: CallRequested) -> Send:
    """The Send a fresh machine at the same origin, with the same tokens, makes."""
    twin = Machine(machine.account, machine.credential, machine.tokens)
    actions = twin.handle(event)
    (send,) = actions
    assert isinstance(send, Send)
    return send


def call(machine: Machine, event: CallRequested) -> Send:
    actions = machine.handle(event)
    assert len(actions) == 1
    (send,) = actions
    assert isinstance(send, Send)
    assert send.call_id == call_id_of(actions)
    return send


def respond(machine: Machine, send: Send, status: int = 200, location: str = "") -> list[object]:
    headers = [("Location", location)] if location else []
    return list(
        machine.handle(
            ResponseReceived(
                now=NOW, request_id=send.request_id, status=status, headers=headers, body=b"{}"
            )
        )
    )


steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("call"),
            st.sampled_from(["GET", "DELETE", "POST", "PUT"]),
            st.sampled_from(PATHS),
            st.sampled_from(["plain", "params", "data", "headers"]),
        ),
        # The same few calls again and again: a plain call after one of the same
        # method and path with params, a body or headers is the case to get right.
        st.tuples(
            st.just("call"),
            st.sampled_from(["GET", "POST"]),
            st.sampled_from(["item", "x" * 300]),
            st.sampled_from(["plain", "params", "data", "headers"]),
        ),
        st.tuples(st.just("tokens")),
        st.tuples(st.just("move")),
    ),
    max_size=30,
)


@settings(max_examples=500, derandomize=True, deadline=None)
@given(steps=steps, oauth=st.booleans())
def test_every_send_is_what_a_fresh_machine_would_send(
    steps: list[tuple[str, ...]], oauth: bool
) -> None:
    account = Account.parse("acme")
    machine = (
        Machine(account, APP, tokens(0)) if oauth else Machine(account, ApiKey("key", "secret"))
    )
    generation = 0
    for step in steps:
        if step[0] == "call":
            _, method, path, shape = step
            extra: dict[str, object] = {}
            if shape == "params":
                extra["params"] = {"q": "1"}
            elif shape == "data" and method != "GET":
                extra["data"] = {"a": "b"}
            elif shape == "headers":
                extra["headers"] = (("X-On-Behalf", "7"),)
            event = CallRequested(now=NOW, method=method, path=path, **extra)  # type: ignore[arg-type]
            want = expected(machine, event)
            send = call(machine, event)
            assert send.request == want.request
            respond(machine, send)
        elif step[0] == "tokens" and oauth:
            generation += 1
            machine.handle(TokensLoaded(now=NOW, tokens=tokens(generation)))
            assert machine.tokens == tokens(generation)
        elif step[0] == "move" and machine.account.origin != NEW_HOST:
            send = call(machine, CallRequested(now=NOW, method="GET", path="item"))
            followed = respond(machine, send, 301, NEW_HOST + "/api/3.0/item")
            resend = next(a for a in followed if isinstance(a, Send))
            respond(machine, resend)
            assert machine.account.origin == NEW_HOST


def test_the_kept_requests_are_bounded() -> None:
    machine = Machine(Account.parse("acme"), ApiKey("key", "secret"))
    for n in range(600):
        send = call(machine, CallRequested(now=NOW, method="GET", path=f"item/{n}"))
        respond(machine, send)
        assert len(machine._requests) <= 256
    long_path = "y" * 257
    send = call(machine, CallRequested(now=NOW, method="GET", path=long_path))
    respond(machine, send)
    assert all(path != long_path for _, path in machine._requests)
