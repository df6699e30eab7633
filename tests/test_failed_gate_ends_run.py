"""A failed blocking gate ends the run with a clear failure, whatever data is present (issue 16.1: `ftops demo`
hung forever when a gate before training failed and the data held no preference pairs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def gate_failing_chats(path: Path, n: int) -> None:
    """Chat rows with two user turns in a row: they pass cleaning and dedup, then fail the sft_dataset gate."""
    rows = [{"messages": [{"role": "user", "content": f"List employees hired in year {1900 + i} and their city"},
                          {"role": "user", "content": "Answer with SQL only, please"},
                          {"role": "assistant", "content": f"SELECT name FROM employees WHERE hired = {1900 + i};"}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_failed_gate_without_preference_pairs_fails_the_run_instead_of_hanging(tmp_path):
    drops = tmp_path / "drops"
    drops.mkdir()
    gate_failing_chats(drops / "chats.jsonl", 120)
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
