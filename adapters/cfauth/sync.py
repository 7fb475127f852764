"""The blocking driver: runs a :class:`~cfauth_core.Machine` over any
``send(Request) -> Response`` callable, safely from any number of threads.

Theory of operation
-------------------
One lock guards the machine; it is never held during network I/O.  Each
thread that makes a call *owns* it: every ``Send`` and ``RetryAt`` for that
call is executed by the owner, whichever thread's event produced it, so a
refresh that releases twenty waiting calls hands each its own ``Send`` instead
of sending them one after another itself.  Work without an owner (the refresh
or code-exchange request, the store's lease) is done by the thread whose event
produced it, in list order.  ``Store`` is executed at once, under the lock:
no thread can send with new tokens before they are persisted, because the
machine cannot be entered until the ``Store`` returned.

A thread with nothing to do waits on a condition variable (no polling); it
wakes when an action for its call arrives or its call ends.  If a thread is
interrupted (``KeyboardInterrupt``) mid-request, it reports the interrupted
and unexecuted work to the machine as failed and releases the lease, so the
other threads are not left waiting for a refresh that will never finish.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from cfauth_core import (
    Account,
    AccountMoved,
    Action,
    AuthorizationFailed,
    AuthorizationLost,
    AuthorizationRequested,
    AuthorizeAt,
    Authorized,
    CallAccepted,
    CallbackReceived,
    CallCancelled,
    CallRequested,
    ClockTick,
    Config,
    Credential,
    Deliver,
    Event,
    Fail,
    Forget,
    LeaseFailed,
    LocalProtocolError,
    LogoutRequested,
    Machine,
    Params,
    RefreshAborted,
    RefreshDue,
    ReleaseLease,
    Request,
    ResponseReceived,
    RetryAt,
    Send,
    SendFailed,
    Store,
    TokenSet,
    TokensLoaded,
    check_header_value,
)

from ._http import (
    Response,
    Transport,
    call_headers,
    check_api_response,
    failure_reason,
    iso_time,
    iso_times,
    send_retryable,
)
from .login import (
    AuthorizationStart,
    GrantStatus,
    LoopbackReceiver,
    announce_login,
    check_login_app,
    login_values,
)
from .stores import GrantStore, TokenStore, open_grant

__all__ = ["Client", "ClosingTransport", "Driver", "build_client"]

log = logging.getLogger("cfauth")

#: Work a thread executes outside the lock, in order.
_Work = deque[Action]


class Driver:
    """Drives one machine (one grant) over a blocking transport.

    ``store`` persists tokens and provides the cross-process refresh lease;
    without one, tokens live only in the machine.  ``clock`` and ``sleep`` are
    injectable for tests.  ``on_account_moved(old_origin, new_origin)`` is
    called (under the lock) when the account migrates, so the caller can
    persist the new origin.
    """

    def __init__(
        self,
        machine: Machine,
        send: Transport,
        *,
        store: TokenStore | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        on_account_moved: Callable[[str, str], None] | None = None,
    ) -> None:
        self.machine = machine
        self._send = send
        self._store = store
        self._clock = clock
        self._sleep = sleep
        self._on_account_moved = on_account_moved
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._mail: dict[int, _Work] = {}
        self._outcomes: dict[int, Deliver | Fail] = {}
        self._login: Authorized | AuthorizationFailed | None = None
        self._authorize_url: str | None = None
        self._unsaved: TokenSet | None = None  # tokens the store failed to save
        self._closed = False

    # -- public API -----------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        data: Params | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Response:
        """Make one API call; return its response (any status) or raise the
        :class:`~cfauth_core.CfauthError` the call failed with."""
        if self._closed:
            raise LocalProtocolError("this client is closed; create a new one")
        event = CallRequested(
            now=self._clock(),
            method=method,
            path=path,
            params=params,
            data=data,
            headers=tuple(headers) if headers else (),
        )
        work: _Work = deque()
        with self._lock:
            actions = self.machine.handle(event)
            accepted = actions[0]
            assert isinstance(accepted, CallAccepted)
            call_id = accepted.call_id
            self._mail[call_id] = deque()
            self._route(actions, call_id, work)
        try:
            outcome = self._run_call(call_id, work)
        finally:
            with self._lock:
                self._mail.pop(call_id, None)
        if isinstance(outcome, Fail):
            raise outcome.error
        return Response(outcome.status, outcome.headers, outcome.body, outcome.url)

    def authorize(self, state: str, code_verifier: str | None) -> str:
        """Start an OAuth2 login; return the URL to send the user to.

        ``state`` and ``code_verifier`` must be fresh random values
        (``secrets.token_urlsafe(16)`` and ``secrets.token_urlsafe(64)``).
        """
        work: _Work = deque()
        with self._lock:
            self._authorize_url = None
            self._handle(
                AuthorizationRequested(now=self._clock(), state=state, code_verifier=code_verifier),
                None,
                work,
            )
            url = self._authorize_url
        assert url is not None
        assert not work
        return url

    def complete_authorization(self, callback: str, *, redirected_at: float | None = None) -> None:
        """Finish a login with the URL (or query string) the browser came back
        to; block until the code is exchanged and the tokens stored.  Raises
        the error the login failed with."""
        work: _Work = deque()
        event = CallbackReceived(now=self._clock(), url=callback, redirected_at=redirected_at)
        # The URL holds the code: keep it out of this frame's locals, which
        # error reporters upload with the traceback of a failed login.
        del callback
        with self._lock:
            self._login = None
            self._handle(event, None, work)
        self._execute(work, None)
        with self._lock:
            result, self._login = self._login, None
        if isinstance(result, AuthorizationFailed):
            raise result.error
        if result is None:  # pragma: no cover - the machine always ends a login it started
            raise LocalProtocolError("the login did not finish")

    def logout(self) -> None:
        """Forget the grant: the machine drops its tokens and the store deletes its
        record; calls then fail with ``ReauthorizationRequired`` until a new login.
        Raises :exc:`~cfauth_core.LocalProtocolError` while a refresh or a login's
        code exchange is in flight (log out once it has ended)."""
        work: _Work = deque()
        with self._lock:
            self._handle(LogoutRequested(now=self._clock()), None, work)

    def now(self) -> float:
        """The driver's clock (wall-clock seconds)."""
        return self._clock()

    def tick(self) -> None:
        """Tell the machine the time: start a refresh that is due (so tokens
        stay fresh between calls) and run it to completion."""
        work: _Work = deque()
        with self._lock:
            self._handle(ClockTick(now=self._clock()), None, work)
        self._execute(work, None)

    def scrub(self, text: str, limit: int = 300) -> str:
        """Server text made fit for a message: see :meth:`cfauth_core.Machine.scrub`."""
        with self._lock:
            return self.machine.scrub(text, limit)

    def close(self) -> None:
        """Refuse new calls.  Closing the transport is the transport's owner's job."""
        self._closed = True

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the loop -----------------------------------------------------------------

    def _run_call(self, call_id: int, work: _Work) -> Deliver | Fail:
        while True:
            self._execute(work, call_id)
            # Only this thread takes its call's outcome, and an outcome is a
            # call's last action: if it is there, no lock is needed to take it.
            outcome = self._outcomes.pop(call_id, None)
            if outcome is not None:
                return outcome
            mail = self._mail[call_id]
            try:
                with self._lock:
                    while not mail and call_id not in self._outcomes:
                        self._changed.wait()
                    outcome = self._outcomes.pop(call_id, None)
                    if outcome is not None:
                        assert not mail, "a call's outcome is its last action"
                        return outcome
                    work.extend(mail)
                    mail.clear()
            except BaseException:  # interrupted while waiting: give up the call cleanly
                with self._lock:
                    pending = list(mail)
                    mail.clear()
                self._abandon(pending, call_id)
                raise

    def _handle(self, event: Event, owner: int | None, work: _Work) -> None:
        """Feed one event and route its actions.  The lock must be held."""
        self._route(self.machine.handle(event), owner, work)

    def _route(self, actions: list[Action], owner: int | None, work: _Work) -> None:
        """Hand each action to whoever executes it.  The lock must be held."""
        wake = False
        for action in actions:
            kind = type(action)
            if kind is Send or kind is RetryAt:
                call_id = action.call_id  # type: ignore[attr-defined]
                if call_id is None or call_id == owner:
                    work.append(action)
                else:
                    self._mail[call_id].append(action)
                    wake = True
            elif kind is Deliver or kind is Fail:
                call_id = action.call_id  # type: ignore[attr-defined]
                self._outcomes[call_id] = action  # type: ignore[assignment]
                wake = wake or call_id != owner  # the owner itself is not waiting
            elif kind is Store:
                self._save(action)  # type: ignore[arg-type]
            elif kind is RefreshDue or kind is ReleaseLease:
                log.debug("%s", iso_times(repr(action)))
                work.append(action)
            elif kind is AccountMoved:
                assert isinstance(action, AccountMoved)
                log.info("the account moved from %s to %s", action.old_origin, action.new_origin)
                if self._on_account_moved is not None:
                    self._on_account_moved(action.old_origin, action.new_origin)
                if self._store is not None:  # persisted outside the lock, before what follows
                    work.append(action)
            elif kind is Authorized or kind is AuthorizationFailed:
                self._login = action  # type: ignore[assignment]
            elif kind is AuthorizeAt:
                self._authorize_url = action.url  # type: ignore[attr-defined]
            elif kind is Forget:
                self._unsaved = None
                if self._store is not None:
                    self._store.delete()
            elif kind is RefreshAborted or kind is AuthorizationLost:
                log.warning("%s", action.error)  # type: ignore[attr-defined]
        if wake:
            self._changed.notify_all()

    def _save(self, action: Store) -> None:
        log.debug("storing new tokens (expiring at %s)", iso_time(action.tokens.expires_at))
        if self._store is None:
            return
        try:
            self._store.save(action.tokens)
            self._unsaved = None
        except Exception as error:
            # The refresh already happened: the new tokens live on in the machine
            # and are saved again before the next refresh reads the store (under
            # the lease the store is the truth, so it must not hold an older
            # pair); stopping here would leave the lease held and calls stuck.
            self._unsaved = action.tokens
            log.error("the token store failed to save new tokens: %s", failure_reason(error))

    def _execute(self, work: _Work, owner: int | None) -> None:
        """Execute ``work`` in order, outside the lock, feeding back the results."""
        while work:
            action = work.popleft()
            try:
                event = self._perform(action)
            except BaseException:
                self._abandon([action, *work], owner)
                work.clear()
                raise
            if event is not None:
                with self._lock:
                    self._handle(event, owner, work)

    def _perform(self, action: Action) -> Event | None:
        """Do one piece of I/O; return the event that reports it."""
        if type(action) is Send:
            request = action.request
            try:
                response = self._send(request)
            except Exception as error:
                reason = failure_reason(error)
                log.debug("%s %s failed: %s", request.method, request.url, reason)
                return SendFailed(
                    now=self._clock(),
                    request_id=action.request_id,
                    reason=reason,
                    retryable=send_retryable(error),
                    unsent=getattr(error, "unsent", False) is True,
                )
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s %s (%s) -> %d",
                    request.method,
                    request.url,
                    action.purpose,
                    response.status,
                )
            return ResponseReceived(
                now=self._clock(),
                request_id=action.request_id,
                status=response.status,
                headers=response.headers,
                body=response.body,
            )
        if isinstance(action, RetryAt):
            delay = action.at - self._clock()
            log.debug("call %d retries in %.3f s", action.call_id, max(delay, 0.0))
            if delay > 0:
                self._sleep(delay)
            return ClockTick(now=max(self._clock(), action.at))
        if isinstance(action, RefreshDue):
            if self._store is None:
                return TokensLoaded(now=self._clock(), tokens=None)
            try:
                self._store.acquire_lease()
            except Exception as error:
                return LeaseFailed(now=self._clock(), reason=failure_reason(error))
            try:
                if self._unsaved is not None:  # a save that failed earlier: the store lags
                    self._store.save(self._unsaved)
                    self._unsaved = None
                tokens = self._store.load()
            except Exception as error:
                self._store.release_lease()
                return LeaseFailed(now=self._clock(), reason=failure_reason(error))
            return TokensLoaded(now=self._clock(), tokens=tokens)
        if isinstance(action, AccountMoved):
            self._save_origin(action.new_origin)
            return None
        assert isinstance(action, ReleaseLease)
        if self._store is not None:
            self._store.release_lease()
        return None

    def _save_origin(self, origin: str) -> None:
        assert self._store is not None
        try:
            self._store.save_origin(origin)
        except Exception as error:  # the machine uses the new origin anyway
            log.error("the store failed to save the new origin: %s", failure_reason(error))

    def _abandon(self, unfinished: list[Action], owner: int | None) -> None:
        """An interrupt stopped this thread: report what it will not do, so no
        other thread waits for it (a refresh in flight fails its waiters and
        the next call refreshes again)."""
        pending: _Work = deque(unfinished)
        with self._lock:
            while pending:
                action = pending.popleft()
                now = self._clock()
                if isinstance(action, Send):
                    event: Event = SendFailed(
                        now=now, request_id=action.request_id, reason="interrupted"
                    )
                    self._handle(event, owner, pending)
                elif isinstance(action, RefreshDue):
                    self._handle(LeaseFailed(now=now, reason="interrupted"), owner, pending)
                elif isinstance(action, ReleaseLease) and self._store is not None:
                    self._store.release_lease()
                elif isinstance(action, AccountMoved):
                    self._save_origin(action.new_origin)
            if owner is not None:
                self._handle(CallCancelled(now=self._clock(), call_id=owner), owner, pending)
                self._outcomes.pop(owner, None)


class Client:
    """A Checkfront API client on top of a :class:`Driver`.

    ``on_behalf`` (``X-On-Behalf``: a staff account id, or ``"off"`` to act as
    a customer) and ``forwarded_for`` (``X-Forwarded-For``: the end customer's
    IP) apply to every call unless a call gives its own.  ``transport``, if
    given, is a transport this client owns: :meth:`close` closes it.
    """

    def __init__(
        self,
        driver: Driver,
        *,
        on_behalf: str | None = None,
        forwarded_for: str | None = None,
        transport: ClosingTransport | None = None,
    ) -> None:
        for what, value in (("on_behalf", on_behalf), ("forwarded_for", forwarded_for)):
            if value is not None:
                check_header_value(what, value)
        self.driver = driver
        self.on_behalf = on_behalf
        self.forwarded_for = forwarded_for
        self.transport = transport

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        data: Params | None = None,
        headers: Sequence[tuple[str, str]] = (),
        on_behalf: str | None = None,
        forwarded_for: str | None = None,
        check: bool = True,
    ) -> Response:
        """Call ``method`` on ``path`` (under ``/api/3.0/``).  With ``check``
        (the default), a Checkfront error raises :class:`~cfauth.ApiError`."""
        extra = call_headers(
            headers,
            on_behalf if on_behalf is not None else self.on_behalf,
            forwarded_for if forwarded_for is not None else self.forwarded_for,
        )
        response = self.driver.request(method, path, params=params, data=data, headers=extra)
        return check_api_response(response, self.driver.scrub) if check else response

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Response:
        return self.request("DELETE", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Response:
        return self.request("PATCH", path, **kwargs)

    # -- login (see cfauth.login) --------------------------------------------------

    @property
    def account(self) -> str:
        """The account's current origin (after a migration, the new one)."""
        return self.driver.machine.account.origin

    def grant_status(self) -> GrantStatus:
        """What is known about this client's grant (expiry times, whether a
        refresh is due); never a token."""
        machine = self.driver.machine
        return GrantStatus.of(
            machine.account.origin, machine.tokens, self.driver.now(), machine.config
        )

    def authorization_url(
        self, *, state: str | None = None, code_verifier: str | None = None
    ) -> AuthorizationStart:
        """Start a login (no I/O): the URL to send the user to, and the
        ``state`` and ``code_verifier`` to keep until the callback (generated
        with :mod:`secrets` unless given)."""
        check_login_app(self.driver.machine.credential)
        state, code_verifier = login_values(state, code_verifier, self.driver.machine.config)
        return AuthorizationStart(self.driver.authorize(state, code_verifier), state, code_verifier)

    def complete_authorization(
        self,
        callback_url: str,
        *,
        state: str | None = None,
        code_verifier: str | None = None,
        redirected_at: float | None = None,
    ) -> None:
        """Finish a login with the URL the browser came back to: exchange the
        code and store the grant.  Pass the ``state`` and ``code_verifier`` that
        :meth:`authorization_url` returned when this client is not the one that
        started the login (a web application's callback request)."""
        if state is not None:
            self.driver.authorize(state, code_verifier)
        self.driver.complete_authorization(callback_url, redirected_at=redirected_at)

    def login(
        self,
        *,
        open_browser: bool = True,
        timeout: float = 300.0,
        state: str | None = None,
        code_verifier: str | None = None,
        show: Callable[[str], None] | None = None,
        countdown: Callable[[float], None] | None = None,
    ) -> None:
        """Log in from a desktop or command-line program: listen on the
        redirect URI (``http://127.0.0.1:PORT/...`` or ``localhost``), show the
        authorize URL (``show(url)``, default: print it to stderr) and open it
        in a browser, wait up to ``timeout`` seconds for the callback, exchange
        the code and store the grant."""
        app = check_login_app(self.driver.machine.credential)
        start = self.authorization_url(state=state, code_verifier=code_verifier)
        with LoopbackReceiver(app.redirect_uri, start.state) as receiver:
            announce_login(start.url, open_browser=open_browser, show=show)
            callback = receiver.wait(timeout, countdown)
        self.complete_authorization(callback, redirected_at=self.driver.now())

    def logout(self) -> None:
        """Forget the grant and delete it from the store."""
        self.driver.logout()

    def close(self) -> None:
        """Close the driver, and the transport if this client owns one."""
        try:
            self.driver.close()
        finally:
            if self.transport is not None:
                self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ClosingTransport(Protocol):
    """A transport that holds connections (what :func:`build_client` takes)."""

    def __call__(self, request: Request) -> Response: ...

    def close(self) -> None: ...


def build_client(
    account: str | Account,
    credential: Credential,
    transport: ClosingTransport,
    *,
    tokens: TokenSet | None = None,
    store: TokenStore | GrantStore | None = None,
    config: Config | None = None,
    on_behalf: str | None = None,
    forwarded_for: str | None = None,
    on_account_moved: Callable[[str, str], None] | None = None,
) -> Client:
    """A :class:`Client` that owns ``transport``: the machine for ``account``
    and ``credential``, with OAuth2 tokens from ``tokens`` or else the store.
    A :class:`~cfauth.stores.GrantStore` is used through its grant for this
    account and client (``GrantKey.for_account``); a stored origin (the account
    migrated) is used from the first call."""
    account, store, tokens = open_grant(account, credential, store, tokens)
    machine = Machine(account, credential, tokens, config=config)
    driver = Driver(machine, transport, store=store, on_account_moved=on_account_moved)
    return Client(driver, on_behalf=on_behalf, forwarded_for=forwarded_for, transport=transport)
