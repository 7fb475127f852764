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

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from cfauth_core import (
    Account,
    CallbackReceived,
    ClockTick,
    Config,
    Credential,
    Deliver,
    Event,
    Fail,
    LogoutRequested,
    Machine,
    Params,
    Request,
    Store,
    TokenSet,
)

from ._driver import BaseClient, DriverCore, Work, new_machine, run_steps, store_io
from ._http import Response, Transport
from .login import LoopbackReceiver, announce_login, check_login_app
from .stores import GrantStore, TokenStore

__all__ = ["Client", "ClosingTransport", "Driver", "build_client"]


class Driver(DriverCore):
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
        super().__init__(machine, store, clock, on_account_moved)
        self._send = send
        self._sleep = sleep
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wake_waiters = False

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
        event = self._call_requested(method, path, params, data, headers)
        work: Work = deque()
        with self._lock:
            call_id = self._start_call(event, work)
            self._notify()
        try:
            outcome = self._run_call(call_id, work)
        finally:
            with self._lock:
                self._mail.pop(call_id, None)
        return self._response(outcome)

    def authorize(self, state: str, code_verifier: str | None) -> str:
        """Start an OAuth2 login; return the URL to send the user to.

        ``state`` and ``code_verifier`` must be fresh random values
        (``secrets.token_urlsafe(16)`` and ``secrets.token_urlsafe(64)``).
        """
        with self._lock:
            return self._start_login(state, code_verifier)

    def complete_authorization(self, callback: str, *, redirected_at: float | None = None) -> None:
        """Finish a login with the URL (or query string) the browser came back
        to; block until the code is exchanged and the tokens stored.  Raises
        the error the login failed with."""
        work: Work = deque()
        event = CallbackReceived(now=self._clock(), url=callback, redirected_at=redirected_at)
        # The URL holds the code: keep it out of this frame's locals, which
        # error reporters upload with the traceback of a failed login.
        del callback
        with self._lock:
            self._login = None
            self._handle(event, None, work)
        self._execute(work, None)
        with self._lock:
            self._login_result()

    def logout(self) -> None:
        """Forget the grant: the machine drops its tokens and the store deletes its
        record; calls then fail with ``ReauthorizationRequired`` until a new login.
        Raises :exc:`~cfauth_core.LocalProtocolError` while a refresh or a login's
        code exchange is in flight (log out once it has ended)."""
        work: Work = deque()
        with self._lock:
            self._handle(LogoutRequested(now=self._clock()), None, work)

    def tick(self) -> None:
        """Tell the machine the time: start a refresh that is due (so tokens
        stay fresh between calls) and run it to completion."""
        work: Work = deque()
        with self._lock:
            self._handle(ClockTick(now=self._clock()), None, work)
        self._execute(work, None)

    def scrub(self, text: str, limit: int = 300) -> str:
        """Server text made fit for a message: see :meth:`cfauth_core.Machine.scrub`."""
        with self._lock:
            return self.scrub_text(text, limit)

    def close(self) -> None:
        """Refuse new calls.  Closing the transport is the transport's owner's job."""
        self._closed = True

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the loop -----------------------------------------------------------------

    def _run_call(self, call_id: int, work: Work) -> Deliver | Fail:
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
                    pending = deque(mail)
                    mail.clear()
                self._abandon(pending, call_id)
                raise

    def _wake(self, call_id: int) -> None:
        self._wake_waiters = True  # notified once the routing is done

    def _notify(self) -> None:
        if self._wake_waiters:
            self._wake_waiters = False
            self._changed.notify_all()

    def _handle(self, event: Event, owner: int | None, work: Work) -> None:
        """Feed one event and route its actions.  The lock must be held."""
        super()._handle(event, owner, work)
        self._notify()

    def _on_store(self, action: Store, work: Work) -> None:
        # Saved at once, under the lock: no thread can send with the new tokens
        # before they are persisted, because the machine cannot be entered
        # until the save returned.
        event = run_steps(self.steps(action), self._io)
        if event is not None:  # StoreFailed: the machine decides what follows
            self._route(self.machine.handle(event), None, work)

    def _execute(self, work: Work, owner: int | None) -> None:
        """Execute ``work`` in order, outside the lock, feeding back the results."""
        while work:
            action = work.popleft()
            try:
                event = run_steps(self.steps(action), self._io)
            except BaseException:
                work.appendleft(action)
                self._abandon(work, owner)
                raise
            if event is not None:
                with self._lock:
                    self._handle(event, owner, work)

    def _io(self, kind: str, argument: Any) -> Any:
        """Do one piece of I/O for :meth:`~cfauth._driver.DriverCore.steps`."""
        if kind == "send":
            return self._send(argument)
        if kind == "sleep":
            self._sleep(argument)
            return None
        store = self._store
        assert store is not None
        return store_io(store, kind, argument)

    def _abandon(self, pending: Work, owner: int | None) -> None:
        """An interrupt stopped this thread: report what it will not do."""
        with self._lock:
            for action in self.abandon(pending, owner, "interrupted"):
                event = run_steps(self.steps(action), self._io)
                if event is not None:
                    self._route(self.machine.handle(event), owner, pending)
            self._notify()


class Client(BaseClient):
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
        super().__init__(on_behalf, forwarded_for)
        self.driver = driver
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
        extra = self._headers(headers, on_behalf, forwarded_for)
        response = self.driver.request(method, path, params=params, data=data, headers=extra)
        return self._checked(response, check)

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
    machine, token_store = new_machine(account, credential, store, tokens, config)
    driver = Driver(machine, transport, store=token_store, on_account_moved=on_account_moved)
    return Client(driver, on_behalf=on_behalf, forwarded_for=forwarded_for, transport=transport)
