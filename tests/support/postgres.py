"""A real PostgreSQL 15 for tests: a throwaway cluster started on a free port, stopped at the end.

PostgreSQL refuses to run as root (and CI runs as root), so the cluster's directory belongs to
the ``postgres`` system user and ``initdb``/``pg_ctl`` run as that user (``runuser``) when the
tests run as root. The server listens on 127.0.0.1 and on a socket in the cluster's directory
only; the test cluster trusts local connections (nothing else can reach it) and runs with
``fsync=off``: it checks behaviour, not durability, and must not slow the suite.

Each test gets a schema of its own (:meth:`PostgresCluster.fresh_url`), so tests share one
cluster and never see each other's tables.

Example::

    with running_postgres() as cluster:
        db = PostgresGatewayDB(cluster.fresh_url())
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tests.support.mosquitto import free_port

POSTGRES_USER = "postgres"


def _bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for version in ("17", "16", "15"):
        candidate = Path(f"/usr/lib/postgresql/{version}/bin/{name}")
        if candidate.exists():
            return str(candidate)
    raise FileNotFoundError(f"{name} not found: install Debian's postgresql (make system)")


class PostgresCluster:
    """``durable``: keep PostgreSQL's fsync (a benchmark set against SQLite's synchronous=FULL);
    tests run without it."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="siteclock-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:  # the server refuses root: run it as the postgres user
            user = pwd.getpwnam(POSTGRES_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", POSTGRES_USER, "--"]
        os.chmod(self.root, 0o700)
        self._schemas = itertools.count(1)

    @property
    def url(self) -> str:
        return f"postgresql://{POSTGRES_USER}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as_user, *args], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()}")

    def start(self) -> PostgresCluster:
        if not self.data.exists():
            self._run(_bin("initdb"), "-D", str(self.data), "-U", POSTGRES_USER,
                      "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")  # fmt: skip
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        options += " -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-o", options, "-w", "-t", "60", "start")  # fmt: skip
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended)."""
        if (self.data / "postmaster.pid").exists():
            self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def fresh_url(self) -> str:
        """The URL of a new, empty schema (its own search_path), for one test."""
        schema = f"t{next(self._schemas)}_{os.getpid()}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return f"{self.url}?options=-csearch_path%3D{schema}"

    def log_tail(self, lines: int = 40) -> str:
        log = self.root / "server.log"
        return "\n".join(log.read_text().splitlines()[-lines:]) if log.exists() else ""


@contextmanager
def running_postgres(*, durable: bool = False) -> Iterator[PostgresCluster]:
    cluster = PostgresCluster(durable=durable)
    try:
        yield cluster.start()
    finally:
        cluster.destroy()
