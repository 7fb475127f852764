"""What every driver shares, without I/O: routing the machine's actions, the
steps that turn an action into I/O and its result into an event, giving up a
call, the :class:`BaseClient` logic and the factories' arguments.

Theory of operation
-------------------
A driver (``cfauth.sync``, ``cfauth.trio``) owns a :class:`DriverCore` and adds
only what blocks, awaits or locks: executing the I/O, waiting for mail, the
lock (sync) or the pending-save barrier (trio).  This is httpx's ``BaseClient``
model: the two send paths differ only by ``await``.

:meth:`DriverCore.steps` is a generator, one per action to execute.  It
yields :data:`IO` requests (``(kind, argument)``) and is resumed with their
result (``send``) or their exception (``throw``); its return value is the event
that reports the action to the machine (or ``None``).  A driver runs it with
the I/O of its flavour; an httpx ``Auth`` flow can run the same generator and
answer its ``"send"`` requests by yielding them to httpx.

:meth:`DriverCore.abandon` is a generator too: it reports interrupted or
unexecuted work to the machine as failed, and yields the I/O that must still
happen (releasing a lease, saving tokens or an origin) for the driver to do.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

from cfauth_core import (
    Account,
    AccountMoved,
    AcquireLease,
    Action,
    AuthorizationFailed,
    AuthorizationLost,
    AuthorizationRequested,
    AuthorizeAt,
    Authorized,
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
    Machine,
    Params,
    RefreshAborted,
    ReleaseLease,
    ResponseReceived,
    RetryAt,
    Send,
    SendFailed,
    Store,
    StoreFailed,
    TokenSet,
    TokensLoaded,
    call_id_of,
    check_header_value,
)

from ._http import (
    Response,
    call_headers,
    check_api_response,
    failure_reason,
    iso_time,
    iso_times,
    send_retryable,
)
from .login import AuthorizationStart, GrantStatus, check_login_app, login_values
from .stores import GrantStore, TokenStore, open_grant

__all__ = [
    "IO",
    "BaseClient",
    "DriverCore",
    "Steps",
    "Work",
    "new_machine",
    "run_steps",
    "store_io",
    "take_lease",
]

log = logging.getLogger("cfauth")

#: Work a thread or task executes outside the machine, in order.
Work = deque[Action]

#: An I/O request of :meth:`DriverCore.steps`: ``("send", Request)`` answered
#: with a ``Response``; ``("sleep", seconds)``; ``("lease", AcquireLease.unsaved)``
#: answered with the stored tokens and client authentication form (see
#: :func:`take_lease`); ``("save", (TokenSet, client_auth))``;
#: ``("origin", str)``; ``("release", None)``.
IO = tuple[str, Any]

#: A step: yields I/O requests, returns the event that reports the action.
Steps = Generator[IO, Any, "Event | None"]


def take_lease(store: TokenStore, unsaved: TokenSet | None) -> tuple[TokenSet | None, str | None]:
    """Take the store's lease, save ``unsaved`` (``AcquireLease.unsaved``: tokens
    an earlier save failed to store) and reload the stored tokens with the
    client authentication form stored beside them (another process may have
    learnt it); if that fails, release the lease before raising.  Blocking:
    trio runs it in a worker thread, in one piece, so no cancellation lands
    between the two."""
    store.acquire_lease()
    try:
        if unsaved is not None:
            store.save(unsaved)
        record = store.load_record()
        return (None, None) if record is None else (record.tokens, record.client_auth)
    except BaseException:
        store.release_lease()
        raise


def store_io(store: TokenStore, kind: str, argument: Any) -> Any:
    """Do one store I/O request of :meth:`DriverCore.steps` (``"lease"``,
    ``"save"``, ``"origin"`` or ``"release"``), blocking."""
    if kind == "lease":
        return take_lease(store, argument)
    if kind == "save":
        store.save(*argument)
    elif kind == "origin":
        store.save_origin(argument)
    else:
        store.release_lease()
    return None


def new_machine(
    account: str | Account,
    credential: Credential,
    store: TokenStore | GrantStore | None,
    tokens: TokenSet | None,
    config: Config | None,
) -> tuple[Machine, TokenStore | None]:
    """The machine every factory builds, and the store its driver uses: a
    :class:`~cfauth.stores.GrantStore` is opened for this account and client,
    and a stored origin (the account migrated) is used from the first call."""
    account, token_store, tokens, client_auth = open_grant(account, credential, store, tokens)
    machine = Machine(account, credential, tokens, config=config, client_auth=client_auth)
    return machine, token_store


class DriverCore:
    """The state a driver keeps beside the machine, and the logic on it.

    A subclass provides :meth:`_wake` (a call's owner has mail or an outcome)
    and :meth:`_on_store` (what happens to a ``Store`` when it is routed).
    Every method here must run where the driver holds the machine (under the
    sync driver's lock; without a checkpoint in trio).
    """

    def __init__(
        self,
        machine: Machine,
        store: TokenStore | None,
        clock: Callable[[], float],
        on_account_moved: Callable[[str, str], None] | None,
    ) -> None:
        self.machine = machine
        self._store = store
        self._clock = clock
        self._on_account_moved = on_account_moved
        self._mail: dict[int, Work] = {}
        self._outcomes: dict[int, Deliver | Fail] = {}
        self._login: Authorized | AuthorizationFailed | None = None
        self._authorize_url: str | None = None
        self._closed = False

    # -- hooks --------------------------------------------------------------------

    def _wake(self, call_id: int) -> None:  # pragma: no cover - every driver overrides it
        raise NotImplementedError

    def _on_store(self, action: Store, work: Work) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    # -- events in, actions routed ------------------------------------------------

    def now(self) -> float:
        """The driver's clock (wall-clock seconds)."""
        return self._clock()

    def scrub_text(self, text: str, limit: int = 300) -> str:
        return self.machine.scrub(text, limit)

    def _call_requested(
        self,
        method: str,
        path: str,
        params: Params | None,
        data: Params | None,
        headers: Sequence[tuple[str, str]],
    ) -> CallRequested:
        if self._closed:
            raise LocalProtocolError("this client is closed; create a new one")
        return CallRequested(
            now=self._clock(),
            method=method,
            path=path,
            params=params,
            data=data,
            headers=tuple(headers) if headers else (),
        )

    def _start_call(self, event: CallRequested, work: Work) -> int:
        """Feed a new call; route its first actions; return its id."""
        actions = self.machine.handle(event)
        call_id = call_id_of(actions)  # the first action names the call
        self._mail[call_id] = deque()
        self._route(actions, call_id, work)
        return call_id

    def _start_login(self, state: str, code_verifier: str | None) -> str:
        work: Work = deque()
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

    def _login_result(self) -> None:
        """Raise what the login that just ended failed with."""
        result, self._login = self._login, None
        if isinstance(result, AuthorizationFailed):
            raise result.error
        if result is None:  # pragma: no cover - the machine always ends a login it started
            raise LocalProtocolError("the login did not finish")

    @staticmethod
    def _response(outcome: Deliver | Fail) -> Response:
        if isinstance(outcome, Fail):
            raise outcome.error
        return Response(outcome.status, outcome.headers, outcome.body, outcome.url)

    def _handle(self, event: Event, owner: int | None, work: Work) -> None:
        """Feed one event and route its actions."""
        self._route(self.machine.handle(event), owner, work)

    def _route(self, actions: list[Action], owner: int | None, work: Work) -> None:
        """Hand each action to whoever executes it: ``work`` (this thread or
        task, in order), another call's mail, an outcome, or at once."""
        for action in actions:
            kind = type(action)
            if kind is Send or kind is RetryAt:
                call_id = action.call_id  # type: ignore[attr-defined]
                if call_id is None or call_id == owner:
                    work.append(action)
                else:
                    self._mail[call_id].append(action)
                    self._wake(call_id)
            elif kind is Deliver or kind is Fail:
                call_id = action.call_id  # type: ignore[attr-defined]
                self._outcomes[call_id] = action  # type: ignore[assignment]
                if call_id != owner:  # the owner itself is not waiting
                    self._wake(call_id)
            elif kind is Store:
                log.debug(
                    "storing new tokens (expiring at %s)",
                    iso_time(action.tokens.expires_at),  # type: ignore[attr-defined]
                )
                if self._store is not None:
                    self._on_store(action, work)  # type: ignore[arg-type]
            elif kind is AcquireLease or kind is ReleaseLease:
                log.debug("%s", iso_times(repr(action)))
                work.append(action)
            elif kind is AccountMoved:
                assert isinstance(action, AccountMoved)
                log.info("the account moved from %s to %s", action.old_origin, action.new_origin)
                if self._on_account_moved is not None:
                    self._on_account_moved(action.old_origin, action.new_origin)
                if self._store is not None:  # persisted outside, before what follows
                    work.append(action)
            elif kind is Authorized or kind is AuthorizationFailed:
                self._login = action  # type: ignore[assignment]
            elif kind is AuthorizeAt:
                self._authorize_url = action.url  # type: ignore[attr-defined]
            elif kind is Forget:
                if self._store is not None:
                    self._store.delete()
            elif kind is RefreshAborted or kind is AuthorizationLost:
                log.warning("%s", action.error)  # type: ignore[attr-defined]

    # -- actions out, as I/O steps ---------------------------------------------

    def steps(self, action: Action) -> Steps:
        """The I/O that executes ``action`` (see the module's docstring)."""
        kind = type(action)
        if kind is Send:
            assert isinstance(action, Send)
            request = action.request
            try:
                response = yield ("send", request)
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
        if kind is RetryAt:
            assert isinstance(action, RetryAt)
            delay = action.at - self._clock()
            log.debug("call %d retries in %.3f s", action.call_id, max(delay, 0.0))
            if delay > 0:
                yield ("sleep", delay)
            return ClockTick(now=max(self._clock(), action.at))
        if kind is AcquireLease:
            if self._store is None:
                return TokensLoaded(now=self._clock(), tokens=None)
            assert isinstance(action, AcquireLease)
            try:
                tokens, client_auth = yield ("lease", action.unsaved)
            except Exception as error:
                return LeaseFailed(now=self._clock(), reason=failure_reason(error))
            return TokensLoaded(now=self._clock(), tokens=tokens, client_auth=client_auth)
        if kind is AccountMoved:
            assert isinstance(action, AccountMoved)
            try:
                yield ("origin", action.new_origin)
            except Exception as error:  # the machine uses the new origin anyway
                log.error("the store failed to save the new origin: %s", failure_reason(error))
            return None
        if kind is Store:
            assert isinstance(action, Store)
            try:
                yield ("save", (action.tokens, action.client_auth))
            except Exception as error:
                # The machine decides what follows (StoreFailed): the tokens
                # stay in use and are saved again under the lease.
                reason = failure_reason(error)
                log.error(  # no traceback: it may quote the record
                    "the token store failed to save new tokens (%s); they are used "
                    "from memory and saved again before the store is next read",
                    reason,
                )
                return StoreFailed(now=self._clock(), tokens=action.tokens, reason=reason)
            return None
        assert kind is ReleaseLease
        if self._store is not None:
            yield ("release", None)
        return None

    def abandon(self, pending: Work, owner: int | None, reason: str) -> Iterator[Action]:
        """Report ``pending`` (interrupted or not yet executed) to the machine as
        failed, then cancel ``owner``'s call, so no other thread or task waits
        for work that will not happen (a refresh in flight fails its waiters and
        the next call refreshes again).  Yields the actions whose I/O must still
        happen (a lease to release, tokens or an origin to save)."""
        while pending:
            action = pending.popleft()
            kind = type(action)
            if kind is Send:
                assert isinstance(action, Send)
                event: Event = SendFailed(
                    now=self._clock(), request_id=action.request_id, reason=reason
                )
                self._handle(event, owner, pending)
            elif kind is AcquireLease:
                self._handle(LeaseFailed(now=self._clock(), reason=reason), owner, pending)
            elif (kind is ReleaseLease and self._store is not None) or kind in (
                AccountMoved,
                Store,
            ):
                yield action
        if owner is not None:
            self._handle(CallCancelled(now=self._clock(), call_id=owner), owner, pending)
            self._outcomes.pop(owner, None)


def run_steps(steps: Steps, io: Callable[[str, Any], Any]) -> Event | None:
    """Run ``steps`` to the end with blocking ``io(kind, argument)``."""
    try:
        request = next(steps)
        while True:
            try:
                result = io(*request)
            except Exception as error:
                request = steps.throw(error)
            else:
                request = steps.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class BaseClient:
    """What :class:`cfauth.sync.Client` and :class:`cfauth.trio.Client` share.

    ``on_behalf`` (``X-On-Behalf``: a staff account id, or ``"off"`` to act as
    a customer) and ``forwarded_for`` (``X-Forwarded-For``: the end customer's
    IP) apply to every call unless a call gives its own.
    """

    driver: Any

    def __init__(self, on_behalf: str | None, forwarded_for: str | None) -> None:
        for what, value in (("on_behalf", on_behalf), ("forwarded_for", forwarded_for)):
            if value is not None:
                check_header_value(what, value)
        self.on_behalf = on_behalf
        self.forwarded_for = forwarded_for

    def _headers(
        self,
        headers: Sequence[tuple[str, str]],
        on_behalf: str | None,
        forwarded_for: str | None,
    ) -> list[tuple[str, str]]:
        return call_headers(
            headers,
            on_behalf if on_behalf is not None else self.on_behalf,
            forwarded_for if forwarded_for is not None else self.forwarded_for,
        )

    def _checked(self, response: Response, check: bool) -> Response:
        return check_api_response(response, self.driver.scrub) if check else response

    @property
    def account(self) -> str:
        """The account's current origin (after a migration, the new one)."""
        return str(self.driver.machine.account.origin)

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
        """Start a login (no I/O, never a coroutine): the URL to send the user
        to, and the ``state`` and ``code_verifier`` to keep until the callback
        (generated with :mod:`secrets` unless given)."""
        check_login_app(self.driver.machine.credential)
        state, code_verifier = login_values(state, code_verifier, self.driver.machine.config)
        return AuthorizationStart(self.driver.authorize(state, code_verifier), state, code_verifier)
