"""Disk full: the artifact root on a real, tiny filesystem (a size-limited tmpfs mounted for the test). The stage
fails with a message naming the path and the space it needed, publishes nothing, and succeeds once space is
freed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from dagster import DagsterInstance

from ft_assets.automation.ingest import ingest_present_drops
from ft_assets.data.text_to_sql import write_demo_drops
from ft_assets.definitions import build_defs
from ft_assets.lineage.artifacts import DiskFullError, staged_artifact
from resources import ArtifactStore, RawDrops
from resources.factory import build_resources


@pytest.fixture
def small_fs(tmp_path) -> Path:
    mount_point = tmp_path / "small_fs"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(mount_point: Path, leave_bytes: int) -> Path:
    """Take all but ``leave_bytes`` of the filesystem with one file."""
    filler = mount_point / "filler"
    free = os.statvfs(mount_point).f_bavail * os.statvfs(mount_point).f_frsize
    filler.write_bytes(b"\0" * max(0, free - leave_bytes))
    return filler


def _published(asset_dir: Path) -> list[Path]:
    return [p for p in asset_dir.iterdir() if p.is_dir() and not p.name.startswith(".")] if asset_dir.is_dir() else []


def test_disk_full_in_staging_names_path_and_space_and_publishes_nothing(small_fs):
    _fill(small_fs, leave_bytes=64 * 1024)
    with pytest.raises(DiskFullError) as failure, staged_artifact(small_fs, "blob") as staging:
        (staging / "data.bin").write_bytes(os.urandom(512 * 1024))
    message = str(failure.value)
    assert str(small_fs / "blob") in message and "needs more than" in message and "bytes are free" in message
    assert not list((small_fs / "blob").iterdir()), "a partial artifact or staging directory was left behind"


def test_disk_full_during_ingest_fails_the_stage_clearly_and_rerun_after_freeing_succeeds(small_fs, tmp_path):
    drops = tmp_path / "drops"
    write_demo_drops(drops, n_records=600, n_drops=1)
    filler = _fill(small_fs, leave_bytes=16 * 1024)
    defs = build_defs(build_resources(tmp_path / "ftops", artifact_store=ArtifactStore(root=str(small_fs)),
                                      raw_drops=RawDrops(path=str(drops), demo_if_empty=False)))
    instance = DagsterInstance.ephemeral()
    failed = ingest_present_drops(defs, instance)[0]
    assert not failed.success
    error = "".join(str(e.event_specific_data.error) for e in failed.all_events if e.is_step_failure)
    assert "no space left on the device holding" in error and str(small_fs / "raw_records") in error, error[:2000]
    assert not _published(small_fs / "raw_records"), "a version was published from a failed write"
    assert not list((small_fs / "raw_records").glob(".staging-*")), "staging left behind"

    filler.unlink()  # free the space, run again
    reruns = ingest_present_drops(defs, instance)
    assert reruns and all(r.success for r in reruns)
    versions = _published(small_fs / "raw_records")
    assert versions and all((v / "card.json").is_file() for v in versions)
