"""A worker process for the store tests: calls through the real sync driver
and stdlib transport against the sandbox, with a grant store shared with
other processes.

``worker.py CONFIG serve``: read commands from stdin (``call N``, ``quit``),
answer ``ok`` or ``error TYPE``.  ``worker.py CONFIG grants``: one driver per
grant in the store; on ``go``, tick each (refreshing what is due); answer
``done ERRORS``.  ``worker.py CONFIG crash POINT``: one call that refreshes,
killed with SIGKILL at POINT.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import ssl
import sys
from typing import Any

from cfauth import Response
from cfauth.stdlib import HttpClientTransport
from cfauth.stores import FileStore, GrantKey, GrantStore, SqliteStore, open_grant, open_store
from cfauth.sync import Driver
from cfauth_core import CfauthError, Machine, OAuth2App, Request
from tests.stores.shared import FileClock


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def die_now() -> int:
    die()
    return 0


def count_operations(store: GrantStore) -> list[int]:
    """Count the store operations from now on (load, write, lease, release)."""
    counter = [0]
    for name in ("load", "_update", "acquire_lease", "release_lease"):
        method = getattr(store, name)

        def counted(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
            counter[0] += 1
            return _method(*args, **kwargs)

        setattr(store, name, counted)
    return counter


def main() -> int:
    config = json.loads(sys.argv[1])
    mode = sys.argv[2]
    clock = FileClock(config["clock"])
    context = ssl.create_default_context(cafile=config["ca"])
    transport = HttpClientTransport(ssl_context=context, resolve=config["resolve"])
    app = OAuth2App(config["client_id"], config["client_secret"], config["redirect_uri"])
    store = open_store(config["store"])

    def driver_for(key: GrantKey, send: Any = transport) -> Driver:
        account, grant, tokens, client_auth = open_grant("acme", app, store.grant(key), None)
        machine = Machine(account, app, tokens, client_auth=client_auth)
        return Driver(machine, send, store=grant, clock=clock.now)

    out = sys.stdout
    if mode == "serve":
        driver = driver_for(GrantKey.for_account("acme", app.client_id))
        print("ready", file=out, flush=True)
        for line in sys.stdin:
            command = line.split()
            if not command or command[0] == "quit":
                break
            try:
                for _ in range(int(command[1])):
                    driver.request("GET", "booking/index")
                print("ok", file=out, flush=True)
            except CfauthError as error:
                print(f"error {type(error).__name__}", file=out, flush=True)
        return 0
    if mode == "grants":
        keys = store.grants()
        order = int(sys.argv[3])
        if order % 2:
            keys.reverse()
        drivers = [driver_for(key) for key in keys]
        operations = count_operations(store)
        print("ready", file=out, flush=True)
        sys.stdin.readline()
        errors = 0
        for driver in drivers:
            try:
                driver.tick()
            except CfauthError:
                errors += 1
        print(f"done {errors} {len(drivers)} {operations[0]}", file=out, flush=True)
        return 0
    assert mode == "crash"
    point = sys.argv[3]

    def send(request: Request) -> Response:
        token = request.url.endswith("/oauth/token/")
        if token and point == "before_request":
            die()
        response = transport(request)
        if token and point == "after_response":
            die()
        return response

    if isinstance(store, FileStore):
        import cfauth.stores as module

        if point == "mid_write":
            real_write = os.write

            def half_write(fd: int, data: Any) -> int:
                real_write(fd, bytes(data[: len(data) // 2]))
                die()
                return 0

            os.write = half_write
        elif point == "before_rename":
            os.replace = lambda *args, **kwargs: die()
        elif point == "after_rename":
            setattr(module, "_fsync_folder", lambda folder: die())  # noqa: B010
    if isinstance(store, SqliteStore):
        real = SqliteStore._write

        def write(self: SqliteStore, conn: sqlite3.Connection, *args: Any) -> Any:
            if point.startswith("mid_statement"):
                conn.set_progress_handler(die_now, int(point.rpartition("_")[2]))
            result = real(self, conn, *args)
            if point == "before_commit":
                die()
            return result

        setattr(SqliteStore, "_write", write)  # noqa: B010
    driver = driver_for(GrantKey.for_account("acme", app.client_id), send)
    real_release = driver._store.release_lease  # type: ignore[union-attr]

    def release() -> None:
        if point == "after_save":
            die()
        real_release()

    driver._store.release_lease = release  # type: ignore[union-attr,method-assign]
    try:
        driver.request("GET", "booking/index")
    except CfauthError as error:
        print(f"error {type(error).__name__}", file=out, flush=True)
        return 1
    print("ok", file=out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
