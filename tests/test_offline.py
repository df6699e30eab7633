"""ftops never reaches for a hub at run time unless the user says so."""

from __future__ import annotations

import os
import subprocess
import sys


def _hub_offline_after_import(env: dict) -> str:
    code = "import ft_assets, os; print(os.environ.get('HF_HUB_OFFLINE'))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_importing_ftops_turns_hub_access_off_unless_the_user_set_it():
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    assert _hub_offline_after_import(env) == "1"
    assert _hub_offline_after_import({**env, "HF_HUB_OFFLINE": "0"}) == "0"
