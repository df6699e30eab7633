"""Start ``dagster dev`` (webserver + daemon) on a temporary embedded instance, for tests that need the real thing.

Usage::

    with dagster_dev(tmp_path) as dev:
        dev.graphql("{ version }")
        with dev.instance() as instance: ...

Everything lives under the given folder: ``FTOPS_HOME`` (artifacts, drops, DVC) and ``DAGSTER_HOME``. The whole
process group is killed on exit, whatever happened, and the server's output is kept in ``dagster_dev.log``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterInstance

from ft_assets.cli import DAGSTER_YAML

REPO = Path(__file__).resolve().parent.parent

LOCATIONS_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message stack } } } } } }
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DagsterDev:
    url: str
    ftops_home: Path
    dagster_home: Path
    env: dict[str, str]
    process: subprocess.Popen
    log_path: Path

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
        """POST a GraphQL query to the webserver; raises on transport or GraphQL errors."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise RuntimeError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    @contextmanager
    def instance(self) -> Iterator[DagsterInstance]:
        """The same SQLite instance the server uses, opened from this process."""
        with DagsterInstance.from_config(str(self.dagster_home)) as instance:
            yield instance

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def _wait_until_loaded(dev: DagsterDev, timeout: float) -> None:
    """Wait for the webserver to answer and every code location to finish loading (imports torch: slow)."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if dev.process.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {dev.process.returncode}:\n{dev.log_tail()}")
        try:
            entries = dev.graphql(LOCATIONS_QUERY, timeout=10)["workspaceOrError"]["locationEntries"]
        except (urllib.error.URLError, ConnectionError, TimeoutError, RuntimeError, KeyError) as exc:
            last = repr(exc)
        else:
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                errors = [e["locationOrLoadError"] for e in entries
                          if (e["locationOrLoadError"] or {}).get("__typename") == "PythonError"]
                if errors:
                    raise RuntimeError(f"code location failed to load: {errors[0]['message']}\n"
                                       + "".join(errors[0]["stack"]))
                return
            last = f"locations: {entries}"
        time.sleep(1)
    raise TimeoutError(f"dagster dev not ready after {timeout:.0f}s ({last}):\n{dev.log_tail()}")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(process: subprocess.Popen, grace: float = 15) -> None:
    """Ctrl+C for ``dagster dev`` (it stops its webserver, daemon and code servers), then SIGKILL what is left.

    Signalling the whole group at once can leave ``dagster dev`` waiting on children that are already gone, so
    only the leader gets the interrupt; the group is killed outright if anything (a run worker) outlives it.
    """
    pgid = process.pid  # start_new_session: the leader's pid is the group id
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + 5
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=10)


@contextmanager
def dagster_dev(root: Path, *, extra_env: dict[str, str] | None = None, dagster_yaml: str = "",
                startup_timeout: float = 180, target: tuple[str, ...] = ("-w", "workspace.yaml"),
                ) -> Iterator[DagsterDev]:
    """Run ``dagster dev`` (what ``make ui`` runs) on a free port with FTOPS_HOME and DAGSTER_HOME under ``root``.

    ``dagster_yaml`` is appended to the instance's dagster.yaml, e.g. ``"auto_materialize:\n  enabled: false\n"``
    to keep the asset daemon quiet; ``target`` picks the code (``("-m", "some.module")`` for a test module).
    """
    root.mkdir(parents=True, exist_ok=True)
    ftops_home = root / "ftops_home"
    dagster_home = ftops_home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML + dagster_yaml)
    port = free_port()
    env = {**os.environ, "FTOPS_HOME": str(ftops_home), "DAGSTER_HOME": str(dagster_home),
           "GX_ANALYTICS_ENABLED": "false", "DAGSTER_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1",
           **(extra_env or {})}
    # Paths the caller did not set explicitly follow FTOPS_HOME, not this process's environment.
    for var in ("FTOPS_ARTIFACT_ROOT", "FTOPS_DROPS_DIR", "FTOPS_DVC_REPO", "FTOPS_DVC_REMOTE", "FTOPS_BASE_GGUF"):
        if var not in (extra_env or {}):
            env.pop(var, None)
    dagster = Path(sys.executable).parent / "dagster"
    log_path = root / "dagster_dev.log"
    with open(log_path, "wb") as log:
        # A new session makes the server the leader of its own process group, so one killpg ends all of it.
        process = subprocess.Popen(
            [str(dagster), "dev", *target, "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    dev = DagsterDev(url=f"http://127.0.0.1:{port}", ftops_home=ftops_home, dagster_home=dagster_home, env=env,
                     process=process, log_path=log_path)
    try:
        _wait_until_loaded(dev, startup_timeout)
        yield dev
    finally:
        _kill_group(process)
