"""Recipes that are not the demo, run end to end with `ftops run` as a user would: the task's metrics decide.

GSM8K on a scratch model: the report's metrics are the math task's (numeric match), no SQL metric anywhere.
sql-eval category labels on SmolLM2-135M: a short fine-tune lifts accuracy over the base, so the gate is seen
deciding on a non-SQL task's primary metric. Both read ../shared/datasets (skipped with the reason without it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "datasets"
GGUF = REPO / ".ftops" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

# The GSM8K smoke run is on a scratch model, so its gates are the task's only: GRPO is switched off (minutes of
# RL on a model that cannot count) and runaway generations are allowed (a scratch model never learned its EOS).


def ftops_run(tmp_path: Path, recipe: str, *sets: str) -> tuple[dict, str]:
    """`ftops run RECIPE --set ...` in a fresh FTOPS_HOME; the eval report it printed, and its output."""
    env = {**os.environ, "FTOPS_HOME": str(tmp_path / "home")}
    args = [sys.executable, "-m", "ft_assets.cli", "run", recipe, *(a for s in sets for a in ("--set", s))]
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    report = Path(done.stdout.strip().splitlines()[-1])
    return json.loads(report.read_text()), done.stdout


@pytest.mark.skipif(not (SHARED / "gsm8k" / "train.jsonl").is_file(), reason="../shared/datasets/gsm8k is missing")
def test_gsm8k_recipe_reports_numeric_metrics_and_no_sql(tmp_path):
    report, out = ftops_run(tmp_path, "gsm8k-math", "base_model.source=scratch", "training.max_steps=4",
                            "training.per_device_train_batch_size=2", "training.max_length=2048",
                            "eval.max_examples=6", "eval.max_new_tokens=8",
                            "quantize.methods=[bnb-int8]", "grpo.enabled=false",
                            "gates.max_runaway_rate=1.0")
    assert report["task"] == "math" and report["primary_metric"] == "numeric_match"
    assert set(report["metric_names"]) == {"numeric_match", "exact_match"}
    text = json.dumps(report).lower()
    assert "execution_accuracy" not in text and "sql" not in " ".join(report["metric_names"])
    gate = next(g for g in report["gates"] if g["name"] == "adapter_beats_base")
    assert gate["detail"].startswith("numeric_match base")
    assert report["policy"]["chosen"] == "sft"
    assert "numeric_match" in out


@pytest.mark.skipif(not (SHARED / "sql_eval").is_dir(), reason="../shared/datasets/sql_eval is missing")
@pytest.mark.skipif(not GGUF.is_file(), reason="SmolLM2 GGUF missing: run `make model`")
def test_a_short_smollm2_fine_tune_lifts_a_classification_task_and_the_gate_decides_on_it(tmp_path):
    report, out = ftops_run(tmp_path, "sql-category-classification", f"base_model.gguf_path={GGUF}",
                            "training.max_steps=20", "quantize.methods=[bnb-int8]")
    models = report["models"]
    assert report["primary_metric"] == "accuracy"
    print(out.split("HTML report")[0])
    assert models["adapter"]["accuracy"] >= models["base"]["accuracy"] + 0.2, models
    gate = next(g for g in report["gates"] if g["name"] == "adapter_beats_base")
    assert gate["passed"] and "accuracy" in json.dumps(gate)
