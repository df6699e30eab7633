"""A real, throwaway PostgreSQL server for tests: Debian's ``postgresql`` (``make postgres`` installs it).

Usage::

    with postgres_server() as pg:
        pg.env()          # DAGSTER_PG_* for deploy/dagster.yaml
        pg.url            # postgresql://...

``initdb`` into a fresh temporary folder, ``postgres`` on a free loopback port with no Unix socket, trust
authentication on loopback only, fsync off (a test database is thrown away). PostgreSQL refuses to run as
root, so as root (CI) the server runs as ``nobody`` through ``runuser``. The folder is removed afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "dagster"
USER = "postgres"


def postgres_bin() -> Path | None:
    """The newest installed ``/usr/lib/postgresql/N/bin`` with initdb, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Postgres:
    port: int
    data_dir: Path
    process: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DB_NAME}"

    def env(self) -> dict[str, str]:
        """The variables deploy/dagster.yaml reads."""
        return {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USERNAME": USER,
                "DAGSTER_PG_PASSWORD": "unused-with-trust-auth", "DAGSTER_PG_DB": DB_NAME}

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "nobody", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def postgres_server(startup_timeout: float = 60) -> Iterator[Postgres]:
    """Start PostgreSQL with an empty ``dagster`` database; stop it and delete its files on exit."""
    bindir = postgres_bin()
    if bindir is None:
        raise FileNotFoundError("no /usr/lib/postgresql/*/bin/initdb: run `make postgres` (apt-get install postgresql)")
    # mkdtemp, not pytest's tmp_path: its parents are 0700 root-owned, which ``nobody`` cannot traverse.
    root = Path(tempfile.mkdtemp(prefix="ftops-pg-"))
    data_dir, log_path = root / "data", root / "postgres.log"
    if os.geteuid() == 0:
        shutil.chown(root, "nobody")
    process = None
    try:
        subprocess.run(_as_server_user([str(bindir / "initdb"), "-D", str(data_dir), "-U", USER, "--auth=trust",
                                        "-E", "UTF8", "--no-sync"]),
                       check=True, capture_output=True, cwd=root)
        port = _free_port()
        with open(log_path, "wb") as log:
            if os.geteuid() == 0:
                shutil.chown(log_path, "nobody")
            process = subprocess.Popen(
                _as_server_user([str(bindir / "postgres"), "-D", str(data_dir), "-p", str(port),
                                 "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "max_connections=200"]),
                stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
        server = Postgres(port=port, data_dir=data_dir, process=process, log_path=log_path)
        _wait_and_create_db(server, bindir, startup_timeout)
        yield server
    finally:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # fast shutdown: disconnect clients, stop
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def _wait_and_create_db(server: Postgres, bindir: Path, timeout: float) -> None:
    import psycopg2

    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"postgres exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=server.port, user=USER, dbname="postgres")
            break
        except psycopg2.OperationalError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"postgres not accepting connections after {timeout:.0f}s:\n"
                                   f"{server.log_tail()}") from exc
            time.sleep(0.2)
    conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    with conn.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {DB_NAME}")
    conn.close()
