"""The grant's states and every transition between them.

Everything that decides *which state the machine is in* lives in this file,
in two tables:

* ``EVENTS_ALLOWED`` says which events each state accepts.  An event that is
  not listed for the current state raises :class:`LocalProtocolError` and
  changes nothing.
* ``TRANSITIONS`` maps ``(state, trigger)`` to the next state.  A trigger is
  something the machine found out while handling an event ("the refresh
  succeeded", "the grant is gone").  The machine changes state only through
  :func:`next_state`, so this table is the whole state diagram;
  ``docs/make_state_diagram.py`` draws it from here.

Calls have a life of their own (sent, waiting for a refresh, parked until a
retry time, following a redirect), but that does not change the grant's state;
the machine tracks it per call.
"""

from __future__ import annotations

from enum import Enum

from ._errors import LocalProtocolError
from ._events import (
    AuthorizationRequested,
    CallbackReceived,
    CallCancelled,
    CallRequested,
    ClockTick,
    Event,
    LeaseFailed,
    LogoutRequested,
    ResponseReceived,
    SendFailed,
    StoreFailed,
    TokensLoaded,
)

__all__ = ["CALLS_WAIT", "EVENTS_ALLOWED", "TRANSITIONS", "State", "Trigger", "next_state"]


class State(Enum):
    """The state of one grant."""

    #: OAuth2 with no tokens: calls fail with ReauthorizationRequired until a login.
    UNAUTHORIZED = "unauthorized"
    #: No tokens, an authorize URL was issued; waiting for the browser to come back.
    AUTHORIZING = "authorizing"
    #: The authorization code is being exchanged; calls wait (or, during a new
    #: login over a grant the machine holds, go out with the old tokens).
    EXCHANGING = "exchanging"
    #: Credentials in hand (token pair, or OAuth2 tokens); calls are sent.  A new
    #: login may be pending alongside (its callback is accepted here).
    READY = "ready"
    #: A refresh is due; waiting for the adapter to take the store's lease
    #: and report what the store holds.  Calls wait.
    LEASING = "leasing"
    #: The refresh request is in flight.  Calls wait.
    REFRESHING = "refreshing"
    #: The grant is gone (refresh token expired, revoked, rotated away);
    #: calls fail until a new login or tokens loaded from the store (a login
    #: pending when the grant was lost can still finish).
    REAUTHORIZATION_REQUIRED = "reauthorization-required"


class Trigger(Enum):
    """What the machine found out; the input of a transition."""

    AUTHORIZE = "authorize"
    CODE_RECEIVED = "code received"
    AUTHORIZATION_DENIED = "authorization denied"
    EXCHANGE_SUCCEEDED = "exchange succeeded"
    EXCHANGE_FAILED = "exchange failed"
    RELOGIN_FAILED = "new login failed"
    REFRESH_DUE = "refresh due"
    TOKENS_ADOPTED = "newer tokens loaded"
    REFRESH_SENT = "refresh sent"
    REFRESH_SUCCEEDED = "refresh succeeded"
    REFRESH_FAILED = "refresh failed"
    GRANT_LOST = "grant lost"
    LOGGED_OUT = "logged out"


S, T = State, Trigger

#: The states in which a call waits inside the machine (a token request or the
#: lease is outstanding) instead of being sent or failed.
CALLS_WAIT: frozenset[State] = frozenset({S.LEASING, S.REFRESHING, S.EXCHANGING})

_EVERYWHERE: frozenset[type[Event]] = frozenset(
    {CallRequested, ResponseReceived, SendFailed, ClockTick, CallCancelled, StoreFailed}
)

_LOGIN = frozenset({AuthorizationRequested, CallbackReceived, LogoutRequested, TokensLoaded})

EVENTS_ALLOWED: dict[State, frozenset[type[Event]]] = {
    S.UNAUTHORIZED: _EVERYWHERE | {AuthorizationRequested, LogoutRequested, TokensLoaded},
    S.AUTHORIZING: _EVERYWHERE | _LOGIN,
    S.EXCHANGING: _EVERYWHERE,
    # A callback is accepted where a login may be pending (it is refused if none is).
    S.READY: _EVERYWHERE | _LOGIN,
    S.LEASING: _EVERYWHERE | {TokensLoaded, LeaseFailed},
    S.REFRESHING: _EVERYWHERE,
    S.REAUTHORIZATION_REQUIRED: _EVERYWHERE | _LOGIN,
}

TRANSITIONS: dict[tuple[State, Trigger], State] = {
    # Logging in.
    (S.UNAUTHORIZED, T.AUTHORIZE): S.AUTHORIZING,
    (S.REAUTHORIZATION_REQUIRED, T.AUTHORIZE): S.AUTHORIZING,
    (S.AUTHORIZING, T.AUTHORIZE): S.AUTHORIZING,
    (S.AUTHORIZING, T.CODE_RECEIVED): S.EXCHANGING,
    (S.AUTHORIZING, T.AUTHORIZATION_DENIED): S.UNAUTHORIZED,
    (S.EXCHANGING, T.EXCHANGE_SUCCEEDED): S.READY,
    (S.EXCHANGING, T.EXCHANGE_FAILED): S.UNAUTHORIZED,
    # A new login over the grant the machine holds: calls keep the old tokens
    # until the exchange succeeds; if it fails, the old grant stays.
    (S.READY, T.AUTHORIZE): S.READY,
    (S.READY, T.CODE_RECEIVED): S.EXCHANGING,
    (S.READY, T.AUTHORIZATION_DENIED): S.READY,
    (S.EXCHANGING, T.RELOGIN_FAILED): S.READY,
    # A login pending when the grant was lost.
    (S.REAUTHORIZATION_REQUIRED, T.CODE_RECEIVED): S.EXCHANGING,
    (S.REAUTHORIZATION_REQUIRED, T.AUTHORIZATION_DENIED): S.REAUTHORIZATION_REQUIRED,
    # Tokens another process stored.
    (S.UNAUTHORIZED, T.TOKENS_ADOPTED): S.READY,
    (S.AUTHORIZING, T.TOKENS_ADOPTED): S.READY,
    (S.REAUTHORIZATION_REQUIRED, T.TOKENS_ADOPTED): S.READY,
    (S.READY, T.TOKENS_ADOPTED): S.READY,
    # Refreshing, one at a time, under the store's lease.
    (S.READY, T.REFRESH_DUE): S.LEASING,
    (S.LEASING, T.TOKENS_ADOPTED): S.READY,
    (S.LEASING, T.REFRESH_SENT): S.REFRESHING,
    (S.LEASING, T.REFRESH_FAILED): S.READY,
    (S.REFRESHING, T.REFRESH_SUCCEEDED): S.READY,
    (S.REFRESHING, T.REFRESH_FAILED): S.READY,
    # Losing the grant.
    (S.READY, T.GRANT_LOST): S.REAUTHORIZATION_REQUIRED,
    (S.LEASING, T.GRANT_LOST): S.REAUTHORIZATION_REQUIRED,
    (S.REFRESHING, T.GRANT_LOST): S.REAUTHORIZATION_REQUIRED,
    # Logging out (never while a token request or the lease is outstanding).
    (S.UNAUTHORIZED, T.LOGGED_OUT): S.UNAUTHORIZED,
    (S.AUTHORIZING, T.LOGGED_OUT): S.UNAUTHORIZED,
    (S.READY, T.LOGGED_OUT): S.UNAUTHORIZED,
    (S.REAUTHORIZATION_REQUIRED, T.LOGGED_OUT): S.UNAUTHORIZED,
}


def next_state(state: State, trigger: Trigger) -> State:
    """The state after ``trigger`` in ``state``; a missing entry is a bug in the caller."""
    try:
        return TRANSITIONS[state, trigger]
    except KeyError:
        raise LocalProtocolError(
            f"no transition from {state.value} on {trigger.value}; this is a bug in cfauth, "
            "please report it"
        ) from None
