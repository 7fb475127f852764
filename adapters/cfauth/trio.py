"""The trio binding: an async driver for any ``await send(Request) -> Response``
callable, and :class:`H11Transport`, an HTTP/1.1 client on trio streams and h11.

Theory of operation: the driver
-------------------------------
:class:`Driver` mirrors :class:`cfauth.sync.Driver` method for method; read
that module first.  What differs, and why:

* **No lock around the machine.**  Trio runs one task at a time and only
  switches at a checkpoint (an ``await`` that yields).  The driver never awaits
  between feeding an event to the machine and routing the last of its actions,
  so every ``handle`` and its routing are atomic, exactly what the sync
  driver's lock buys.  Every place the sync driver writes ``with self._lock:``
  is, here, simply code without an ``await``.

* **Store I/O runs in worker threads, and every Send waits for it.**  Saving
  new tokens may take a database round trip, so ``store.save`` runs in
  ``trio.to_thread.run_sync``, executed by the task whose event produced the
  ``Store`` (in list order: before the ``ReleaseLease`` that follows it).  The
  machine emits ``Store`` before any ``Send`` that uses the new tokens, and the
  driver marks a save as pending while routing it, with no checkpoint in
  between; every ``Send`` waits, just before it goes out, until no save is
  pending.  So no request carries tokens that are not yet persisted, and the
  event loop never blocks on the store.  The save itself is shielded from
  cancellation (the thread cannot be stopped anyway), so a pending save always
  ends and never strands the waiting Sends.

* **The lease runs in worker threads.**  ``acquire_lease`` may block for as long
  as another process holds the lease, and ``load``/``release_lease`` may touch
  files or databases, so they run in ``trio.to_thread.run_sync``.  Taking the
  lease and loading happen in one thread call, so a cancellation cannot land
  between the two with the lease held and nobody knowing.  (Stores therefore must
  accept being called from more than one thread.)

* **Waiting.**  A task with nothing to do waits on its own ``trio.Event``
  (no polling); it is set when an action for its call arrives or its call ends.

* **Cancellation** plays the part of the sync driver's ``KeyboardInterrupt``.  A
  task cancelled while it performs a ``Send``, the lease or a retry wait, or
  while it waits for its mail, reports the interrupted and unexecuted work to the
  machine as failed (``SendFailed``, ``LeaseFailed``), releases the lease if it
  held it, and cancels its own call (``CallCancelled``), inside a shielded cancel
  scope.  So a cancelled refresher fails its waiters instead of leaving them
  waiting forever, and the next call refreshes again.

The transport, :class:`H11Transport`, lives in ``cfauth._h11`` (re-exported here).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

try:
    import h11  # noqa: F401 - the extra's first module, named when it is missing
    import trio
except ImportError as error:  # installed without the trio extra
    from ._extras import missing_extra

    raise missing_extra("cfauth.trio", "trio", error) from None

from cfauth_core import (
    Account,
    CallbackReceived,
    ClockTick,
    Config,
    Credential,
    Deliver,
    Fail,
    LogoutRequested,
    Machine,
    Params,
    Request,
    Send,
    Store,
    TokenSet,
)

from ._driver import BaseClient, DriverCore, Steps, Work, new_machine, take_lease
from ._h11 import H11Transport
from ._http import (
    DEFAULT_MAX_RESPONSE_SIZE,
    DEFAULT_TOTAL_TIMEOUT,
    Response,
)
from .login import LoopbackReceiver, announce_login, check_login_app
from .stores import GrantStore, TokenStore

__all__ = ["AsyncTransport", "Client", "Driver", "H11Transport", "client"]

log = logging.getLogger("cfauth")

#: An async transport: send the request exactly as given (no redirects, no
#: retries) and return the response, or raise ``TransportFailure``/``OSError``.
AsyncTransport = Callable[[Request], Awaitable[Response]]

# Documented (and pickled, and shown in reprs) where users import it, as trio
# does for its own re-exported classes.
H11Transport.__module__ = __name__


class Driver(DriverCore):
    """Drives one machine (one grant) over an async transport, for any number of tasks.

    ``store`` persists tokens and provides the cross-process refresh lease;
    without one, tokens live only in the machine.  ``clock`` and ``sleep`` are
    injectable for tests (with ``trio.testing.MockClock``, pass a clock that
    reads ``trio.current_time()``).  ``on_account_moved(old_origin,
    new_origin)`` is called when the account migrates, so the caller can
    persist the new origin.
    """

    def __init__(
        self,
        machine: Machine,
        send: AsyncTransport,
        *,
        store: TokenStore | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = trio.sleep,
        on_account_moved: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__(machine, store, clock, on_account_moved)
        self._send = send
        self._sleep = sleep
        self._wakeups: dict[int, trio.Event] = {}
        self._pending_saves = 0  # Store actions routed but not yet saved
        self._saved = trio.Event()  # set when no save is pending
        self._saved.set()

    # -- public API -----------------------------------------------------------

    async def request(
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
        call_id = self._start_call(event, work)
        try:
            outcome = await self._run_call(call_id, work)
        finally:
            self._mail.pop(call_id, None)
            self._wakeups.pop(call_id, None)
        return self._response(outcome)

    def authorize(self, state: str, code_verifier: str | None) -> str:
        """Start an OAuth2 login; return the URL to send the user to.

        ``state`` and ``code_verifier`` must be fresh random values
        (``secrets.token_urlsafe(16)`` and ``secrets.token_urlsafe(64)``).
        No I/O happens, so this is not a coroutine.
        """
        return self._start_login(state, code_verifier)

    async def complete_authorization(
        self, callback: str, *, redirected_at: float | None = None
    ) -> None:
        """Finish a login with the URL (or query string) the browser came back
        to; return when the code is exchanged and the tokens stored.  Raises
        the error the login failed with."""
        work: Work = deque()
        event = CallbackReceived(now=self._clock(), url=callback, redirected_at=redirected_at)
        # The URL holds the code: keep it out of this frame's locals, which
        # error reporters upload with the traceback of a failed login.
        del callback
        self._login = None
        self._handle(event, None, work)
        await self._execute(work, None)
        self._login_result()

    def logout(self) -> None:
        """Forget the grant: the machine drops its tokens and the store deletes its
        record; calls then fail with ``ReauthorizationRequired`` until a new login.
        Raises :exc:`~cfauth_core.LocalProtocolError` while a refresh or a login's
        code exchange is in flight (log out once it has ended).  No I/O on the
        network, so this is not a coroutine."""
        work: Work = deque()
        self._handle(LogoutRequested(now=self._clock()), None, work)

    async def tick(self) -> None:
        """Tell the machine the time: start a refresh that is due (so tokens
        stay fresh between calls) and run it to completion."""
        work: Work = deque()
        self._handle(ClockTick(now=self._clock()), None, work)
        await self._execute(work, None)

    def scrub(self, text: str, limit: int = 300) -> str:
        """Server text made fit for a message: see :meth:`cfauth_core.Machine.scrub`."""
        return self.scrub_text(text, limit)

    async def aclose(self) -> None:
        """Refuse new calls.  Closing the transport is the transport's owner's job."""
        self._closed = True

    async def __aenter__(self) -> Driver:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the loop -----------------------------------------------------------------

    async def _run_call(self, call_id: int, work: Work) -> Deliver | Fail:
        while True:
            await self._execute(work, call_id)
            mail = self._mail[call_id]
            while not mail and call_id not in self._outcomes:
                wakeup = self._wakeups[call_id] = trio.Event()
                try:
                    await wakeup.wait()
                except BaseException:
                    # Cancelled while waiting: what arrived for this call will
                    # not be executed; report it, and the call, as abandoned.
                    await self._abandon(mail, call_id)
                    raise
            outcome = self._outcomes.pop(call_id, None)
            if outcome is not None:
                assert not mail, "a call's outcome is its last action"
                return outcome
            work.extend(mail)
            mail.clear()

    def _wake(self, call_id: int) -> None:
        wakeup = self._wakeups.get(call_id)
        if wakeup is not None:
            wakeup.set()

    def _on_store(self, action: Store, work: Work) -> None:
        # Saved in a worker thread by this task, in list order; every Send
        # waits until no save is pending (see "Store I/O" above).
        if self._pending_saves == 0:
            self._saved = trio.Event()
        self._pending_saves += 1
        work.append(action)

    async def _execute(self, work: Work, owner: int | None) -> None:
        """Execute ``work`` in order, feeding back the results."""
        while work:
            action = work.popleft()
            if self._pending_saves and type(action) is Send:
                # A Send waits for pending saves; one queued behind it in this
                # very task would never run, so it goes first (saving earlier
                # is always allowed).
                for index, queued in enumerate(work):
                    if type(queued) is Store:
                        del work[index]
                        work.appendleft(action)
                        action = queued
                        break
            try:
                event = await self._run_steps(self.steps(action))
            except BaseException:
                work.appendleft(action)
                await self._abandon(work, owner)
                raise
            if event is not None:
                self._handle(event, owner, work)

    async def _run_steps(self, steps: Steps) -> Any:
        """Run ``steps`` to the end, awaiting its I/O (see ``run_steps``)."""
        try:
            request = next(steps)
            while True:
                try:
                    result = await self._io(*request)
                except Exception as error:
                    request = steps.throw(error)
                else:
                    request = steps.send(result)
        except StopIteration as stop:
            return stop.value

    async def _io(self, kind: str, argument: Any) -> Any:
        """Do one piece of I/O for :meth:`~cfauth._driver.DriverCore.steps`."""
        if kind == "send":
            if self._pending_saves:  # persisted before used: see "Store I/O" above
                await self._saved.wait()
            return await self._send(argument)
        if kind == "sleep":
            await self._sleep(argument)
            return None
        store = self._store
        assert store is not None
        if kind == "lease":
            # Not abandoned on cancellation: once the thread runs, the lease
            # is taken and TokensLoaded reported, so a later cancellation
            # finds the refresh Send in progress and releases the lease.
            return await trio.to_thread.run_sync(take_lease, store, argument)
        if kind == "save":
            try:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(store.save, *argument)
            finally:
                self._pending_saves -= 1
                if self._pending_saves == 0:
                    self._saved.set()
        elif kind == "origin":
            await trio.to_thread.run_sync(store.save_origin, argument)
        else:
            await trio.to_thread.run_sync(store.release_lease)
        return None

    async def _abandon(self, pending: Work, owner: int | None) -> None:
        """This task was cancelled (or interrupted): report what it will not do,
        so no other task waits for it."""
        with trio.CancelScope(shield=True):
            for action in self.abandon(pending, owner, "cancelled"):
                event = await self._run_steps(self.steps(action))
                if event is not None:
                    self._handle(event, owner, pending)


class Client(BaseClient):
    """A Checkfront API client on top of a :class:`Driver`.

    ``on_behalf`` (``X-On-Behalf``: a staff account id, or ``"off"`` to act as
    a customer) and ``forwarded_for`` (``X-Forwarded-For``: the end customer's
    IP) apply to every call unless a call gives its own.  ``transport``, if
    given, is a transport this client owns: :meth:`aclose` closes it.
    """

    def __init__(
        self,
        driver: Driver,
        *,
        on_behalf: str | None = None,
        forwarded_for: str | None = None,
        transport: H11Transport | None = None,
    ) -> None:
        super().__init__(on_behalf, forwarded_for)
        self.driver = driver
        self.transport = transport

    async def request(
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
        response = await self.driver.request(method, path, params=params, data=data, headers=extra)
        return self._checked(response, check)

    async def get(self, path: str, **kwargs: Any) -> Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Response:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> Response:
        return await self.request("PUT", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Response:
        return await self.request("DELETE", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> Response:
        return await self.request("PATCH", path, **kwargs)

    # -- login (see cfauth.login; the same as cfauth.sync.Client's) ----------------

    async def complete_authorization(
        self,
        callback_url: str,
        *,
        state: str | None = None,
        code_verifier: str | None = None,
        redirected_at: float | None = None,
    ) -> None:
        """Finish a login with the URL the browser came back to (see
        :meth:`cfauth.sync.Client.complete_authorization`)."""
        if state is not None:
            self.driver.authorize(state, code_verifier)
        await self.driver.complete_authorization(callback_url, redirected_at=redirected_at)

    async def login(
        self,
        *,
        open_browser: bool = True,
        timeout: float = 300.0,
        state: str | None = None,
        code_verifier: str | None = None,
        show: Callable[[str], None] | None = None,
        countdown: Callable[[float], None] | None = None,
    ) -> None:
        """Log in from a desktop or command-line program (see
        :meth:`cfauth.sync.Client.login`); the receiver waits in a worker thread."""
        app = check_login_app(self.driver.machine.credential)
        start = self.authorization_url(state=state, code_verifier=code_verifier)
        with LoopbackReceiver(app.redirect_uri, start.state) as receiver:
            announce_login(start.url, open_browser=open_browser, show=show)
            try:
                callback = await trio.to_thread.run_sync(
                    receiver.wait, timeout, countdown, abandon_on_cancel=True
                )
            except trio.Cancelled:
                receiver.cancel()
                raise
        await self.complete_authorization(callback, redirected_at=self.driver.now())

    async def logout(self) -> None:
        """Forget the grant and delete it from the store."""
        self.driver.logout()

    async def aclose(self) -> None:
        """Close the driver, and the transport if this client owns one."""
        try:
            await self.driver.aclose()
        finally:
            if self.transport is not None:
                await self.transport.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def client(
    account: Account | str,
    credential: Credential,
    *,
    tokens: TokenSet | None = None,
    store: TokenStore | GrantStore | None = None,
    config: Config | None = None,
    ssl_context: ssl.SSLContext | None = None,
    ca_file: str | None = None,
    connect_timeout: float = 10.0,
    read_timeout: float = 30.0,
    total_timeout: float | None = DEFAULT_TOTAL_TIMEOUT,
    max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
    resolve: Mapping[str, str] | None = None,
    pool_size: int | None = None,
    max_connections_per_origin: int = 10,
    on_behalf: str | None = None,
    forwarded_for: str | None = None,
    on_account_moved: Callable[[str, str], None] | None = None,
) -> Client:
    """A ready :class:`Client` over an :class:`H11Transport` it owns.

    ``account`` is an :class:`~cfauth_core.Account` or what
    :meth:`Account.parse <cfauth_core.Account.parse>` takes (``"acme"``).  For
    an :class:`~cfauth_core.OAuth2App` without ``tokens``, the tokens are
    loaded from ``store`` (this blocks briefly: call it before the event loop
    is busy, or pass ``tokens``).  Use it as ``async with client(...) as c:``.
    """
    machine, token_store = new_machine(account, credential, store, tokens, config)
    transport = H11Transport(
        ssl_context=ssl_context,
        ca_file=ca_file,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        total_timeout=total_timeout,
        max_response_size=max_response_size,
        resolve=resolve,
        max_connections_per_origin=max_connections_per_origin if pool_size is None else pool_size,
    )
    driver = Driver(machine, transport, store=token_store, on_account_moved=on_account_moved)
    return Client(driver, on_behalf=on_behalf, forwarded_for=forwarded_for, transport=transport)
