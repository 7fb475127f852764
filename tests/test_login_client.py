"""Login on the client (login(), authorization_url(), complete_authorization(),
logout(), account, grant_status()) for every driver, against the sandbox."""

from __future__ import annotations

import inspect
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import trio

import cfauth.stdlib
import cfauth.trio
import cfauth.urllib3
from cfauth import ApiError, Response
from cfauth.cli import browse
from cfauth.login import GrantStatus, LoginError, LoginTimedOut, LoopbackReceiver
from cfauth.sandbox import Sandbox
from cfauth.stores import GrantKey, MemoryStore
from cfauth_core import (
    ApiKey,
    Config,
    InvalidInput,
    OAuth2App,
    OAuthStateMismatch,
    ReauthorizationRequired,
    TokenSet,
)

KINDS = ("stdlib", "urllib3", "trio")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - loopback http
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


_OPEN: list[tuple[str, Any]] = []


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as box:
        yield box
        while _OPEN:
            kind, client = _OPEN.pop()
            run(kind, client, "aclose" if kind == "trio" else "close")


def app_for(sandbox: Sandbox, port: int | None = None) -> OAuth2App:
    redirect = f"http://127.0.0.1:{port or free_port()}/callback"
    cid, secret = sandbox.register_client("acme", redirect)
    return OAuth2App(cid, secret, redirect)


class Browser:
    """Plays the user: follows the authorize URL (auto-consent) and then the
    callback on the loopback receiver, optionally after a forged one."""

    def __init__(self, sandbox: Sandbox, forged_first: bool = False) -> None:
        self.sandbox = sandbox
        self.forged_first = forged_first
        self.answers: list[tuple[int, str]] = []
        self.thread: threading.Thread | None = None

    def __call__(self, url: str) -> None:
        self.thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self.thread.start()

    def _run(self, url: str) -> None:
        location = browse(url, port=self.sandbox.port, context=self.sandbox.ssl_context())
        if self.forged_first:
            base, _, _query = location.partition("?")
            self.answers.append(get(f"{base}?code=stolen&state=forged"))
            self.answers.append(get(base.rsplit("/", 1)[0] + "/elsewhere?state=x"))
        self.answers.append(get(location))


def make(kind: str, sandbox: Sandbox, credential: Any, **options: Any) -> Any:
    factory = {"stdlib": cfauth.stdlib, "urllib3": cfauth.urllib3, "trio": cfauth.trio}[kind]
    client = factory.client(
        "acme", credential, ssl_context=sandbox.ssl_context(), resolve=sandbox.resolve, **options
    )
    _OPEN.append((kind, client))
    return client


def run(kind: str, client: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``client.name(...)``, awaiting it on trio."""
    if kind != "trio":
        return getattr(client, name)(*args, **kwargs)

    async def main() -> Any:
        return await getattr(client, name)(*args, **kwargs)

    return trio.run(main)


@pytest.mark.parametrize("kind", KINDS)
def test_login_logs_in_stores_the_grant_and_calls(kind: str, sandbox: Sandbox) -> None:
    app = app_for(sandbox)
    store = MemoryStore()
    client = make(kind, sandbox, app, store=store)
    browser = Browser(sandbox, forged_first=True)
    assert client.grant_status().logged_in is False
    run(kind, client, "login", open_browser=False, timeout=30, show=browser)
    # The forged callback got 400, another path 404, the real one 200, in that order.
    assert [status for status, _ in browser.answers] == [400, 404, 200]
    assert "Logged in" in browser.answers[-1][1]
    record = store.load(GrantKey.for_account(client.driver.machine.account, app.client_id))
    assert record is not None
    assert record.tokens is not None
    response = run(kind, client, "get", "item")
    assert response.status == 200
    assert response.json() == __import__("json").loads(response.text)
    status = client.grant_status()
    assert status.logged_in
    assert status.access_expires_at == record.tokens.expires_at
    assert "token" not in repr(status.to_dict()).replace("_token", "")
    run(kind, client, "logout")
    assert store.load(GrantKey.for_account(client.driver.machine.account, app.client_id)) is None
    with pytest.raises(ReauthorizationRequired):
        run(kind, client, "get", "item")


@pytest.mark.parametrize("kind", KINDS)
def test_web_application_flow_across_two_clients(kind: str, sandbox: Sandbox) -> None:
    """The callback request is served by another client than the one that
    started the login: the kept state and verifier finish it."""
    app = app_for(sandbox)
    store = MemoryStore()
    first = make(kind, sandbox, app, store=store)
    start = first.authorization_url()
    assert start.state in start.url
    assert start.code_verifier is not None
    assert start.code_verifier not in start.url
    assert start.code_verifier not in repr(start)
    callback = browse(start.url, port=sandbox.port, context=sandbox.ssl_context())
    second = make(kind, sandbox, app, store=store)
    with pytest.raises(OAuthStateMismatch):
        run(
            kind,
            second,
            "complete_authorization",
            callback,
            state="another-state-of-22-chars",
            code_verifier=start.code_verifier,
        )
    run(
        kind,
        second,
        "complete_authorization",
        callback,
        state=start.state,
        code_verifier=start.code_verifier,
    )
    third = make(kind, sandbox, app, store=store)
    assert run(kind, third, "get", "item").status == 200


@pytest.mark.parametrize("kind", KINDS)
def test_account_follows_the_migration(kind: str, sandbox: Sandbox) -> None:
    info = sandbox.account("acme")
    client = make(kind, sandbox, ApiKey(info.api_key, info.api_secret))
    assert client.account == "https://acme.checkfront.com"
    sandbox.migrate("acme")
    run(kind, client, "get", "item")
    assert client.account == "https://acme.manage.na1.bookingplatform.app"


@pytest.mark.parametrize("kind", KINDS)
def test_factories_take_on_account_moved_and_store(kind: str, sandbox: Sandbox) -> None:
    info = sandbox.account("acme")
    moves: list[tuple[str, str]] = []
    client = make(
        kind,
        sandbox,
        ApiKey(info.api_key, info.api_secret),
        store=MemoryStore(),
        on_account_moved=lambda old, new: moves.append((old, new)),
    )
    sandbox.migrate("acme")
    run(kind, client, "get", "item")
    assert moves == [("https://acme.checkfront.com", "https://acme.manage.na1.bookingplatform.app")]


@pytest.mark.parametrize("kind", KINDS)
def test_token_pair_client_refuses_login(kind: str, sandbox: Sandbox) -> None:
    info = sandbox.account("acme")
    client = make(kind, sandbox, ApiKey(info.api_key, info.api_secret))
    with pytest.raises(LoginError, match="OAuth2App"):
        client.authorization_url()


def test_state_without_verifier_is_refused(sandbox: Sandbox) -> None:
    client = make("stdlib", sandbox, app_for(sandbox))
    with pytest.raises(InvalidInput, match="code_verifier"):
        client.authorization_url(state="s" * 22)
    start = client.authorization_url(state="s" * 22, code_verifier="v" * 64)
    assert start.state == "s" * 22


@pytest.mark.parametrize(
    "uri",
    [
        "https://127.0.0.1:8000/callback",
        "http://example.com:8000/callback",
        "http://127.0.0.1/callback",
        "http://10.0.0.1:8000/callback",
    ],
)
def test_receiver_refuses_redirect_uris_it_cannot_serve(uri: str) -> None:
    with pytest.raises(LoginError, match=r"127\.0\.0\.1:PORT"):
        LoopbackReceiver(uri, "state")


def test_receiver_times_out_and_frees_the_port() -> None:
    port = free_port()
    ticks: list[float] = []
    receiver = LoopbackReceiver(f"http://localhost:{port}/cb", "state")
    with pytest.raises(LoginTimedOut, match="log in again"):
        receiver.wait(0.3, ticks.append)
    assert ticks
    LoopbackReceiver(f"http://127.0.0.1:{port}/cb", "state").close()  # port free again


def test_receiver_busy_port_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(LoginError, match="cannot listen"):
            LoopbackReceiver(f"http://127.0.0.1:{port}/cb", "state")


def test_receiver_accepts_an_error_callback_with_the_right_state() -> None:
    receiver = LoopbackReceiver(f"http://127.0.0.1:{free_port()}/cb", "good")
    answers: list[tuple[int, str]] = []
    url = f"http://127.0.0.1:{receiver.port}/cb?error=access_denied&state=good"
    thread = threading.Thread(target=lambda: answers.append(get(url)))
    thread.start()
    assert receiver.wait(10).endswith("?error=access_denied&state=good")
    thread.join()
    assert answers[0][0] == 200
    assert "refused" in answers[0][1]


def test_grant_status_due_and_expired() -> None:
    tokens = TokenSet(
        access_token="a" * 20,
        refresh_token="r" * 20,
        expires_at=1000.0 + 14000,
        refresh_expires_at=1000.0 + 14 * 86400,
        updated_at=1000.0,
    )
    config = Config()
    fresh = GrantStatus.of("https://x.checkfront.com", tokens, 1000.0, config)
    assert fresh.logged_in
    assert not fresh.refresh_due
    assert "in 3h 53m" in fresh.describe()
    due = GrantStatus.of("https://x.checkfront.com", tokens, 1000.0 + 13800, config)
    assert due.refresh_due
    assert "refresh is due" in due.describe()
    gone = GrantStatus.of("https://x.checkfront.com", tokens, 1000.0 + 15 * 86400, config)
    assert not gone.logged_in
    assert not gone.refresh_due
    assert "cfauth login" in gone.describe()
    none = GrantStatus.of("https://x.checkfront.com", None, 0.0, config)
    assert none.to_dict()["access_expires_at"] is None
    assert "not logged in" in none.describe()
    assert fresh.to_dict()["access_expires_in"] == 14000


def test_response_reads_like_common_clients() -> None:
    ok = Response(
        200, [("Content-Type", "text/plain; charset=latin-1")], "caf\xe9".encode("latin-1")
    )
    assert ok.text == "caf\xe9"
    assert ok.ok
    assert ok.raise_for_status() is ok
    bad = Response(404, [("Content-Type", "text/html")], b"<h1>nope</h1>", "https://x/y")
    assert not bad.ok
    with pytest.raises(ApiError, match="HTTP 404") as caught:
        bad.raise_for_status()
    assert caught.value.status == 404
    odd = Response(200, [("Content-Type", "text/plain; charset=nonsense")], b"\xffok")
    assert odd.text.endswith("ok")


def test_every_factory_takes_the_same_arguments() -> None:

    own = {
        "stdlib": "max_idle_per_origin",
        "urllib3": "pool_maxsize",
        "trio": "max_connections_per_origin",
    }
    shapes = []
    for kind, module in (
        ("stdlib", cfauth.stdlib),
        ("urllib3", cfauth.urllib3),
        ("trio", cfauth.trio),
    ):
        params = inspect.signature(module.client).parameters
        assert "on_account_moved" in params
        assert "store" in params
        assert "pool_size" in params
        shapes.append([(p.name, p.kind, p.default) for p in params.values() if p.name != own[kind]])
    assert shapes[0] == shapes[1] == shapes[2]


@pytest.mark.parametrize(
    ("module", "name", "option"),
    [
        (cfauth.stdlib, "HttpClientTransport", "max_idle_per_origin"),
        (cfauth.urllib3, "Urllib3Transport", "pool_maxsize"),
        (cfauth.trio, "H11Transport", "max_connections_per_origin"),
    ],
)
def test_pool_size_reaches_the_transport(
    module: Any, name: str, option: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = getattr(module, name)
    seen: list[Any] = []

    def spy(**kwargs: Any) -> Any:
        seen.append(kwargs[option])
        return real(**kwargs)

    monkeypatch.setattr(module, name, spy)
    module.client("acme", ApiKey("k" * 8, "s" * 8), pool_size=3)
    module.client("acme", ApiKey("k" * 8, "s" * 8))
    assert seen[0] == 3
    assert seen[1] != 3


@pytest.mark.parametrize("name", ["Driver", "Client"])
def test_sync_and_trio_bindings_have_the_same_public_shape(name: str) -> None:
    """The two drivers and clients share one core: the same public methods, each
    taking the same arguments (only ``close``/``aclose`` and the context manager
    protocol differ, by their async names)."""
    import cfauth.sync
    import cfauth.trio

    renamed = {"close": "aclose", "__enter__": "__aenter__", "__exit__": "__aexit__"}

    def shape(cls: type) -> dict[str, list[tuple[str, Any, Any]]]:
        found = {}
        for attr in dir(cls):
            value = getattr(cls, attr)
            if attr.startswith("_") and attr not in renamed.values() and attr not in renamed:
                continue
            if not callable(value):
                continue
            params = inspect.signature(value).parameters
            kinds = [(p.name, p.kind, p.default) for p in params.values()]
            found[renamed.get(attr, attr)] = kinds
        return found

    sync_shape = shape(getattr(cfauth.sync, name))
    trio_shape = shape(getattr(cfauth.trio, name))
    for method in ("__init__",):
        sync_shape.pop(method, None)
        trio_shape.pop(method, None)
    assert sync_shape == trio_shape


@pytest.mark.parametrize("kind", KINDS)
def test_the_client_authentication_form_that_worked_is_stored_and_used_again(
    kind: str, sandbox: Sandbox
) -> None:
    """Against a token URL that compares client credentials raw, a secret with
    special characters needs the raw form: the client that learnt it stores
    it with the grant, and the next client refreshes in that form at once."""
    sandbox.client_credentials = "raw"
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    secret = "p+s:w%rd ë/=="
    cid, _ = sandbox.register_client("acme", redirect, client_id="special", client_secret=secret)
    app = OAuth2App(cid, secret, redirect)
    store = MemoryStore()
    first = make(kind, sandbox, app, store=store)
    start = first.authorization_url()
    callback = browse(start.url, port=sandbox.port, context=sandbox.ssl_context())
    run(kind, first, "complete_authorization", callback)
    assert len(sandbox.token_requests("authorization_code")) == 2  # encoded refused, raw taken
    record = store.load(GrantKey.for_account(first.driver.machine.account, cid))
    assert record is not None
    assert record.client_auth == "raw"

    second = make(kind, sandbox, app, store=store)
    assert second.driver.machine.client_auth == "raw"
    sandbox.revoke_access_token("acme")  # the next call is answered 401: a refresh
    assert run(kind, second, "get", "item").status == 200
    assert len(sandbox.token_requests("refresh_token")) == 1  # no refused first try
