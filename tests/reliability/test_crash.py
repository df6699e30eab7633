"""Crash at a stage: the process running the materialization is SIGKILLed while the stage is writing (its staging
directory exists, or it holds the DVC repository's lock). Afterwards no artifact directory looks complete that is
not, every LATEST pointer names a whole version, the DVC repository is not left locked, and the next
materialization succeeds and reads the upstream versions Dagster recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus
from filelock import FileLock, Timeout

from ft_assets.data.text_to_sql import write_demo_drops
from ft_assets.lineage.artifacts import CARD_NAME, LATEST_NAME, VERSION_CHARS, content_hash
from tests.reliability.conftest import dagster_home

REPO = Path(__file__).resolve().parents[2]
# The child: the same graph and resources as everywhere (build_defs(build_resources(root))), on a persistent
# instance, materializing ``STAGE`` (ingest = every drop's raw_records partition).
CHILD = textwrap.dedent("""
    import sys
    from dagster import AssetKey, DagsterInstance
    from ft_assets.automation.ingest import ingest_present_drops
    from ft_assets.definitions import build_defs
    from resources.factory import build_resources
    root, stage = sys.argv[1], sys.argv[2]
    defs = build_defs(build_resources(root))
    instance = DagsterInstance.get()
    if stage == "ingest":
        ok = all(r.success for r in ingest_present_drops(defs, instance))
    else:
        ok = defs.resolve_job_def("end_to_end").execute_in_process(
            instance=instance, asset_selection=[AssetKey(stage)], raise_on_error=False).success
    sys.exit(0 if ok else 1)
""")


def _child(root: Path, stage: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(root), stage], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _run_to_end(root: Path, stage: str, env: dict) -> None:
    child = _child(root, stage, env)
    out, _ = child.communicate(timeout=300)
    assert child.returncode == 0, out.decode()[-4000:]


def _kill_when(child: subprocess.Popen, condition, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            pytest.fail(f"the run ended (rc {child.returncode}) before {what}: "
                        f"{child.stdout.read().decode()[-3000:]}")
        if condition():
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            return
        time.sleep(0.005)
    child.kill()
    pytest.fail(f"no {what} within {timeout:.0f}s")


def _staging(asset_dir: Path):
    return lambda: any(asset_dir.glob(".staging-*"))


def _dvc_locked(repo_dir: Path):
    def held() -> bool:
        try:
            with FileLock(str(repo_dir) + ".lock", timeout=0):
                return False
        except Timeout:
            return True
    return held


def assert_store_consistent(artifacts: Path) -> None:
    """Every visible version directory is whole (its name is its content hash, its card is there); every LATEST
    pointer names one of them."""
    for asset_dir in (p for p in artifacts.iterdir() if p.is_dir()):
        for version in (p for p in asset_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            assert (version / CARD_NAME).is_file(), f"{version} has no card: it looks published but is not whole"
            assert content_hash(version)[:VERSION_CHARS] == version.name, f"{version} content differs from its name"
        pointer = asset_dir / LATEST_NAME
        if pointer.exists():
            assert (asset_dir / pointer.read_text().strip() / CARD_NAME).is_file(), f"{pointer} names no version"


def _flat_versions(value) -> list[str]:
    return [v for x in value.values() for v in (_flat_versions(x) if isinstance(x, dict) else [x])]


@pytest.mark.parametrize("stage, upstream, watch", [
    ("ingest", None, "staging"),
    ("clean_records", "ingest", "staging"),
    ("clean_records", "ingest", "dvc"),
])
def test_sigkill_during_stage_leaves_nothing_half_done(tmp_path, stage, upstream, watch):
    root = tmp_path / "ftops"
    write_demo_drops(root / "drops", n_records=3000, n_drops=2)
    home = dagster_home(tmp_path / "dagster_home")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    if upstream:
        _run_to_end(root, upstream, env)
    asset = "raw_records" if stage == "ingest" else stage
    child = _child(root, stage, env)
    condition = _dvc_locked(root / "dvc") if watch == "dvc" else _staging(root / "artifacts" / asset)
    _kill_when(child, condition, f"{asset} {'holding the DVC lock' if watch == 'dvc' else 'staging'}")

    assert_store_consistent(root / "artifacts")
    with DagsterInstance.from_config(str(home)) as instance:
        stuck = instance.get_runs()[0]
        # Dead in process: nothing of it may claim success; run monitoring (dagster.yaml) fails launched runs.
        assert stuck.status != DagsterRunStatus.SUCCESS
        assert instance.run_monitoring_enabled
    assert not _dvc_locked(root / "dvc")(), "the DVC repository is still locked after the kill"

    _run_to_end(root, stage, env)  # the next materialization succeeds
    assert_store_consistent(root / "artifacts")
    with DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(AssetKey(asset))
        meta = event.asset_materialization.metadata
        assert (Path(meta["path"].value) / CARD_NAME).is_file()
        if upstream == "ingest":  # it read the raw_records versions the ingest run recorded, not others
            recorded = {k: v for k, v in meta["input_versions"].value.items()}
            assert recorded and all((root / "artifacts" / "raw_records" / v / CARD_NAME).is_file()
                                    for v in _flat_versions(recorded))
