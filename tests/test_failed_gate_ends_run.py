"""A failed blocking gate ends the run with a clear failure, whatever data is present (issue 16.1: `ftops demo`
hung forever when a gate before training failed and the data held no preference pairs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.test_daemon_e2e import gate_failing_drop

REPO = Path(__file__).resolve().parent.parent


def test_a_failed_gate_without_preference_pairs_fails_the_run_instead_of_hanging(tmp_path):
    drops = tmp_path / "drops"
    drops.mkdir()
    gate_failing_drop(drops / "chats.jsonl", 120)  # two user turns in a row: fails sft_dataset_gate
    recipe = tmp_path / "bad-data.yaml"
    recipe.write_text(yaml.safe_dump({
        "description": "gate-failing chats, no preference pairs",
        "data": {"drops": str(drops)},
        "base_model": {"source": "scratch"},
        "training": {"max_steps": 2},
        "task": {"name": "generic"},
    }))
    env = {**os.environ, "FTOPS_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "ft_assets.cli", "run", str(recipe)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)  # a hang fails here, not forever
    assert done.returncode == 1, done.stderr[-3000:]
    assert "sft_dataset_gate" in done.stderr and "failed after" in done.stderr
