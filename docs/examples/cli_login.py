"""OAuth2 in a command-line program: client.login().

login() listens on the redirect URI (http://127.0.0.1:PORT/callback), shows the
authorize URL and opens a browser, waits for the callback, exchanges the code
and stores the grant.  The next run finds the grant in the store: no login.

Run it: python docs/examples/cli_login.py
(The sandbox consents at once; ``show=`` below plays the browser's part.  With
a real account, leave ``show`` out: a browser opens and you log in.)
"""

import os
import tempfile
import threading
import urllib.request

from cfauth.cli import browse
from cfauth.sandbox import Sandbox
from cfauth.stdlib import client
from cfauth.stores import open_store
from cfauth_core import OAuth2App

with Sandbox() as sandbox, tempfile.TemporaryDirectory() as folder:
    acme = sandbox.account("acme")
    app = OAuth2App(acme.client_id, acme.client_secret, acme.redirect_uri)
    options = {"ca_file": sandbox.ca_file, "resolve": sandbox.resolve}
    store = open_store(os.path.join(folder, "grants.sqlite3"))  # default: your data folder

    def browser(url: str) -> None:  # what a person does with the URL
        def visit() -> None:
            callback = browse(url, port=sandbox.port, context=sandbox.ssl_context())
            urllib.request.urlopen(callback).close()  # noqa: S310 - the loopback receiver

        threading.Thread(target=visit).start()

    with client("acme", app, store=store, **options) as api:
        if not api.grant_status().logged_in:
            api.login(open_browser=False, show=browser, timeout=60)
        print("logged in:", api.grant_status().logged_in)
        print(api.get("item").status)

    # Another run of the program: the grant comes from the store.
    with client("acme", app, store=store, **options) as api:
        print("still logged in:", api.grant_status().logged_in)
        api.logout()  # forget the grant, and delete it from the store
        print("after logout:", api.grant_status().logged_in)
    store.close()
