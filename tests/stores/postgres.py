"""A throwaway PostgreSQL server for the tests: ``initdb`` into a temporary
folder, ``pg_ctl start`` on a free port of 127.0.0.1 (its unix socket in that
folder too), stopped and removed at the end.

PostgreSQL refuses to run as root, so when the tests run as root (as CI does)
the server runs as the ``postgres`` user, through ``runuser``/``setpriv``, in a
folder handed to that user.  Under CI (``CI=true``) a server that cannot be
started fails the tests; elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


class PostgresUnavailable(Exception):
    pass


def _binaries() -> str:
    found = os.environ.get("CFAUTH_PG_BIN")
    if found:
        return found
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(folder, "initdb")):
            return folder
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(initdb)
    raise PostgresUnavailable(
        "no initdb found (looked in /usr/lib/postgresql/*/bin and PATH); "
        "install PostgreSQL (apt-get install postgresql) or set CFAUTH_PG_BIN"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_user() -> tuple[list[str], int | None, int | None]:
    """The command prefix that runs a program as a non-root user, and its ids."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable(
            "running as root and there is no 'postgres' user to run the server as"
        ) from None
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--"], user.pw_uid, user.pw_gid
    setpriv = shutil.which("setpriv")
    if setpriv:
        return (
            [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"],
            user.pw_uid,
            user.pw_gid,
        )
    raise PostgresUnavailable("running as root without runuser or setpriv")


@contextmanager
def running_postgres() -> Iterator[str]:
    """Yield the URL of a fresh server (database ``postgres``, user ``postgres``)."""
    bindir = _binaries()
    prefix, uid, gid = _as_user()
    folder = tempfile.mkdtemp(prefix="cfauth-pg-")
    data = os.path.join(folder, "data")
    log = os.path.join(folder, "server.log")
    if uid is not None and gid is not None:
        os.chown(folder, uid, gid)
    port = _free_port()

    def run(*args: str) -> None:
        result = subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            tail = ""
            if os.path.exists(log):
                with open(log) as file:
                    tail = file.read()[-2000:]
            raise PostgresUnavailable(
                f"{' '.join(args[:2])} failed ({result.returncode}): "
                f"{result.stdout[-1000:]}{result.stderr[-1000:]}{tail}"
            )

    started = False
    try:
        run(
            os.path.join(bindir, "initdb"),
            "-D",
            data,
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        run(os.path.join(bindir, "pg_ctl"), "-D", data, "-l", log, "-o", options, "-w", "start")
        started = True
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run(
                [*prefix, os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(folder, ignore_errors=True)
