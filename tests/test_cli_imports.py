"""`ftops models list` and `ftops lineage` stay light: they never load the ML or dataframe stacks.

Those commands read the registry and Dagster's records; importing torch/transformers/pandas/GX for them
costs seconds of CPU on a small machine (issue 12: lineage under 2 s while other work holds the cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "great_expectations", "pandas", "mlflow",
         "deepspeed", "sklearn", "optuna")
PROBE = """
import contextlib, io, json, sys
from ft_assets.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "out": out.getvalue(), "modules": sorted(m for m in sys.modules if "." not in m)}))
"""


# (argv, exit code): lineage --dataset exits 2 when no registered model was trained on that dataset.
@pytest.mark.parametrize(("argv", "code"), [(["models", "list", "--json"], 0),
                                            (["lineage", "--dataset", "0" * 32, "--json"], 2)])
def test_registry_commands_do_not_import_the_ml_stack(tmp_path, argv, code):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "FTOPS_REGISTRY": str(tmp_path / "r.sqlite"),
           "FTOPS_HOME": str(tmp_path / "home"), "GX_ANALYTICS_ENABLED": "false"}
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # The command really ran: an empty registry answers with an empty list, not an error.
    assert result["code"] == code
    answer = json.loads(result["out"])
    assert (answer["models"] == []), answer
    loaded = set(result["modules"])
    assert "dagster" in loaded  # it did read Dagster's records
    assert not loaded & set(HEAVY), f"ftops {' '.join(argv)} imported {sorted(loaded & set(HEAVY))}"
