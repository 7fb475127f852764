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

Theory of operation: the transport
----------------------------------
:class:`H11Transport` keeps a pool of kept-alive connections per origin
(scheme, host, port).  A semaphore per origin bounds how many requests (hence
connections: one is opened only when no idle one is left) are in progress at
once; tasks beyond the cap wait for a slot.  A connection goes back to the pool
only when h11 says both sides finished the exchange cleanly (``DONE``/``DONE``)
and nothing arrived after the response: not in h11's buffer
(``trailing_data``), nor in the TLS layer, decrypted or not.  Those bytes (a
second response, a body longer than declared) would otherwise be read as the
next request's answer.  After any error, timeout or cancellation it is
closed, never reused, so a half-sent request can never be followed by another
one on the same socket.  Before an idle connection is reused its socket is
polled: readable means the server closed it or sent something unasked (a
``408`` before closing), and it is closed instead.

A kept-alive connection may have been closed by the server while idle; that
shows as an error before the first byte of the response.  Only then, only for
a connection taken from the pool, and only if the server cannot have acted on
the request twice (nothing of it written, an idempotent method, or an
``Idempotency-Key`` header), the request is sent again, once, on a fresh
connection.  A ``POST`` or ``PATCH`` that may have been processed raises
:class:`~cfauth.OutcomeUnknown` instead.  Nothing else is retried, and
redirects are returned as they are: the machine decides what to do with them.

``read_timeout`` bounds each wait for the server; ``total_timeout`` (default
60 s, ``None`` for none) the whole exchange once connected, so a server
dripping a byte at a time cannot hold a request for ever.  A body larger than
``max_response_size`` (default 64 MiB; 64 KiB for the token endpoint) fails
the request before it is buffered.  An end-of-file without TLS
``close_notify`` ends nothing: a body that only the close delimits is
incomplete then.  Messages never quote the response (h11's may).

The hot path is kept short: a free pool slot is taken without a checkpoint;
the parsed origin of each URL prefix and the h11 request head of each
(method, URL, headers, body length) are cached (bounded, emptied when full;
h11 validated each head, CR/LF included, when it was built); and the socket
under the TLS stream tries to send or receive before it waits, so a request
yields to the scheduler only where ``SSLStream`` does (its locks) or where it
must wait, and only those waits pay for a cancel scope (``read_timeout``).
"""

from __future__ import annotations

import errno
import logging
import re
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

try:
    import h11
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
from ._http import (
    DEFAULT_MAX_RESPONSE_SIZE,
    DEFAULT_TOTAL_TIMEOUT,
    Response,
    TransportFailure,
    check_limits,
    failure_reason,
    replayable,
    request_failure,
    response_cap,
)
from ._tls import check_options, parse_resolve, tls_context, untrusted_certificate
from .login import LoopbackReceiver, announce_login, check_login_app
from .stores import GrantStore, TokenStore

__all__ = ["AsyncTransport", "Client", "Driver", "H11Transport", "client"]

log = logging.getLogger("cfauth")

#: An async transport: send the request exactly as given (no redirects, no
#: retries) and return the response, or raise ``TransportFailure``/``OSError``.
AsyncTransport = Callable[[Request], Awaitable[Response]]


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
                    await trio.to_thread.run_sync(store.save, argument)
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


# -- the transport --------------------------------------------------------------

_DEFAULT_PORTS = {"https": 443, "http": 80}
_READ_SIZE = 65536
#: Errors that, on a kept-alive connection before any byte of the response,
#: mean the server closed it while it was idle.
_STALE = (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError)
#: How many parsed origins (per URL prefix) and built request heads are kept;
#: a full cache is emptied and refilled.
_ORIGIN_CACHE = 32
_MESSAGE_CACHE = 128
_END = h11.EndOfMessage()
#: What no header value may hold (RFC 9110 5.5): control characters but tab.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_NEED_DATA = h11.NEED_DATA
_DONE = h11.DONE


class _StaleConnection(Exception):
    """A pooled connection turned out to be closed: send again on a fresh one."""


class _TotalTimeout(trio.TooSlowError):
    """The request's ``total_timeout`` ran out."""


class _Origin:
    """Where a URL's requests go: its pool key, host and ``Host`` header."""

    __slots__ = ("authority", "host", "key", "port", "scheme", "text")

    def __init__(self, scheme: str, host: str, port: int, text: str) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.key = (scheme, host, port)
        authority = f"[{host}]" if ":" in host else host
        if port != _DEFAULT_PORTS[scheme]:
            authority += f":{port}"
        self.authority = authority
        self.text = text  # scheme://netloc, for messages


class _SocketStream(trio.abc.Stream):
    """A connected TCP socket as a trio stream that waits only when it must.

    ``trio.SocketStream`` yields to the scheduler on every call; under
    ``trio.SSLStream`` (which takes a lock, itself a checkpoint, around each
    use of its transport) that doubles the scheduler passes per request.  This
    one tries the socket first and waits for it only when it would block; each
    such wait is bounded by ``timeout`` (raising ``trio.TooSlowError``), which
    is what bounds every wait for the server, with no cancel scope on the
    path that does not wait.  With ``checkpoints`` (when nothing above it
    checkpoints: plain HTTP) every call is a checkpoint, as in trio.
    """

    __slots__ = ("checkpoints", "deadline", "poller", "sent", "sock", "timeout")

    def __init__(self, sock: socket.socket, timeout: float, checkpoints: bool) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.timeout = timeout
        self.checkpoints = checkpoints
        #: the request's ``total_timeout`` on trio's clock, if any
        self.deadline: float | None = None
        #: bytes the socket took, ever (a failure compares it to tell whether
        #: anything of its request went out)
        self.sent = 0
        self.poller: Any = None

    def idle(self) -> bool:
        """Whether the socket has nothing to read (no byte, no end-of-file):
        a server says nothing unasked on an idle HTTP/1.1 connection."""
        poller = self.poller
        try:
            if poller is None:
                poller = self.poller = select.poll()
                poller.register(self.sock, select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.checkpoints:
            await trio.lowlevel.checkpoint_if_cancelled()
        sock = self.sock
        with memoryview(data) as view:
            total = len(view)
            sent = 0
            while sent < total:
                try:
                    taken = sock.send(view[sent:])
                    sent += taken
                    self.sent += taken
                except BlockingIOError:
                    await self._wait(trio.lowlevel.wait_writable)
                except OSError as error:
                    raise _stream_error(error) from error
        if self.checkpoints:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await self._wait(trio.lowlevel.wait_writable)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.checkpoints:
            await trio.lowlevel.checkpoint_if_cancelled()
        yielded = False
        while True:
            try:
                data = self.sock.recv(max_bytes or _READ_SIZE)
            except BlockingIOError:
                if yielded:
                    await self._wait(trio.lowlevel.wait_readable)
                else:
                    # Let the scheduler run once first: an answer due within
                    # microseconds (loopback) then needs no cancel scope and
                    # no epoll registration.
                    yielded = True
                    await trio.lowlevel.cancel_shielded_checkpoint()
                continue
            except OSError as error:
                raise _stream_error(error) from error
            if self.checkpoints:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data

    async def _wait(self, wait: Callable[[socket.socket], Awaitable[None]]) -> None:
        until = trio.current_time() + self.timeout
        total = self.deadline is not None and self.deadline < until
        if total:
            until = self.deadline  # type: ignore[assignment]
        with trio.CancelScope(deadline=until) as scope:
            await wait(self.sock)
        if scope.cancelled_caught:
            raise _TotalTimeout if total else trio.TooSlowError

    async def aclose(self) -> None:
        if self.sock.fileno() != -1:
            trio.lowlevel.notify_closing(self.sock)  # a task waiting on it gets ClosedResourceError
            self.sock.close()
        await trio.lowlevel.checkpoint()


def _stream_error(error: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if error.errno == errno.EBADF:
        return trio.ClosedResourceError("the connection was closed")
    return trio.BrokenResourceError(f"socket connection broken: {error}")


class _Connection:
    """One HTTP/1.1 connection: a trio stream (``raw``, or TLS over it) and
    its h11 state."""

    __slots__ = ("h11", "raw", "stream", "tls")

    def __init__(self, stream: trio.abc.Stream, raw: _SocketStream) -> None:
        self.stream = stream
        self.raw = raw
        self.h11 = h11.Connection(our_role=h11.CLIENT)
        #: for TLS, what holds bytes received but not yet read: the TLS object
        #: (decrypted bytes, ``pending()``) and the buffer of bytes not yet
        #: decrypted (``SSLStream`` keeps both private; ``None`` if not found)
        self.tls: tuple[Any, Any] | None = None
        if isinstance(stream, trio.SSLStream):
            self.tls = (getattr(stream, "_ssl_object", None), getattr(stream, "_incoming", None))

    def clean(self) -> bool:
        """Whether nothing was received beyond the response just read: not in
        h11's buffer, nor in the TLS layer (decrypted or not).  Bytes there
        were not asked for, and would be read as the next request's answer."""
        if self.h11.trailing_data[0]:
            return False
        if self.tls is not None:
            decrypted, encrypted = self.tls
            if decrypted is None or encrypted is None:  # pragma: no cover - another trio
                return False  # cannot tell: never reuse
            if decrypted.pending() or encrypted.pending:
                return False
        return True


class _Pool:
    """The idle connections to one origin and the slots bounding its use."""

    __slots__ = ("idle", "slots")

    def __init__(self, size: int) -> None:
        self.idle: list[_Connection] = []
        self.slots = trio.Semaphore(size)


def _describe(error: BaseException) -> str:
    """What went wrong, for a message: trio wraps the OS or TLS error as the cause."""
    cause = error.__cause__ or error.__context__
    if isinstance(error, trio.BrokenResourceError) and cause is not None:
        error = cause
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return f"TLS certificate verification failed: {error.verify_message}"
    return failure_reason(error)


def _split(url: str) -> tuple[_Origin, str, str | None]:
    """``url``'s origin, request target, and the prefix (``scheme://netloc``,
    exactly as written) under which the origin may be cached, if any."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        host = parts.hostname
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        host = port = None
    if scheme not in _DEFAULT_PORTS or not host or port is None or "@" in parts.netloc:
        raise TransportFailure(
            f"cannot send to {scheme}://{parts.hostname}: only http(s)://host[:port] "
            "URLs without user info are supported"
        )
    text = f"{scheme}://{parts.netloc}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    end = url.find("/", 8)
    prefix = url[:end] if end > 0 else None
    if prefix is not None and prefix.lower() != text.lower():
        prefix = None  # whitespace, a query or a fragment before the path: not cacheable
    return _Origin(scheme, host, port, text), target, prefix


class H11Transport:
    """An HTTP/1.1 client on trio streams with h11, for :class:`Driver`.

    Sends each request exactly as given: no redirects, no retries (except one
    resend on a fresh connection when a kept-alive one was found closed before
    any answer).  TLS is verified against the system's CAs by default, or
    ``ca_file``, or ``ssl_context`` (which must verify certificates and host
    names over TLS 1.2 or later, or it is refused).  ``resolve`` maps
    ``"host:port"`` to the ``"address:port"`` to connect to instead, like
    curl's ``--resolve``: SNI, the certificate check and ``Host`` keep the real
    name.  ``connect_timeout`` bounds connecting and the TLS handshake;
    ``read_timeout`` bounds each wait for the server (sending or receiving),
    ``total_timeout`` (``None``: no limit) the whole exchange once connected;
    ``max_response_size`` is the largest response body accepted.
    At most ``max_connections_per_origin`` requests per origin are in progress
    at once; further tasks wait for a free connection.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        ca_file: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        resolve: Mapping[str, str] | None = None,
        total_timeout: float | None = DEFAULT_TOTAL_TIMEOUT,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        max_connections_per_origin: int = 10,
    ) -> None:
        check_options(
            connect_timeout,
            read_timeout,
            max_connections_per_origin,
            pool="max_connections_per_origin",
            least=1,
        )
        check_limits(total_timeout, max_response_size)
        self._ssl_context = tls_context(ssl_context, ca_file, alpn=["http/1.1"])
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._total_timeout = total_timeout
        self._max_response_size = max_response_size
        self._resolve = parse_resolve(resolve)
        self._max_connections = max_connections_per_origin
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        # URL prefix ("https://acme.checkfront.com") -> its parsed origin.
        self._origins: dict[str, _Origin] = {}
        # (method, url, headers, body length) -> the validated h11 request head.
        self._messages: dict[
            tuple[str, str, tuple[tuple[str, str], ...], int | None],
            tuple[h11.Request, _Origin],
        ] = {}
        self._closed = False

    async def __call__(self, request: Request) -> Response:
        url = request.url
        body = request.body
        key = (request.method, url, request.headers, None if body is None else len(body))
        try:
            cached = self._messages.get(key)
            hashable = True
        except TypeError:  # unhashable headers (lists): build every time
            cached = None
            hashable = False
        if cached is None:
            message, origin = self._message(request)
            if hashable:
                if len(self._messages) >= _MESSAGE_CACHE:
                    self._messages.clear()
                self._messages[key] = message, origin
        else:
            message, origin = cached
        if self._closed:
            raise TransportFailure("this transport is closed; create a new one")

        pool = self._pools.get(origin.key)
        if pool is None:
            pool = self._pools[origin.key] = _Pool(self._max_connections)
        slots = pool.slots
        try:
            slots.acquire_nowait()  # no checkpoint when a slot is free
        except trio.WouldBlock:
            await slots.acquire()
        total = self._total_timeout
        deadline = None if total is None else trio.current_time() + total
        try:
            idle = pool.idle
            while idle:
                connection = idle.pop()
                if not connection.raw.idle():
                    # closed, or bytes nobody asked for (a 408 before closing)
                    await trio.aclose_forcefully(connection.stream)
                    continue
                try:
                    return await self._send_on(pool, connection, message, request, deadline, True)
                except _StaleConnection as error:
                    log.debug(
                        "a kept-alive connection to %s was closed (%s); sending again",
                        origin.authority,
                        _describe(error.__cause__ or error),
                    )
                    break
            connection = await self._connect(origin)
            return await self._send_on(pool, connection, message, request, deadline, False)
        finally:
            slots.release()

    def _message(self, request: Request) -> tuple[h11.Request, _Origin]:
        """The h11 request head for ``request`` (validated by h11) and its origin."""
        url = request.url
        end = url.find("/", 8)
        origin = self._origins.get(url[:end]) if end > 0 else None
        target = url[end:]
        # A fragment, a tab or newline (urlsplit drops them) or a bare "?" take
        # the slow path; otherwise the target is the URL after its origin.
        if (
            origin is None
            or "#" in target
            or "\t" in target
            or "\r" in target
            or "\n" in target
            or target.endswith("?")
        ):
            origin, target, prefix = _split(url)
            if prefix is not None:
                if len(self._origins) >= _ORIGIN_CACHE:
                    self._origins.clear()
                self._origins[prefix] = origin
        headers = [("Host", origin.authority)]
        headers += [(k, v) for k, v in request.headers if k.lower() not in _FRAMING_HEADERS]
        body = request.body
        if body is not None or request.method in ("POST", "PUT", "PATCH"):
            headers.append(("Content-Length", str(len(body or b""))))
        try:
            # h11 validates the method, target and headers (refusing CR/LF).
            message = h11.Request(method=request.method, target=target, headers=headers)
        except h11.LocalProtocolError:
            # h11's message may quote the offending header value: a credential.
            raise TransportFailure(
                f"{request.method} {target.partition('?')[0]}: the method, target or a header "
                "is not valid HTTP/1.1 (not shown)"
            ) from None
        return message, origin

    async def aclose(self) -> None:
        """Close every idle connection; connections in use close when their request ends."""
        self._closed = True
        self._messages.clear()
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            idle, pool.idle = pool.idle, []
            for connection in idle:
                await trio.aclose_forcefully(connection.stream)

    async def __aenter__(self) -> H11Transport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _connect(self, origin: _Origin) -> _Connection:
        host, port = origin.host, origin.port
        address, address_port = self._resolve.get((host, port), (host, port))
        tls = origin.scheme == "https"
        try:
            with trio.fail_after(self._connect_timeout):
                opened = await trio.open_tcp_stream(address, address_port)
                # Take the socket (TCP_NODELAY set by trio) from trio's stream.
                fd = opened.socket.detach()
                try:
                    sock = socket.socket(fileno=fd)
                except BaseException:  # pragma: no cover - a valid fd is always taken
                    socket.close(fd)
                    raise
                # Until connected, each wait is bounded by the connect timeout.
                raw = _SocketStream(sock, self._connect_timeout, checkpoints=not tls)
                stream: trio.abc.Stream = raw
                if tls:
                    # https_compatible=False: an end-of-file without TLS
                    # close_notify is an error, not the end of a response
                    stream = wrapped = trio.SSLStream(
                        raw, self._ssl_context, server_hostname=host, https_compatible=False
                    )
                    try:
                        await wrapped.do_handshake()
                    except BaseException:
                        await trio.aclose_forcefully(wrapped)
                        raise
                raw.timeout = self._read_timeout
        except trio.TooSlowError:
            raise TransportFailure(
                f"connecting to {host}:{port} (TCP and TLS handshake) timed out after "
                f"{self._connect_timeout:g} s (connect_timeout)",
                unsent=True,
            ) from None
        except (OSError, trio.BrokenResourceError) as error:
            shown = f"{host}:{port}"
            if (address, address_port) != (host, port):
                shown += f" (via {address}:{address_port})"
            untrusted = untrusted_certificate(shown, error)
            if untrusted is not None:
                raise untrusted from error
            raise TransportFailure(
                f"could not connect to {shown}: {_describe(error)}", unsent=True
            ) from error
        return _Connection(stream, raw)

    async def _send_on(
        self,
        pool: _Pool,
        connection: _Connection,
        message: h11.Request,
        request: Request,
        deadline: float | None,
        reused: bool,
    ) -> Response:
        """One exchange on ``connection``; it goes back to the pool only if
        both sides finished cleanly and nothing followed the response.

        ``read_timeout`` bounds every wait for the server and ``deadline``
        (``total_timeout``) all of them: the connection's :class:`_SocketStream`
        applies both where it waits.
        """
        state = connection.h11
        stream = connection.stream
        raw = connection.raw
        raw.deadline = deadline
        sent_before = raw.sent
        body = request.body
        url = request.url
        complete = False  # the whole request went out
        received = False  # any byte of the response received
        keep = False
        limit = self._max_response_size
        if message.target.startswith(b"/oauth/token/"):
            limit = response_cap("/oauth/token/", limit)
        try:
            outgoing = state.send(message) or b""
            if body:
                outgoing += state.send(h11.Data(data=body)) or b""
            outgoing += state.send(_END) or b""
            response: h11.Response | None = None
            chunks: list[bytes] = []
            size = 0
            await stream.send_all(outgoing)
            complete = True
            while True:
                event = state.next_event()
                if event is _NEED_DATA:
                    chunk = await stream.receive_some(_READ_SIZE)
                    if chunk:
                        received = True
                    state.receive_data(bytes(chunk))
                elif type(event) is h11.Data:
                    size += len(event.data)
                    if size > limit:
                        raise TransportFailure(
                            f"the response from {_origin(url)} is larger than {limit} bytes "
                            "(max_response_size)"
                        )
                    chunks.append(event.data)
                elif type(event) is h11.Response:
                    response = event
                    for name, value in event.headers:
                        if _BAD_VALUE.search(value):
                            # h11 keeps control characters in values; the
                            # other transports refuse them, and so does this one
                            raise h11.RemoteProtocolError("control character in a header value")
                        if name == b"content-length" and int(value) > limit:
                            raise TransportFailure(
                                f"the response from {_origin(url)} ({int(value)} bytes) is "
                                f"larger than {limit} bytes (max_response_size)"
                            )
                elif type(event) is h11.EndOfMessage:
                    break
                elif type(event) is h11.ConnectionClosed:  # pragma: no cover - h11 raises
                    raise h11.RemoteProtocolError("the server closed the connection")
                # InformationalResponse (1xx): wait for the final response.
            assert response is not None
            if (
                state.our_state is _DONE
                and state.their_state is _DONE
                and not self._closed
                and connection.clean()
            ):
                state.start_next_cycle()
                raw.deadline = None
                pool.idle.append(connection)
                keep = True
        except trio.TooSlowError as error:
            if isinstance(error, _TotalTimeout):
                detail = (
                    f"{request.method} {_origin(url)}: the total timeout "
                    f"({self._total_timeout:g} s) ran out"
                )
            else:
                detail = (
                    f"{request.method}: no answer from {_origin(url)} within "
                    f"{self._read_timeout:g} s (read_timeout)"
                )
            raise self._failure(detail, request, raw.sent - sent_before, complete) from None
        except _STALE as error:
            written = raw.sent - sent_before
            if reused and not received and (written == 0 or replayable(request)):
                raise _StaleConnection from error
            if isinstance(error, h11.RemoteProtocolError):
                # h11's message may quote the response (a header line, a cookie)
                detail = f"{_origin(url)} sent a response that is not valid HTTP/1.1 (not shown)"
            else:
                detail = f"the connection to {_origin(url)} failed: {_describe(error)}"
            raise self._failure(
                f"{request.method}: {detail}", request, written, complete
            ) from error
        except h11.LocalProtocolError as error:  # pragma: no cover - heads are checked when built
            raise TransportFailure(
                f"{_origin(url)}: the request could not be sent: {type(error).__name__}"
            ) from error
        finally:
            if not keep:
                # Errors, timeouts and cancellation all land here: a connection
                # in an unknown state is never reused.
                await trio.aclose_forcefully(stream)
        headers = [
            (name.lower().decode("latin-1"), value.decode("latin-1"))
            for name, value in response.headers.raw_items()
        ]
        return Response(response.status_code, headers, b"".join(chunks), url)

    @staticmethod
    def _failure(message: str, request: Request, written: int, complete: bool) -> TransportFailure:
        return request_failure(message, request, written=written, complete=complete)


_FRAMING_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
