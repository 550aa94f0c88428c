"""A throwaway PostgreSQL server for tests: a new cluster in a temporary folder, reachable only on a Unix
socket in that folder (no TCP port at all), stopped and deleted afterwards.

It runs Debian's server binaries (/usr/lib/postgresql/<version>/bin, the newest version found), which
`make postgres` installs (apt-get install postgresql) when they are missing; PG_BIN names another folder
of binaries (initdb, pg_ctl, postgres). Every step has a time limit: initdb and pg_ctl are given one, and
each subprocess is killed if it outlives it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg

START_TIMEOUT = 30  # seconds for initdb, and again for the server to accept connections
STOP_TIMEOUT = 30  # seconds for a fast shutdown before an immediate one
PORT = 5432  # only names the socket file (.s.PGSQL.5432): listen_addresses is empty, so no TCP port
SUPERUSER = "postgres"  # the cluster's superuser, whichever system user runs the server
SERVER_USERS = ("postgres", "nobody")  # who runs the server when the tests run as root, first found

# Settings for a disposable cluster: no TCP, and no waiting for the disk (its data dies with the tests).
SETTINGS = {
    "listen_addresses": "''",
    "port": str(PORT),
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "40",
    "shared_buffers": "'32MB'",
    "log_min_messages": "warning",
    "timezone": "'UTC'",
}


class PostgresUnavailable(RuntimeError):
    """No server binaries, or the server would not start; str() says which and what to do."""


def find_binaries() -> Path:
    """The folder holding initdb, pg_ctl and postgres: PG_BIN, or the newest of Debian's."""
    if os.environ.get("PG_BIN"):
        candidates = [Path(os.environ["PG_BIN"])]
    else:
        found = glob.glob("/usr/lib/postgresql/*/bin")
        candidates = [Path(folder) for folder in sorted(found, key=_version, reverse=True)]
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    raise PostgresUnavailable("PostgreSQL's server binaries were not found in /usr/lib/postgresql/*/bin: run "
                              "`make postgres` (apt-get install postgresql), or set PG_BIN to their folder")


def _version(folder: str) -> tuple[int, ...]:
    name = Path(folder).parent.name
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _server_user() -> pwd.struct_passwd | None:
    """Who runs initdb and the server: the current user, unless that is root (None then).

    initdb and postgres refuse to run as root. As root, the `postgres` system user that Debian's package
    creates runs them (`nobody` when there is none, e.g. with PG_BIN): it owns the temporary folder, and
    root, the test process, can still use the socket in it.
    """
    if os.geteuid() != 0:
        return None
    for name in SERVER_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable(f"running as root, and none of the users {', '.join(SERVER_USERS)} exists "
                              "to run PostgreSQL (initdb refuses root)")


class PostgresServer:
    """start() a new cluster, use dsn(), stop() it; also a context manager."""

    def __init__(self, binaries: Path | None = None) -> None:
        self.binaries = binaries or find_binaries()
        self.folder: Path | None = None  # the temporary folder: socket, data/, server.log
        self.started_in: float | None = None  # seconds start() took
        self._user = _server_user()

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def data(self) -> Path:
        assert self.folder is not None, "not started"
        return self.folder / "data"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq/asyncpg URL of a database on this server, over its Unix socket."""
        assert self.folder is not None, "not started"
        return f"postgresql://{SUPERUSER}@/{quote(database)}?host={quote(str(self.folder))}&port={PORT}"

    def start(self) -> None:
        """initdb a cluster in a new temporary folder and start it; waits at most 2 x START_TIMEOUT."""
        began = time.monotonic()
        # mkdtemp makes the folder 0700 in the system's temporary folder (world-traversable /tmp): the
        # server's user must be able to reach it, which pytest's own tmp_path (root's 0700 folder) is not.
        self.folder = Path(tempfile.mkdtemp(prefix="store-pg-"))
        if self._user is not None:
            os.chown(self.folder, self._user.pw_uid, self._user.pw_gid)
        try:
            self._run("initdb", "--pgdata", str(self.data), "--username", SUPERUSER, "--auth", "trust",
                      "--encoding", "UTF8", "--locale", "C.UTF-8", "--no-sync", "--no-instructions",
                      timeout=START_TIMEOUT)
            settings = {**SETTINGS, "unix_socket_directories": f"'{self.folder}'"}
            with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
                conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
            # -w: wait until the server accepts connections, for at most -t seconds.
            self._run("pg_ctl", "start", "--pgdata", str(self.data), "--log", str(self.folder / "server.log"),
                      "-w", "-t", str(START_TIMEOUT), timeout=START_TIMEOUT + 5)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began

    def stop(self) -> None:
        """Stop the server (fast shutdown, then immediate) and delete the folder; idempotent."""
        folder, self.folder = self.folder, None
        if folder is None:
            return
        data = folder / "data"
        try:
            if (data / "postmaster.pid").exists():
                for mode in ("fast", "immediate"):
                    try:
                        self._run("pg_ctl", "stop", "--pgdata", str(data), "-m", mode, "-w", "-t", str(STOP_TIMEOUT),
                                  timeout=STOP_TIMEOUT + 5)
                        break
                    except PostgresUnavailable:
                        continue
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def log(self) -> str:
        """The server's log so far (for a failure's message)."""
        try:
            return (self.data / "server.log").read_text(encoding="utf-8", errors="replace")
        except (AssertionError, OSError):
            return ""

    def _run(self, program: str, *args: str, timeout: float) -> None:
        """Run one of the binaries as the server's user; a failure or a timeout is PostgresUnavailable."""
        user = self._user
        command = [str(self.binaries / program), *args]
        env = {"PATH": f"{self.binaries}:/usr/bin:/bin", "LC_ALL": "C.UTF-8", "TZ": "UTC"}
        if user is not None:
            env.update(HOME=str(self.folder), USER=user.pw_name, LOGNAME=user.pw_name)
        try:
            # cwd: the folder, which the server's user can enter (initdb and pg_ctl check the current one).
            subprocess.run(command, cwd=self.folder, env=env, capture_output=True, text=True, check=True,
                           timeout=timeout, stdin=subprocess.DEVNULL,
                           user=user.pw_uid if user else None, group=user.pw_gid if user else None,
                           extra_groups=[] if user else None)
        except subprocess.TimeoutExpired as exc:
            raise PostgresUnavailable(f"{program} took more than {timeout:g} s\n{self.log()}") from exc
        except subprocess.CalledProcessError as exc:
            raise PostgresUnavailable(f"{program} failed ({exc.returncode}): {exc.stderr.strip()}\n"
                                      f"{self.log()}") from exc


def database_dsn(dsn: str, database: str) -> str:
    """The same server's URL, naming another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + quote(database)))


async def create_database(dsn: str, timeout: float = 30.0) -> str:
    """Create an empty database on the server of `dsn`, named at random; return its URL."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(dsn, timeout=timeout)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"', timeout=timeout)
    finally:
        await conn.close(timeout=timeout)
    return database_dsn(dsn, name)


async def drop_database(dsn: str, timeout: float = 30.0) -> None:
    """Drop the database `dsn` names, closing whatever connections are left in it."""
    name = unquote(urlsplit(dsn).path.lstrip("/"))
    conn = await asyncpg.connect(database_dsn(dsn, "postgres"), timeout=timeout)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=timeout)
    finally:
        await conn.close(timeout=timeout)
