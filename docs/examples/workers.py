"""Workers sharing one grant through the store, and many accounts in one store.

Four worker processes call the API at the moment the access token is about to
expire: exactly one of them refreshes (under the store's lease); the others
find the new tokens in the store.  SQLite serves processes on one machine; for
workers on many machines, open a PostgreSQL store instead, with the same code:
``open_store("postgresql://cfauth@db.internal/cfauth")`` (see :doc:`stores`).

Run it: python docs/examples/workers.py
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from typing import Any

from cfauth.sandbox import Sandbox
from cfauth.stdlib import client
from cfauth.stores import open_store
from cfauth_core import OAuth2App, TokenSet


def worker(store_url: str, app: OAuth2App, options: dict[str, Any]) -> int:
    with open_store(store_url) as store, client("acme", app, store=store, **options) as api:
        return api.get("item").status


def main() -> None:
    with Sandbox(accounts=("acme", "beta")) as sandbox, tempfile.TemporaryDirectory() as folder:
        store_url = os.path.join(folder, "grants.sqlite3")  # or a postgresql:// URL
        options = {"ca_file": sandbox.ca_file, "resolve": sandbox.resolve}
        apps = {}
        with open_store(store_url) as store:
            for name in ("acme", "beta"):
                info = sandbox.account(name)
                apps[name] = OAuth2App(info.client_id, info.client_secret, info.redirect_uri)
                # Seed each account's grant (a login would do this), due for refresh now.
                issued = sandbox.issue_tokens(name)
                now = time.time()
                tokens = TokenSet(
                    access_token=issued["access_token"],
                    refresh_token=issued["refresh_token"],
                    expires_at=now + 60,
                    refresh_expires_at=now + 14 * 86400,
                    updated_at=now - 13900,
                )
                store.grant(name, apps[name].client_id).save(tokens)
            print("grants in one store:", sorted(key.account for key in store.grants()))

        context = multiprocessing.get_context("spawn")
        with context.Pool(4) as pool:
            statuses = pool.starmap(worker, [(store_url, apps["acme"], options)] * 4)
        print("statuses:", statuses)
        print("refresh requests:", len(sandbox.token_requests("refresh_token")))

        # Many accounts, one store: each client finds its own grant.
        with open_store(store_url) as store:
            for name in ("acme", "beta"):
                with client(name, apps[name], store=store, **options) as api:
                    print(name, api.account, api.get("item").status)


if __name__ == "__main__":
    main()
