"""OAuth2 in a web application: one grant per user, kept in the store.

``/login`` sends the user to Checkfront (the state and PKCE verifier stay on the
server, in the user's session); ``/callback`` finishes the login; ``/bookings``
calls the API with that user's grant.  Any WSGI framework works the same way.

Run it: python docs/examples/web_app.py
(it starts the sandbox and this app on 127.0.0.1, then plays a user's browser).
"""

from __future__ import annotations

import http.cookies
import os
import secrets
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from cfauth.cli import browse
from cfauth.sandbox import Sandbox
from cfauth.stdlib import Client, client
from cfauth.stores import GrantStore, open_store
from cfauth_core import OAuth2App

ACCOUNT = "acme"
SESSIONS: dict[str, dict[str, Any]] = {}  # use your framework's server-side sessions


def make_app(
    app: OAuth2App, store: GrantStore, options: dict[str, Any]
) -> Callable[..., Iterable[bytes]]:
    def api_for(user: str) -> Client:
        """A client on this user's grant (one record per user in the store)."""
        return client(ACCOUNT, app, store=store.grant(ACCOUNT, app.client_id, user), **options)

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        cookie = http.cookies.SimpleCookie(environ.get("HTTP_COOKIE", ""))
        sid = cookie["sid"].value if "sid" in cookie else secrets.token_urlsafe(16)
        session = SESSIONS.setdefault(sid, {"user": "ada"})  # your login system's user
        path = environ["PATH_INFO"]
        headers = [("Set-Cookie", f"sid={sid}; HttpOnly; SameSite=Lax; Path=/")]
        if path == "/login":
            with api_for(session["user"]) as api:
                start = api.authorization_url()
            session["oauth"] = (start.state, start.code_verifier)  # kept server side
            start_response("302 Found", [*headers, ("Location", start.url)])
            return [b""]
        if path == "/callback":
            state, verifier = session.pop("oauth")
            query = environ.get("QUERY_STRING", "")
            with api_for(session["user"]) as api:
                api.complete_authorization(
                    f"{app.redirect_uri}?{query}", state=state, code_verifier=verifier
                )
            start_response("302 Found", [*headers, ("Location", "/bookings")])
            return [b""]
        if path == "/bookings":
            with api_for(session["user"]) as api:
                if not api.grant_status().logged_in:
                    start_response("302 Found", [*headers, ("Location", "/login")])
                    return [b""]
                count = len(api.get("booking/index").json()["booking/index"])
            start_response("200 OK", [*headers, ("Content-Type", "text/plain")])
            return [f"{count} bookings\n".encode()]
        start_response("404 Not Found", headers)
        return [b"not found\n"]

    return wsgi


class Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    with Sandbox() as sandbox, tempfile.TemporaryDirectory() as folder:
        # Bind first (the redirect URI needs the port), set the application after.
        server = make_server("127.0.0.1", 0, lambda environ, start: [], handler_class=Quiet)
        port = server.server_address[1]
        redirect = f"http://127.0.0.1:{port}/callback"
        client_id, client_secret = sandbox.register_client(ACCOUNT, redirect)
        app = OAuth2App(client_id, client_secret, redirect)
        store = open_store(os.path.join(folder, "grants.sqlite3"))
        options = {"ca_file": sandbox.ca_file, "resolve": sandbox.resolve}
        server.set_app(make_app(app, store, options))
        threading.Thread(target=server.serve_forever, daemon=True).start()

        # The user's browser: /bookings -> /login -> Checkfront -> /callback -> /bookings.
        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any) -> None:
                return None

        opener = urllib.request.build_opener(NoRedirect)
        base = f"http://127.0.0.1:{port}"
        cookie = ""

        def visit(url: str) -> tuple[int, str, str]:
            nonlocal cookie
            request = urllib.request.Request(url, headers={"Cookie": cookie})  # noqa: S310
            try:
                answer = opener.open(request)
            except urllib.error.HTTPError as redirect:
                answer = redirect
            cookie = (answer.headers.get("Set-Cookie") or cookie).split(";")[0]
            return answer.status, answer.headers.get("Location", ""), answer.read().decode()

        status, location, _ = visit(base + "/bookings")
        print(status, location)  # 302 /login
        status, location, _ = visit(base + location)
        print(status, location.split("?")[0])  # 302 https://acme.checkfront.com/oauth/
        callback = browse(location, port=sandbox.port, context=sandbox.ssl_context())
        status, location, _ = visit(callback)
        print(status, location)  # 302 /bookings
        status, _, body = visit(base + location)
        print(status, body.strip())  # 200 N bookings
        print("grants:", [str(key) for key in store.grants()])
        server.shutdown()
        server.server_close()
        store.close()


if __name__ == "__main__":
    main()
