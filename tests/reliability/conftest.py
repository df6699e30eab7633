"""Shared by the reliability tests: a real PostgreSQL server (for credentials inside a real URL), a persistent
Dagster instance with the embedded dagster.yaml, and a small scratch-model run config."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tiny everything: the faults, not the model, are under test.
SMALL_CONFIG = {
    "ops": {
        "base_model": {"config": {"source": "scratch", "scratch_hidden_size": 32, "scratch_layers": 1}},
        "sft_adapter": {"config": {"max_steps": 3, "per_device_train_batch_size": 8, "lora_r": 4, "lora_alpha": 8}},
        "dpo_adapter": {"config": {"max_steps": 2}},
        "eval_report": {"config": {"max_examples": 4}},
    }
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dagster_home(path: Path) -> Path:
    """A DAGSTER_HOME holding ftops' embedded dagster.yaml (the one `ftops` writes on first use)."""
    from ft_assets.cli import DAGSTER_YAML

    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text(DAGSTER_YAML)
    return path


@pytest.fixture(scope="session")
def postgres() -> Iterator[dict]:
    """A throwaway PostgreSQL cluster on loopback with password authentication: user ``ftops``."""
    initdb = shutil.which("initdb")
    if not initdb:
        pytest.skip("PostgreSQL (initdb) is not installed")
    # Under /tmp itself: pytest's own folders are private to root, which the postgres user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="ftops-pg-"))
    data, password = root / "data", "pg-URL-s3cret-7731"
    pwfile = root / "pw"
    pwfile.write_text(password)
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(root, "postgres")
        shutil.chown(pwfile, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "ftops", "--pwfile", str(pwfile), "-A", "scram-sha-256",
                    "--no-sync"], check=True, capture_output=True)
    port = free_port()
    subprocess.run([*as_user, shutil.which("pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                   check=True, capture_output=True)
    try:
        env = {**os.environ, "PGPASSWORD": password}
        for _ in range(50):
            if subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "ftops", "-d", "postgres", "-c",
                               "CREATE DATABASE mlflow"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
        yield {"url": f"postgresql+psycopg2://ftops:{password}@127.0.0.1:{port}/mlflow", "password": password}
    finally:
        subprocess.run([*as_user, shutil.which("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
