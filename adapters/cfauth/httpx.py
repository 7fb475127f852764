"""cfauth for httpx (``pip install 'cfauth[httpx]'``): :class:`CheckfrontAuth`,
an ``httpx.Auth`` for ``httpx.Client`` and ``httpx.AsyncClient`` (asyncio and trio)::

    import httpx
    from cfauth.httpx import CheckfrontAuth
    from cfauth.stores import SqliteStore
    from cfauth_core import OAuth2App

    auth = CheckfrontAuth("acme", OAuth2App(client_id, client_secret, redirect_uri),
                          store=SqliteStore())
    with httpx.Client(base_url="https://acme.checkfront.com/api/3.0/", auth=auth) as api:
        print(api.get("booking/index", params={"status_id": "PAID"}).json())

Theory of operation
-------------------
httpx's ``Auth`` is a generator flow: it yields a request, httpx sends it and
sends back the response, until the flow returns (httpx then returns the last
response) or raises.  That is the shape of the core's protocol, so one shared
step function, :meth:`_Driver.flow`, runs every request: it turns the httpx
request into a ``CallRequested``, executes the machine's actions with
:meth:`~cfauth._driver.DriverCore.steps` (the same steps the other drivers
run), and yields *I/O requests* (``(kind, argument)``).  ``sync_auth_flow``
and ``async_auth_flow`` are the thin part: they answer ``"http"`` by yielding
the request to httpx, and everything else (reading a body, waiting, sleeping,
store I/O) by blocking or by awaiting.  No decision is taken here: the core
decides where credentials go, what to re-send, when to refresh.

*Which requests get credentials.*  Only requests to the account's origin
(or an origin it moved away from) under the API base (``/api/3.0/``) are
calls: the core builds their URL and ``Authorization`` header.  Any other
request (another host, the account's public pages) is sent exactly as
given, with no credentials.

*The request sent.*  The first send of a call is the caller's own request
with ``Authorization`` set (its URL, headers and body untouched); when it is
the call's only action (the token is fresh: the common case) the flow sends
it and reports a 2xx answer without going through the general loop, which
is what keeps the auth within a few microseconds of a static header.  When the
core re-sends (after a refresh, a 429, a redirect) to the same URL, the same
request goes again, which needs a body that can be replayed (bytes, form,
JSON: httpx keeps them); a streaming body (a generator or a file being
uploaded) cannot be, and the call fails with :class:`BodyNotReplayable`
before anything is sent again.  A redirect the core follows gets a new
request to the core's URL with the caller's headers and body (none after a
303).

*Threads and tasks.*  One ``threading.Lock`` guards the machine, in both
flavours: it is held only to feed an event and route the actions, never
across I/O or an ``await``.  So one ``CheckfrontAuth`` may serve the threads
of a ``Client`` and the tasks of an ``AsyncClient`` at once.  The core's single
flight makes calls wait while a refresh runs; a flow with nothing to do waits
for its mail: on a ``threading.Event`` (sync) or an ``anyio.Event`` (async:
anyio, which httpx depends on, works under asyncio and trio), woken
thread-safely when an action for its call arrives.  The refresh request is
sent by the flow whose event started it, through that flow's client; the
calls it releases are re-sent by their own flows.

*Persisted before used.*  A ``Store`` of new tokens is executed by the flow
that produced it; until it is saved, every flow about to send waits (the
trio driver's barrier).  Store I/O (the lease, saves) runs in a worker
thread in async flows (``anyio.to_thread``), so the event loop never blocks
on a database; the save itself is shielded from cancellation.

*Interrupted flows.*  httpx closes the flow when sending fails or the task
is cancelled.  The flow then reports the unfinished work to the machine as
failed (a refresh in flight fails its waiters, the next call refreshes
again), cancels its call, and the wrapper releases a lease it held.

*Redirects.*  With ``follow_redirects=False`` (httpx's default) the flow sees
every 3xx and the core judges it: the migration to the account's new origin
(and same-origin redirects) are followed with credentials, the method and
body kept (303 becomes GET); anything else fails with ``UntrustedRedirect``
and nothing goes there.  With ``follow_redirects=True`` httpx follows a
redirect before the flow sees it; httpx drops ``Authorization`` whenever the
origin changes, so no credential leaves, and the flow then replays the chain
through the core: hops the core agrees with are taken as they are, a
migration httpx followed without credentials is re-sent to the trusted new
origin with them, and a chain the core refuses fails with
``UntrustedRedirect`` (httpx has already made that request, without
credentials).  Token requests (refresh) are sent through the same client;
their bodies never follow a redirect httpx takes (see :class:`_TokenBody`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import Any
from urllib.parse import parse_qsl

try:
    import httpx  # noqa: I001 - the extra's own module first, named when it is missing
    import anyio
except ImportError as error:  # installed without the httpx extra
    from ._extras import missing_extra

    raise missing_extra("cfauth.httpx", "httpx", error) from None

from cfauth_core import (
    Account,
    Action,
    CallbackReceived,
    CallRequested,
    Config,
    Credential,
    Deliver,
    Event,
    Fail,
    InvalidInput,
    LogoutRequested,
    Request,
    ResponseReceived,
    Send,
    Store,
    TokenSet,
    UntrustedRedirect,
)

from ._driver import IO, BaseClient, DriverCore, Steps, Work, new_machine, run_steps, store_io
from ._http import Response
from .login import LoopbackReceiver, announce_login, check_login_app
from .stores import GrantStore, TokenStore

__all__ = ["BodyNotReplayable", "CheckfrontAuth"]

log = logging.getLogger("cfauth")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class BodyNotReplayable(InvalidInput):
    """A call must be sent again (after a refresh, a rate limit or a
    redirect) but its body was a stream that has been read: it cannot be sent
    a second time.  Nothing more was sent."""


def _body_not_replayable(method: str, url: str) -> BodyNotReplayable:
    return BodyNotReplayable(
        f"{method} {url} must be sent again (a refresh, rate limit or redirect needs it), "
        "but its body is a stream that was already read and cannot be replayed: pass the "
        "body as bytes, data= or json= (or call request.read() before sending) so cfauth "
        "can send it again"
    )


class _TokenBody(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A token request's body (a refresh token, a code): it can be read once.

    The flow sends it once; if httpx (``follow_redirects=True``) re-sends the
    request to a redirect target (307/308), reading it a second time fails
    with ``UntrustedRedirect`` before any byte of it is written there, so the
    core's rule (token requests follow only a migration, judged by the core)
    holds whatever the client's settings.
    """

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body

    def _take(self) -> bytes:
        body, self._body = self._body, None
        if body is None:
            raise UntrustedRedirect(
                "the token endpoint answered a redirect and httpx (follow_redirects=True) "
                "tried to send the token request's body there; cfauth does not let it: "
                "use follow_redirects=False on this client (cfauth follows the account's "
                "migration itself)",
                location="",
            )
        return body

    def __iter__(self) -> Generator[bytes, None, None]:
        yield self._take()

    async def __aiter__(self) -> AsyncGenerator[bytes, None]:
        yield self._take()


class _SyncWaiter:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = threading.Event()

    def wake(self) -> None:
        self.event.set()


class _AsyncWaiter:
    """An ``anyio.Event`` another thread may set (through the event loop)."""

    __slots__ = ("event", "loop_thread", "soon")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.loop_thread = threading.get_ident()
        self.soon: Callable[[Callable[[], None]], object] | None = None
        try:
            self.soon = asyncio.get_running_loop().call_soon_threadsafe
        except RuntimeError:  # not asyncio: trio (anyio's other backend), loaded
            self.soon = sys.modules["trio"].lowlevel.current_trio_token().run_sync_soon

    def wake(self) -> None:
        if threading.get_ident() == self.loop_thread:
            self.event.set()
        else:
            assert self.soon is not None
            self.soon(self.event.set)


_Waiter = _SyncWaiter | _AsyncWaiter


class _Call:
    """One flow's call: the caller's request and what was sent for it (a
    login's flow has no request and no call)."""

    __slots__ = (
        "chain",
        "first_url",
        "id",
        "last",
        "origin",
        "preloaded",
        "redirects",
        "request",
        "seen",
        "sent",
    )

    def __init__(self, request: httpx.Request | None, origin: str) -> None:
        self.id: int | None = None
        self.request = request
        self.origin = origin
        self.first_url: str | None = None  # the URL of the core's first Send
        self.sent = False  # the caller's request went out once (its body was read)
        self.seen = 0  # responses this flow received (httpx's history grows by them)
        self.last: httpx.Response | None = None  # the response httpx will return
        self.chain: list[httpx.Response] = []  # hops httpx followed, not yet replayed
        self.redirects: list[httpx.Response] = []  # the call's redirect responses
        self.preloaded: httpx.Response | None = None  # see _Driver._run_call


def _origin(url: httpx.URL) -> str:
    host = url.raw_host.decode("ascii")
    if ":" in host:
        host = f"[{host}]"
    port = url.port
    return f"{url.scheme}://{host}:{port}" if port is not None else f"{url.scheme}://{host}"


def _authorization(request: Request) -> str:
    """The ``Authorization`` value the core put on an API call's request."""
    for name, value in request.headers:
        if name == "Authorization":
            return value
    raise AssertionError("the core sends every API call with credentials")


def _replayable(stream: object) -> bool:
    return isinstance(stream, httpx.ByteStream)


class _Driver(DriverCore):
    """The machine, the routing and the shared step function of the flows."""

    def __init__(
        self,
        account: str | Account,
        credential: Credential,
        store: TokenStore | GrantStore | None,
        tokens: TokenSet | None,
        config: Config | None,
        clock: Callable[[], float],
        on_account_moved: Callable[[str, str], None] | None,
    ) -> None:
        configured = Account.parse(account) if isinstance(account, str) else account
        machine, token_store = new_machine(configured, credential, store, tokens, config)
        super().__init__(machine, token_store, clock, self._moved)
        self._user_on_account_moved = on_account_moved
        self._lock = threading.Lock()
        self._waiters: dict[int, _Waiter] = {}
        self._save_waiters: list[_Waiter] = []
        self._pending_saves = 0
        self.login_state: str | None = None  # the state of the login this auth started
        #: Origins the account moved away from: a request there is still a call
        #: (the core sends it to the current origin).
        self._former: set[str] = set()
        self._origins: dict[tuple[str, bytes, int | None], str] = {}  # URL parts -> origin
        if configured.origin != machine.account.origin:  # the store knows it moved
            self._former.add(configured.origin)

    # -- hooks ------------------------------------------------------------------

    def _moved(self, old_origin: str, new_origin: str) -> None:
        self._former.add(old_origin)
        self._former.discard(new_origin)
        if self._user_on_account_moved is not None:
            self._user_on_account_moved(old_origin, new_origin)

    def _wake(self, call_id: int) -> None:
        waiter = self._waiters.pop(call_id, None)
        if waiter is not None:
            waiter.wake()

    def _on_store(self, action: Store, work: Work) -> None:
        # Saved by this flow, in list order; every send waits until no save is
        # pending (see "Persisted before used").
        self._pending_saves += 1
        work.append(action)

    def arm(self, key: int | None, waiter: _Waiter) -> bool:
        """Register ``waiter`` for mail to call ``key`` (or, for ``None``, the
        end of pending saves); ``False`` when there is no need to wait."""
        with self._lock:
            if key is None:
                if not self._pending_saves:
                    return False
                self._save_waiters.append(waiter)
                return True
            if self._mail.get(key) or key in self._outcomes:
                return False
            self._waiters[key] = waiter
            return True

    def _saved(self) -> None:
        with self._lock:
            self._pending_saves -= 1
            if not self._pending_saves:
                waiters, self._save_waiters = self._save_waiters, []
                for waiter in waiters:
                    waiter.wake()

    # -- the shared step function ---------------------------------------------

    def _target(self, request: httpx.Request) -> tuple[str, str] | None:
        """``(origin, path under the API base)`` for a call, ``None`` for a
        request that gets no credentials."""
        url = request.url
        key = (url.scheme, url.raw_host, url.port)
        origin = self._origins.get(key)
        if origin is None:
            if len(self._origins) >= 64:
                self._origins.clear()
            origin = self._origins[key] = _origin(url)
        account = self.machine.account
        if origin != account.origin and origin not in self._former:
            return None
        path = url.path
        base = account.api_base
        if not path.startswith(base):
            return None
        return origin, path[len(base) :]

    def flow(self, request: httpx.Request, leftovers: list[Action]) -> Generator[IO, Any, None]:
        """Run ``request``: yield I/O requests until its response is the last
        one received (return) or the call failed (raise).  On an interruption,
        ``leftovers`` receives the actions whose I/O must still happen."""
        target = self._target(request)
        if target is None:
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s %s is not an API call of %s: sent without credentials",
                    request.method,
                    _origin(request.url),
                    self.machine.account.origin,
                )
            yield ("http", request)
            return
        origin, path = target
        query = request.url.query
        params = parse_qsl(query.decode("ascii"), keep_blank_values=True) if query else None
        event = CallRequested(now=self._clock(), method=request.method, path=path, params=params)
        call = _Call(request, origin)
        work: Work = deque()
        with self._lock:
            call_id = call.id = self._start_call(event, work)
        try:
            outcome: Deliver | Fail | None = None
            send = work[0] if len(work) == 1 else None
            if (
                type(send) is Send
                and send.call_id == call_id
                and not self._pending_saves
                and send.request.url.startswith(origin + "/")
            ):
                # The common case, a ready call: its one Send, executed here
                # without the general loop (the same steps, inline).
                request.headers["Authorization"] = _authorization(send.request)
                call.first_url = send.request.url
                call.sent = True
                response = self._received(call, (yield ("http", request)))
                status = response.status_code
                if status < 300 and response is call.last:
                    work.popleft()
                    if log.isEnabledFor(logging.DEBUG):  # as DriverCore.steps logs it
                        log.debug(
                            "%s %s (%s) -> %d",
                            request.method,
                            send.request.url,
                            send.purpose,
                            status,
                        )
                    answer = ResponseReceived(
                        now=self._clock(),
                        request_id=send.request_id,
                        status=status,
                        headers=(),
                        body=b"",
                    )
                    with self._lock:
                        self._handle(answer, call_id, work)
                    if not work:  # else the general loop executes it first
                        outcome = self._outcomes.pop(call_id, None)
                else:  # the general loop judges it
                    call.preloaded = response
            if outcome is None:
                outcome = yield from self._run_call(call, call_id, work)
        except BaseException:
            # Interrupted (httpx closed the flow, a cancellation, an error):
            # report what this flow will not do, so nobody waits for it.
            with self._lock:
                pending = deque(work)
                unread = self._mail.get(call_id)
                if unread:
                    pending.extend(unread)
                    unread.clear()
                leftovers.extend(self.abandon(pending, call_id, "interrupted"))
            raise
        finally:
            with self._lock:
                self._mail.pop(call_id, None)
                self._waiters.pop(call_id, None)
        if type(outcome) is Fail:
            raise outcome.error
        if call.seen > 1 and call.last is not None:
            # httpx gives the last response the flow's earlier responses as its
            # history; keep only the call's redirects (not token responses).
            call.last.history = list(call.redirects)

    def _run_call(
        self, call: _Call, call_id: int, work: Work
    ) -> Generator[IO, Any, Deliver | Fail]:
        """The general loop: execute the work, wait for mail, until the call ends."""
        while True:
            yield from self._execute(work, call)
            outcome = self._outcomes.pop(call_id, None)
            if outcome is not None:
                return outcome
            yield ("wait", call_id)
            with self._lock:
                mail = self._mail[call_id]
                work.extend(mail)
                mail.clear()

    def _execute(self, work: Work, call: _Call) -> Generator[IO, Any, None]:
        """Execute ``work`` in order, feeding back the results."""
        owner = call.id
        while work:
            action = work.popleft()
            if self._pending_saves and type(action) is Send:
                # A Send waits for pending saves; one queued behind it in this
                # very flow would never run, so it goes first.
                for index, queued in enumerate(work):
                    if type(queued) is Store:
                        del work[index]
                        work.appendleft(action)
                        action = queued
                        break
            try:
                event = yield from self.step(action, call)
            except BaseException:
                work.appendleft(action)
                raise
            if event is not None:
                with self._lock:
                    self._handle(event, owner, work)

    def step(self, action: Action, call: _Call) -> Generator[IO, Any, Event | None]:
        """Run ``action``'s steps, doing their I/O through the flow."""
        steps: Steps = self.steps(action)
        try:
            io = next(steps)
            while True:
                kind = io[0]
                if kind == "send":
                    assert isinstance(action, Send)
                    if call.preloaded is not None:
                        outgoing = call.preloaded.request
                    else:
                        outgoing = self._outgoing(action, call)  # may raise: nothing sent
                    try:
                        result: Any = yield from self._send(action, outgoing, call)
                    except Exception as error:
                        io = steps.throw(error)
                        continue
                else:
                    try:
                        result = yield io
                    except Exception as error:
                        if kind == "save":
                            self._saved()
                        io = steps.throw(error)
                        continue
                    if kind == "save":
                        self._saved()
                io = steps.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _outgoing(self, send: Send, call: _Call) -> httpx.Request:
        """The httpx request that carries ``send``."""
        core = send.request
        request = call.request
        if send.call_id is None or request is None:
            # A token request (refresh, code exchange): exactly the core's.
            token_request = httpx.Request(
                core.method, core.url, headers=core.headers, content=core.body or b""
            )
            token_request.stream = _TokenBody(core.body or b"")
            return token_request
        authorization = _authorization(core)
        if call.first_url is None:
            call.first_url = core.url
        stream = request.stream
        if call.sent and not _replayable(stream) and core.method == request.method:
            raise _body_not_replayable(request.method, core.url.partition("?")[0])
        if core.url == call.first_url and core.url.startswith(call.origin + "/"):
            # The caller's own request (its URL as written, its body).
            request.headers["Authorization"] = authorization
            return request
        url = httpx.URL(core.url)
        headers = request.headers.copy()
        headers["Authorization"] = authorization
        headers["Host"] = url.netloc.decode("ascii")
        if core.method != request.method:  # a 303: GET, no body
            stream = httpx.ByteStream(b"")
            for name in ("Content-Length", "Transfer-Encoding", "Content-Type"):
                headers.pop(name, None)
        return httpx.Request(
            core.method, url, headers=headers, stream=stream, extensions=request.extensions
        )

    def _send(
        self, send: Send, outgoing: httpx.Request, call: _Call
    ) -> Generator[IO, Any, Response]:
        while self._pending_saves:  # persisted before used
            yield ("wait", None)
        response = call.preloaded  # the fast path's answer to this very Send
        if response is not None:
            call.preloaded = None
        elif call.chain:
            # Hops httpx already followed (follow_redirects=True): take the
            # next one if it is exactly what the core asks for.
            hop = call.chain.pop(0)
            sent = hop.request
            if (
                sent.method == outgoing.method
                and sent.url == outgoing.url
                and sent.headers.get("Authorization") == outgoing.headers.get("Authorization")
            ):
                response = hop
            else:
                call.chain.clear()
        if response is None:
            if send.call_id is not None:
                call.sent = True
            response = self._received(call, (yield ("http", outgoing)))
        status = response.status_code
        if send.call_id is not None:
            if status < 300:  # the core looks no further (the caller reads it)
                return Response(status, (), b"", "")
            if status in _REDIRECTS:
                call.redirects.append(response)
        yield ("read", response)
        return Response(status, tuple(response.headers.multi_items()), response.content, "")

    @staticmethod
    def _received(call: _Call, response: httpx.Response) -> httpx.Response:
        """Note what httpx answered; return the response the core must judge
        (the first redirect when httpx followed some: the rest are replayed)."""
        call.last = response
        hops = response.history[call.seen :]
        call.seen += 1
        if hops:  # httpx followed redirects (follow_redirects=True)
            call.chain = [*hops[1:], response]
            return hops[0]
        return response

    # -- login ----------------------------------------------------------------

    def authorize(self, state: str, code_verifier: str | None) -> str:
        with self._lock:
            url = self._start_login(state, code_verifier)
            self.login_state = state
            return url

    def resume(self, state: str | None, code_verifier: str | None) -> None:
        """Make the login ``state`` names the pending one: nothing to do when
        this auth started it, else start it again with its values (another
        process or instance started it)."""
        if state is not None and state != self.login_state:
            self.authorize(state, code_verifier)

    def complete(self, callback: str, redirected_at: float | None) -> Generator[IO, Any, None]:
        """The code exchange, as I/O requests (see :meth:`flow`)."""
        work: Work = deque()
        event = CallbackReceived(now=self._clock(), url=callback, redirected_at=redirected_at)
        del callback  # it holds the code: keep it out of this frame's locals
        with self._lock:
            self._login = None
            self._handle(event, None, work)
        yield from self._execute(work, _Call(None, ""))
        with self._lock:
            self._login_result()

    def logout(self) -> None:
        work: Work = deque()
        with self._lock:
            self._handle(LogoutRequested(now=self._clock()), None, work)

    def scrub(self, text: str, limit: int = 300) -> str:
        with self._lock:
            return self.scrub_text(text, limit)

    def leftover(self, action: Action) -> Generator[IO, Any, None]:
        """The I/O of an interrupted flow's leftover ``action`` (see :meth:`flow`),
        and reporting its result (new work is abandoned in turn)."""
        call = _Call(None, "")
        event = yield from self.step(action, call)
        if event is not None:
            with self._lock:
                work: Work = deque()
                self._handle(event, None, work)
                more = list(self.abandon(work, None, "interrupted"))
            for next_action in more:
                yield from self.leftover(next_action)


class CheckfrontAuth(httpx.Auth, BaseClient):
    """Authenticate an ``httpx.Client`` or ``httpx.AsyncClient`` with Checkfront.

    ``account`` is an :class:`~cfauth_core.Account` or what
    :meth:`Account.parse <cfauth_core.Account.parse>` takes (``"acme"``);
    ``credential`` an :class:`~cfauth_core.ApiKey` (token pair: Basic) or an
    :class:`~cfauth_core.OAuth2App` (Bearer, refreshed and rotated).  ``store``
    keeps the grant and gives the cross-process refresh lease; OAuth2 tokens
    come from ``tokens`` or else the store (loading blocks briefly: build the
    auth before the event loop is busy).  ``on_account_moved(old, new)`` is
    called when the account migrates.  ``clock`` and ``sleep`` are for tests
    with a virtual clock (``sleep`` then replaces waiting for a retry time,
    in sync and async flows alike).

    One instance serves any number of threads and tasks (see the module's
    docstring); share it, so they share one refresh.
    """

    requires_request_body = False
    requires_response_body = False
    driver: _Driver

    def __init__(
        self,
        account: str | Account,
        credential: Credential,
        *,
        store: TokenStore | GrantStore | None = None,
        config: Config | None = None,
        on_account_moved: Callable[[str, str], None] | None = None,
        tokens: TokenSet | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        BaseClient.__init__(self, None, None)
        self.driver = _Driver(account, credential, store, tokens, config, clock, on_account_moved)
        self._sleep = sleep

    def __repr__(self) -> str:
        machine = self.driver.machine
        return f"<CheckfrontAuth {machine.account.origin} {type(machine.credential).__name__}>"

    # -- the flows (thin: see _Driver.flow) --------------------------------------

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        leftovers: list[Action] = []
        flow = self.driver.flow(request, leftovers)
        try:
            io = next(flow)
            while True:
                if io[0] == "http":
                    result = yield io[1]
                else:
                    try:
                        result = self._sync_io(*io)
                    except Exception as error:
                        io = flow.throw(error)
                        continue
                io = flow.send(result)
        except StopIteration:
            return
        except BaseException:
            flow.close()
            self._sync_leftovers(leftovers)
            raise

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        leftovers: list[Action] = []
        flow = self.driver.flow(request, leftovers)
        try:
            io = next(flow)
            while True:
                if io[0] == "http":
                    result = yield io[1]
                else:
                    try:
                        result = await self._async_io(*io)
                    except Exception as error:
                        io = flow.throw(error)
                        continue
                io = flow.send(result)
        except StopIteration:
            return
        except BaseException:
            flow.close()
            with anyio.CancelScope(shield=True):
                await self._async_leftovers(leftovers)
            raise

    def _sync_io(self, kind: str, argument: Any) -> Any:
        if kind == "read":
            return argument.read()
        if kind == "wait":
            waiter = _SyncWaiter()
            if self.driver.arm(argument, waiter):
                waiter.event.wait()
            return None
        if kind == "sleep":
            (self._sleep or time.sleep)(argument)
            return None
        store = self.driver._store
        assert store is not None
        return store_io(store, kind, argument)

    async def _async_io(self, kind: str, argument: Any) -> Any:
        if kind == "read":
            return await argument.aread()
        if kind == "wait":
            waiter = _AsyncWaiter()
            if self.driver.arm(argument, waiter):
                await waiter.event.wait()
            return None
        if kind == "sleep":
            if self._sleep is not None:
                self._sleep(argument)
            else:
                await anyio.sleep(argument)
            return None
        store = self.driver._store
        assert store is not None
        if kind == "save":  # shielded: the thread cannot be stopped anyway
            with anyio.CancelScope(shield=True):
                return await anyio.to_thread.run_sync(store_io, store, kind, argument)
        return await anyio.to_thread.run_sync(store_io, store, kind, argument)

    def _sync_leftovers(self, leftovers: list[Action]) -> None:
        for action in leftovers:
            run_steps(self.driver.leftover(action), self._sync_io)

    async def _async_leftovers(self, leftovers: list[Action]) -> None:
        for action in leftovers:
            await _run_async_steps(self.driver.leftover(action), self._async_io)

    # -- login (the same as the other clients': see cfauth.login) ---------------

    def complete_authorization(
        self,
        callback_url: str,
        *,
        client: httpx.Client,
        state: str | None = None,
        code_verifier: str | None = None,
        redirected_at: float | None = None,
    ) -> None:
        """Finish a login with the URL the browser came back to: exchange the
        code through ``client`` and store the grant.  Pass the ``state`` and
        ``code_verifier`` that :meth:`authorization_url` returned when this
        auth is not the one that started the login (a web application's
        callback request)."""
        self.driver.resume(state, code_verifier)
        steps = self.driver.complete(callback_url, redirected_at)
        del callback_url
        run_steps(steps, lambda kind, argument: self._login_io(client, kind, argument))

    async def acomplete_authorization(
        self,
        callback_url: str,
        *,
        client: httpx.AsyncClient,
        state: str | None = None,
        code_verifier: str | None = None,
        redirected_at: float | None = None,
    ) -> None:
        """:meth:`complete_authorization` for an ``httpx.AsyncClient``."""
        self.driver.resume(state, code_verifier)
        steps = self.driver.complete(callback_url, redirected_at)
        del callback_url

        async def io(kind: str, argument: Any) -> Any:
            if kind == "http":
                return await client.send(argument, auth=None, follow_redirects=False)
            return await self._async_io(kind, argument)

        await _run_async_steps(steps, io)

    def _login_io(self, client: httpx.Client, kind: str, argument: Any) -> Any:
        if kind == "http":
            return client.send(argument, auth=None, follow_redirects=False)
        return self._sync_io(kind, argument)

    def login(
        self,
        client: httpx.Client,
        *,
        open_browser: bool = True,
        timeout: float = 300.0,
        state: str | None = None,
        code_verifier: str | None = None,
        show: Callable[[str], None] | None = None,
        countdown: Callable[[float], None] | None = None,
    ) -> None:
        """Log in from a desktop or command-line program (see
        :meth:`cfauth.sync.Client.login`), exchanging the code through ``client``."""
        app = check_login_app(self.driver.machine.credential)
        start = self.authorization_url(state=state, code_verifier=code_verifier)
        with LoopbackReceiver(app.redirect_uri, start.state) as receiver:
            announce_login(start.url, open_browser=open_browser, show=show)
            callback = receiver.wait(timeout, countdown)
        self.complete_authorization(callback, client=client, redirected_at=self.driver.now())

    def logout(self) -> None:
        """Forget the grant and delete it from the store."""
        self.driver.logout()


async def _run_async_steps(
    steps: Generator[IO, Any, Any], io: Callable[[str, Any], Awaitable[Any]]
) -> Any:
    """Run ``steps`` to the end, awaiting its I/O (see ``run_steps``)."""
    try:
        request = next(steps)
        while True:
            try:
                result = await io(*request)
            except Exception as error:
                request = steps.throw(error)
            else:
                request = steps.send(result)
    except StopIteration as stop:
        return stop.value
