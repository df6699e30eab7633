"""The Dagster CLI is how people materialize from a shell: `dagster asset materialize --select ...` must parse its
selection (DVC's hydra-core pins an antlr4 runtime that Dagster's selection grammar cannot run on; the Makefile
installs Dagster's) and materialize on the instance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from dagster import AssetKey, DagsterInstance

REPO = Path(__file__).resolve().parent.parent
DAGSTER = str(Path(sys.executable).parent / "dagster")


def test_asset_materialize_with_a_selection_runs_from_the_shell(tmp_path):
    home = tmp_path / "ftops"
    (home / "dagster_home").mkdir(parents=True)
    env = {**os.environ, "FTOPS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home")}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"ops": {"base_model": {"config": {"source": "scratch"}}}}))
    listed = subprocess.run([DAGSTER, "asset", "list", "-m", "ft_assets.definitions", "--select", 'key:"sft_dataset"+'],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert {"sft_adapter", "policy", "merged_model", "eval_report"} <= set(listed.stdout.split())
    assert "raw_records" not in listed.stdout.split()
    run = subprocess.run([DAGSTER, "asset", "materialize", "-m", "ft_assets.definitions", "--select", "base_model",
                          "-c", str(config)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    with DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        event = instance.get_latest_materialization_event(AssetKey("base_model"))
    assert event is not None
    assert Path(event.asset_materialization.metadata["path"].value).is_relative_to(home)
