"""One rule for every header value a caller sets, enforced by the core.

The rule (``HEADER_VALUE``): visible ASCII, with spaces and tabs only between
visible characters.  It applies to extra headers on a call, to
``X-On-Behalf`` / ``X-Forwarded-For`` given to a client, and to
``Config.user_agent``; anything else is ``InvalidInput`` before a request
exists, so no driver ever sees it.  (tests/e2e/test_attacks.py checks the
same on the wire for every driver.)
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cfauth.sync import Client as SyncClient
from cfauth.sync import Driver as SyncDriver
from cfauth.trio import Client as TrioClient
from cfauth.trio import Driver as TrioDriver
from cfauth_core import (
    Account,
    ApiKey,
    CallRequested,
    Config,
    InvalidInput,
    Machine,
    Request,
    Send,
    check_header_value,
)
from cfauth_core._events import HEADER_VALUE, RESERVED_HEADERS

NOW = 1_700_000_000.0
VISIBLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
#: Characters no header value may hold: controls (tab aside), DEL, non-ASCII.
FORBIDDEN = st.one_of(
    st.characters(max_codepoint=0x1F).filter(lambda c: c != "\t"),
    st.just("\x7f"),
    st.characters(min_codepoint=0x80, blacklist_categories=["Cs"]),
)


def valid_values() -> st.SearchStrategy[str]:
    inner = st.text(alphabet=st.one_of(VISIBLE, st.sampled_from(" \t")), max_size=30)
    return st.one_of(
        st.just(""),
        st.text(alphabet=VISIBLE, min_size=1, max_size=1),
        st.tuples(VISIBLE, inner, VISIBLE).map("".join),
    )


def send_with(headers: list[tuple[str, str]]) -> Send:
    m = Machine(Account.parse("acme"), ApiKey("key", "secret"))
    actions = m.handle(CallRequested(now=NOW, method="GET", path="item", headers=headers))
    (send,) = actions
    assert isinstance(send, Send)
    return send


@given(value=valid_values())
def test_a_valid_value_is_sent_unchanged(value: str) -> None:
    send = send_with([("X-On-Behalf", value)])
    assert ("X-On-Behalf", value) in send.request.headers


@given(
    before=st.text(alphabet=VISIBLE, max_size=5),
    bad=FORBIDDEN,
    after=st.text(alphabet=VISIBLE, max_size=5),
)
def test_a_value_with_a_forbidden_character_is_refused(before: str, bad: str, after: str) -> None:
    value = before + bad + after
    with pytest.raises(InvalidInput, match="X-Forwarded-For") as caught:
        CallRequested(now=NOW, method="GET", path="item", headers=[("X-Forwarded-For", value)])
    assert value not in str(caught.value)
    with pytest.raises(InvalidInput, match="user_agent"):
        Config(user_agent=value)
    with pytest.raises(InvalidInput):
        check_header_value("on_behalf", value)


@given(core=st.text(alphabet=VISIBLE, min_size=1, max_size=5), pad=st.sampled_from([" ", "\t"]))
def test_leading_or_trailing_whitespace_is_refused(core: str, pad: str) -> None:
    for value in (pad + core, core + pad):
        with pytest.raises(InvalidInput):
            CallRequested(now=NOW, method="GET", path="item", headers=[("X-Note", value)])


@pytest.mark.parametrize(
    "value", ["1\r\nX-Evil: 1", "1\n", "1\r", "a\x00b", "a\x01b", "a\x7fb", "caf\u00e9", "a\u2028b"]
)
def test_the_named_attack_values_are_refused(value: str) -> None:
    with pytest.raises(InvalidInput):
        CallRequested(now=NOW, method="GET", path="item", headers=[("X-On-Behalf", value)])
    assert HEADER_VALUE.fullmatch(value) is None


@pytest.mark.parametrize("name", ["Expect", "Upgrade", "TE", "Trailer", "Keep-Alive"])
@pytest.mark.parametrize("case", [str, str.lower, str.upper])
def test_connection_headers_are_reserved(name: str, case: type[str]) -> None:
    assert name.lower() in RESERVED_HEADERS
    with pytest.raises(InvalidInput, match="set by cfauth"):
        CallRequested(now=NOW, method="GET", path="item", headers=[(case(name), "x")])


def test_a_non_string_value_is_refused() -> None:
    with pytest.raises(InvalidInput):
        CallRequested(now=NOW, method="GET", path="item", headers=[("X-Note", 1)])  # type: ignore[list-item]


def test_the_user_agent_default_follows_the_rule() -> None:
    assert HEADER_VALUE.fullmatch(Config().user_agent)
    assert Config(user_agent="app/1.0 (ops@example.com)\tx").user_agent.startswith("app/")


@pytest.mark.parametrize("field", ["on_behalf", "forwarded_for"])
@pytest.mark.parametrize("client", [SyncClient, TrioClient])
def test_clients_refuse_a_bad_default_header_at_construction(field: str, client: type) -> None:
    machine = Machine(Account.parse("acme"), ApiKey("key", "secret"))

    def no_send(request: Request) -> Any:
        raise AssertionError("nothing may be sent")

    driver = (SyncDriver if client is SyncClient else TrioDriver)(machine, no_send)
    with pytest.raises(InvalidInput, match=field):
        client(driver, **{field: "10.0.0.1\r\nX-Evil: 1"})
    assert client(driver, **{field: "10.0.0.1"}) is not None
