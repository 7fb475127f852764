"""An asyncio web application calling Checkfront through httpx (FastAPI-style).

One ``httpx.AsyncClient`` for the whole application, made in the lifespan,
with ``CheckfrontAuth`` on it: every request handler shares it (one refresh
for all of them), and the same client may call other APIs without sending
them Checkfront credentials.  ``/login`` and ``/callback`` log the
application in once (OAuth2, the grant kept in the store).

The handlers are plain coroutines, so this file runs without FastAPI;
``fastapi_app()`` shows the wiring when FastAPI is installed.

Run it: python docs/examples/httpx_app.py
(it starts the sandbox and plays the browser and the requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import httpx

from cfauth.cli import browse
from cfauth.httpx import CheckfrontAuth
from cfauth.sandbox import Sandbox
from cfauth.stores import open_store
from cfauth_core import OAuth2App

ACCOUNT = "acme"
API = "https://acme.checkfront.com/api/3.0/"


class Service:
    """What the application keeps for its lifetime (``app.state`` in FastAPI)."""

    auth: CheckfrontAuth
    client: httpx.AsyncClient
    pending: dict[str, str | None]  # login state -> PKCE verifier (your session store)


@contextlib.asynccontextmanager
async def lifespan(
    app: OAuth2App, store_path: str, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[Service]:
    """Build the auth (it loads the grant from the store: do it before serving)
    and one AsyncClient; close the client at shutdown."""
    service = Service()
    store = open_store(store_path)
    service.auth = CheckfrontAuth(ACCOUNT, app, store=store)
    service.pending = {}
    # ``transport`` only points the example at the sandbox; leave it out for Checkfront.
    async with httpx.AsyncClient(base_url=API, auth=service.auth, transport=transport) as client:
        service.client = client
        yield service
    store.close()


async def login(service: Service) -> str:
    """GET /login: where to redirect the browser."""
    start = service.auth.authorization_url()
    service.pending[start.state] = start.code_verifier
    return start.url


async def callback(service: Service, url: str) -> str:
    """GET /callback?code=...&state=...: finish the login, then go to /bookings."""
    state = httpx.URL(url).params["state"]
    verifier = service.pending.pop(state)
    await service.auth.acomplete_authorization(
        url, client=service.client, state=state, code_verifier=verifier
    )
    return "/bookings"


async def bookings(service: Service) -> dict[str, Any]:
    """GET /bookings: the handler calls Checkfront with the shared client."""
    response = await service.client.get("booking/index", params={"limit": "10"})
    response.raise_for_status()
    return {"status": response.status_code, "count": len(response.json()["booking/index"])}


def fastapi_app(app: OAuth2App, store_path: str) -> Any:
    """The same handlers in FastAPI (``pip install fastapi``; not run here)."""
    from fastapi import FastAPI, Request  # noqa: PLC0415 - optional
    from fastapi.responses import RedirectResponse  # noqa: PLC0415

    @contextlib.asynccontextmanager
    async def serve(web: FastAPI) -> AsyncIterator[None]:
        async with lifespan(app, store_path) as service:
            web.state.service = service
            yield

    web = FastAPI(lifespan=serve)

    @web.get("/login")
    async def _login(request: Request) -> RedirectResponse:
        return RedirectResponse(await login(request.app.state.service))

    @web.get("/callback")
    async def _callback(request: Request) -> RedirectResponse:
        return RedirectResponse(await callback(request.app.state.service, str(request.url)))

    @web.get("/bookings")
    async def _bookings(request: Request) -> dict[str, Any]:
        return await bookings(request.app.state.service)

    return web


async def main(sandbox: Sandbox, folder: str) -> None:
    redirect = "http://127.0.0.1:8000/callback"
    client_id, client_secret = sandbox.register_client(ACCOUNT, redirect)
    app = OAuth2App(client_id, client_secret, redirect)
    store_path = os.path.join(folder, "grants.sqlite3")
    async with lifespan(app, store_path, sandbox.httpx_async_transport()) as service:
        url = await login(service)
        print("login redirects to", url.split("?")[0])
        came_back = browse(url, port=sandbox.port, context=sandbox.ssl_context())
        print("callback goes to", await callback(service, came_back))
        print("logged in:", service.auth.grant_status().logged_in)
        # Ten requests at once: the handlers share the client and its tokens.
        sandbox.clock.advance(14_000)  # ... four hours later, the access token expires
        answers = await asyncio.gather(*(bookings(service) for _ in range(10)))
        print("statuses:", sorted({answer["status"] for answer in answers}))
        print("refresh requests:", len(sandbox.token_requests("refresh_token")))


if __name__ == "__main__":
    with Sandbox() as running, tempfile.TemporaryDirectory() as temporary:
        asyncio.run(main(running, temporary))
