"""A complete, minimal, single-threaded adapter for cfauth_core over http.client."""

from __future__ import annotations

import http.client
import secrets
import ssl
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import cfauth_core as cf

TLS = ssl.create_default_context()  # verifies certificates and host names


def send(request: cf.Request) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send one request exactly as given: no redirects, no retries (http.client does neither)."""
    url = urlsplit(request.url)
    conn: http.client.HTTPConnection
    if url.scheme == "https":
        conn = http.client.HTTPSConnection(url.hostname or "", url.port, timeout=30, context=TLS)
    else:  # only with Account.parse(..., insecure_loopback=True), in tests
        conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    try:
        conn.putrequest(request.method, url.path + (f"?{url.query}" if url.query else ""))
        for name, value in request.headers:
            conn.putheader(name, value)
        if request.body is not None:
            conn.putheader("Content-Length", str(len(request.body)))
        conn.endheaders(request.body)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


class BlockingAdapter:
    """Feeds events, executes actions in order, returns when the call (or login) has ended."""

    def __init__(self, machine: cf.Machine) -> None:
        self.machine = machine
        self.stored: cf.TokenSet | None = machine.tokens  # stands in for a real token store
        self.origin = machine.account.origin  # what you would persist in your configuration

    def call(self, method: str, path: str, **kwargs: Any) -> cf.Deliver:
        ended = self._run(cf.CallRequested(now=time.time(), method=method, path=path, **kwargs))
        if isinstance(ended, cf.Fail):
            raise ended.error
        assert isinstance(ended, cf.Deliver)
        return ended

    def login(self) -> None:
        state, verifier = secrets.token_urlsafe(16), secrets.token_urlsafe(64)
        event = cf.AuthorizationRequested(now=time.time(), state=state, code_verifier=verifier)
        ended = self._run(event)
        if isinstance(ended, cf.AuthorizationFailed):
            raise ended.error

    def _run(self, event: cf.Event) -> cf.Action:
        ended: cf.Action | None = None
        todo = deque(self.machine.handle(event))
        while todo:
            action = todo.popleft()
            if isinstance(action, (cf.Deliver, cf.Fail, cf.Authorized, cf.AuthorizationFailed)):
                ended = action
            reply = self._execute(action)
            if reply is not None:
                todo.extend(self.machine.handle(reply))
        assert ended is not None, "every call and every login ends with one of those four"
        return ended

    def _execute(self, action: cf.Action) -> cf.Event | None:
        now = time.time
        if isinstance(action, cf.Send):
            try:
                status, headers, body = send(action.request)
            except (OSError, http.client.HTTPException) as exc:
                return cf.SendFailed(now=now(), request_id=action.request_id, reason=repr(exc))
            return cf.ResponseReceived(
                now=now(), request_id=action.request_id, status=status, headers=headers, body=body
            )
        if isinstance(action, cf.Store):
            self.stored = action.tokens  # a real store writes action.tokens.to_dict() durably
        elif isinstance(action, cf.AcquireLease):  # one thread, one process: the lease is trivial
            if action.unsaved is not None:  # a Store that failed: save it before reading
                self.stored = action.unsaved
            return cf.TokensLoaded(now=now(), tokens=self.stored)
        elif isinstance(action, cf.RetryAt):
            time.sleep(max(0.0, action.at - now()))
            return cf.ClockTick(now=now())
        elif isinstance(action, cf.AccountMoved):
            self.origin = action.new_origin
        elif isinstance(action, cf.AuthorizeAt):
            print(f"Open {action.url}\nallow access, then paste the address you land on:")
            return cf.CallbackReceived(now=now(), url=input("> "))
        # CallAccepted (the first action of a call that waits: a call's first action
        # names it, its Send, its Fail or CallAccepted; one call at a time here, so the
        # id is not needed), ReleaseLease, Deliver, Fail, Authorized, AuthorizationFailed,
        # RefreshAborted, AuthorizationLost: nothing to execute (_run keeps the ending action).
        return None
