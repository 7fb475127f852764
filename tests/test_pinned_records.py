"""The record base pinned on classes built while the tests run, and the reprs
that stand between a secret and a log line.

The core's own record classes are built when ``cfauth_core`` is imported;
these tests build new ones, so every rule of ``Record.__init_subclass__``
(slots, fields, ``match`` order, the twin, freezing) is checked on a class
made in front of the test, not only on classes made before it ran.
"""

from __future__ import annotations

import copy
import pickle
import signal
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfauth_core import ApiKey, Fail, OAuth2App, Request, Send
from cfauth_core._record import Record, _new, _rebuild


def make_classes() -> tuple[Any, Any, Any]:
    """A base with no slots (like Event), and two leaves below it with the
    same layout, one with a private slot and a hidden field."""

    class Base(Record):
        pass

    class Point(Base):
        __slots__ = ("x", "y", "_note")
        _hidden = frozenset({"y"})

        def __new__(cls, x: Any, y: Any, note: str = "n") -> Any:
            self = _new(cls._fast)
            self.x = x
            self.y = y
            self._note = note
            self.__class__ = cls
            return self

    class Other(Base):
        __slots__ = ("x", "y", "_note")

        def __new__(cls, x: Any, y: Any, note: str = "n") -> Any:
            self = _new(cls._fast)
            self.x = x
            self.y = y
            self._note = note
            self.__class__ = cls
            return self

    return Base, Point, Other


def test_a_leaf_record_has_its_slots_fields_and_match_order() -> None:
    base, point, _ = make_classes()
    assert base._slots == ()
    assert base._fields == ()
    assert base.__match_args__ == ()
    assert base._fast is base
    assert point._slots == ("x", "y", "_note")
    assert point._fields == ("x", "y")
    assert point.__match_args__ == ("x", "y")
    p = point(1, 2)
    match p:
        case point(a, b):
            assert (a, b) == (1, 2)
        case _:  # pragma: no cover - the pattern above must match
            pytest.fail("positional match failed")


def test_a_leaf_record_is_built_through_an_unguarded_twin_of_the_same_layout() -> None:
    _, point, _ = make_classes()
    twin = point._fast
    assert twin is not point
    assert twin.__name__ == "_PointTwin"
    assert twin.__module__ == point.__module__
    assert twin.__bases__ == point.__bases__
    assert twin.__dict__["__slots__"] == ("x", "y", "_note")
    assert twin._is_twin is True
    spare = _new(twin)
    spare.x = 1  # the twin takes plain stores
    assert spare.x == 1


@pytest.mark.parametrize("action", ["set", "set-new", "delete"])
def test_a_leaf_record_is_frozen_and_says_which_class(action: str) -> None:
    _, point, _ = make_classes()
    p = point(1, 2)

    def change() -> None:
        if action == "set":
            p.x = 3
        elif action == "set-new":
            p.z = 3
        else:
            del p.x

    with pytest.raises(AttributeError) as caught:
        change()
    assert str(caught.value) == "Point is immutable: build a new one instead"
    assert p.x == 1


def test_a_record_cannot_be_subclassed() -> None:
    _, point, _ = make_classes()
    with pytest.raises(TypeError) as caught:

        class Sub(point):  # type: ignore[valid-type,misc]
            __slots__ = ()

    assert str(caught.value) == (
        "Point cannot be subclassed: cfauth's records are final (the core compares and "
        "dispatches on their exact type); wrap a Point in your own class instead"
    )


values = st.one_of(st.integers(), st.text(max_size=5), st.none(), st.tuples(st.integers()))


@settings(max_examples=100, derandomize=True)
@given(values, values, values, values)
def test_equality_and_hash_follow_type_and_fields(a: Any, b: Any, c: Any, d: Any) -> None:
    _, point, other = make_classes()
    assert (point(a, b) == point(c, d)) is ((a, b) == (c, d))
    assert point(a, b, "one") == point(a, b, "two")  # private slots are not compared
    assert point(a, b) != other(a, b)
    assert point(a, b).__eq__(other(a, b)) is NotImplemented
    assert hash(point(a, b)) == hash(("Point", (a, b)))
    assert hash(other(a, b)) == hash(("Other", (a, b)))


def test_copies_and_pickles_carry_every_slot() -> None:
    p = Request("GET", "https://x.example/", (("A", "b"),), None)
    q = ApiKey("key-01", "secret-value")
    for record in (p, q):
        pickled = pickle.loads(pickle.dumps(record))  # noqa: S301 - our own bytes
        for clone in (copy.copy(record), copy.deepcopy(record), pickled):
            assert type(clone) is type(record)
            assert clone == record
            for name in record._slots:
                assert getattr(clone, name) == getattr(record, name)
    assert pickle.loads(pickle.dumps(q)).authorization == q.authorization  # noqa: S301


@pytest.mark.parametrize("state", [(), ("key-01",), ("key-01", "secret", "Basic x", "extra")])
def test_a_state_of_the_wrong_length_is_refused(state: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="zip"):
        _rebuild(ApiKey, state)


def test_repr_shows_fields_and_hides_the_hidden_ones() -> None:
    _, point, _ = make_classes()
    assert repr(point(1, "s3cret")) == "Point(x=1, y=<hidden>)"


# -- the reprs written by hand ------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "shown"),
    [
        ((), ""),
        ((("Accept", "a/b"),), "Accept: a/b"),
        ((("Authorization", "Basic c2VjcmV0"),), "Authorization: <hidden>"),
        ((("authorization", "x"), ("COOKIE", "c=1")), "authorization: <hidden>, COOKIE: <hidden>"),
        (
            (("Proxy-Authorization", "p"), ("X-On-Behalf", "7")),
            "Proxy-Authorization: <hidden>, X-On-Behalf: 7",
        ),
    ],
)
@pytest.mark.parametrize(
    ("body", "size"), [(None, "no body"), (b"", "0-byte body"), (b"abc", "3-byte body")]
)
def test_request_repr_hides_credential_headers_and_gives_the_body_size(
    headers: tuple[tuple[str, str], ...], shown: str, body: bytes | None, size: str
) -> None:
    request = Request("POST", "https://acme.checkfront.com/api/3.0/x", headers, body)
    assert repr(request) == f"<Request POST https://acme.checkfront.com/api/3.0/x [{shown}] {size}>"


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("k", "k"),
        ("key01", "key01"),
        ("key012", "key012"),
        ("key0123", "key012..."),
        ("k" * 40, "kkkkkk..."),
    ],
)
def test_credential_reprs_show_the_start_of_the_identifier_only(key: str, hint: str) -> None:
    assert repr(ApiKey(key, "secret-value")) == f"ApiKey(key={hint!r}, secret=<hidden>)"
    app = OAuth2App(key, "secret-value", "https://app.example/cb")
    assert repr(app) == (
        f"OAuth2App(client_id={hint!r}, client_secret=<hidden>, "
        "redirect_uri='https://app.example/cb')"
    )


def test_machine_repr_names_origin_credential_kind_state_and_calls() -> None:
    from cfauth_core import Account, CallRequested, Machine

    m = Machine(Account.parse("acme"), ApiKey("key-0123456789", "apikey-secret-value"))
    assert repr(m) == "<Machine https://acme.checkfront.com ApiKey state=ready calls=0>"
    m.handle(CallRequested(now=1_700_000_000.0, method="GET", path="x", params={"a": "1"}))
    assert repr(m) == "<Machine https://acme.checkfront.com ApiKey state=ready calls=1>"


# -- errors leave the core without frames -------------------------------------------------


def raised(error: Exception) -> Exception:
    try:
        raise error
    except Exception as caught:
        return caught


@pytest.mark.parametrize("order", ["cause-first", "context-first"])
def test_detach_clears_every_traceback_in_the_error_graph_once(order: str) -> None:
    from cfauth_core import RefreshFailed, RemoteProtocolError
    from cfauth_core._errors import detach

    deepest = raised(ValueError("deepest"))
    shared = raised(RemoteProtocolError("shared"))
    shared.__cause__ = deepest
    top = raised(RefreshFailed("top", cause=cast(RemoteProtocolError, shared)))
    if order == "cause-first":
        top.__context__ = shared
    else:
        top.__cause__ = shared
    shared.__context__ = top  # a cycle: each error is visited once
    hidden = raised(KeyError("suppressed"))
    deepest.__context__ = hidden
    deepest.__suppress_context__ = True
    assert all(e.__traceback__ is not None for e in (top, shared, deepest, hidden))
    assert detach(cast(RefreshFailed, top)) is top
    assert [e.__traceback__ for e in (top, shared, deepest)] == [None, None, None]
    assert deepest.__context__ is None  # suppressed: dropped, not only cleared
    assert shared.__context__ is None  # it has a __cause__: its context was suppressed


def test_detach_goes_on_after_meeting_an_error_twice() -> None:
    from cfauth_core import RefreshFailed
    from cfauth_core._errors import detach

    first = raised(ValueError("first"))
    twice = raised(KeyError("twice"))
    middle = raised(RefreshFailed("middle", cause=cast(Any, twice)))
    middle.__cause__ = twice  # the same error by two links
    top = raised(RefreshFailed("top", cause=cast(Any, middle)))
    top.__cause__ = first
    detach(cast(RefreshFailed, top))
    assert [e.__traceback__ for e in (top, middle, twice, first)] == [None] * 4


def test_detach_ends_on_a_cycle_of_contexts() -> None:
    from cfauth_core import RemoteProtocolError
    from cfauth_core._errors import detach

    a = raised(RemoteProtocolError("a"))
    b = raised(ValueError("b"))
    a.__context__, b.__context__ = b, a

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError("detach went round the cycle for ever")

    # A watchdog, not a measure: a correct detach returns at once, a broken one never.
    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, 10)
    try:
        assert detach(cast(RemoteProtocolError, a)) is a
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert (a.__traceback__, b.__traceback__) == (None, None)


def test_a_fail_carries_its_error_and_cause_without_frames() -> None:
    from cfauth_core import (
        Account,
        CallRequested,
        Machine,
        OAuth2App,
        RefreshAborted,
        ResponseReceived,
        TokenSet,
        TokensLoaded,
    )

    now = 1_700_000_000.0
    app = OAuth2App("client-0123456789", "client-secret-value", "https://app.example/cb")
    pair = TokenSet("access-1", "refresh-1", now + 10, now + 14 * 86400, now - 14_000)
    m = Machine(Account.parse("acme"), app, pair)
    m.handle(CallRequested(now=now, method="GET", path="x"))
    (send,) = m.handle(TokensLoaded(now=now, tokens=pair))
    assert isinstance(send, Send)
    actions = m.handle(
        ResponseReceived(now=now, request_id=send.request_id, status=200, headers=[], body=b"<")
    )
    errors = [a.error for a in actions if isinstance(a, (Fail, RefreshAborted))]
    assert errors
    for error in errors:
        assert error.__traceback__ is None
        cause = getattr(error, "cause", None)
        assert cause is not None
        assert cause.__traceback__ is None
        assert cause.__context__ is None  # the JSON error it was raised over is dropped
