"""The code location the daemon test serves with ``dagster dev -m tests.daemon_workspace``.

ftops' own definitions (assets, checks, automation, both sensors, every resource resolved from
``$FTOPS_HOME``), with test settings: sensors tick every 3 s, drops settle after 1 s and need 50 rows with
no cooldown, steps forked from a preloaded forkserver, and the model gates are ones a tiny scratch model can pass
(it writes no SQL and rarely stops on EOS).
"""

from __future__ import annotations

from dagster import Definitions, multiprocess_executor

import ft_assets.definitions as ftops
from ft_assets.automation.conditions import with_retrain_automation
from ft_assets.automation.sensors import build_automation_sensor, build_drop_sensor, ingest_drop
from ft_assets.jobs import build_jobs
from resources import ModelGates, RawDrops, RetrainPolicy
from resources.factory import build_resources
from resources.paths import default_drops_dir

TICK_SECONDS = 3
LENIENT_GATES = ModelGates(min_exact_match_gain=0.0, max_runaway_rate=1.0, quantized_exact_match_tolerance=1.0)

defs = Definitions(
    assets=with_retrain_automation(ftops.all_assets),
    asset_checks=ftops.gates,
    jobs=[ingest_drop, *build_jobs({a.key.to_user_string() for a in ftops.all_assets})],
    sensors=[build_drop_sensor(minimum_interval_seconds=TICK_SECONDS),
             build_automation_sensor(minimum_interval_seconds=TICK_SECONDS)],
    # Steps fork from a server that imported ftops (torch, transformers) once, instead of importing per step.
    executor=multiprocess_executor.configured(
        {"start_method": {"forkserver": {"preload_modules": ["ft_assets.definitions"]}}}),
    resources=build_resources(raw_drops=RawDrops(path=default_drops_dir(), demo_if_empty=False),
                              retrain_policy=RetrainPolicy(settle_seconds=1, min_new_rows=50, cooldown_seconds=0,
                                                           max_wait_seconds=0),
                              model_gates=LENIENT_GATES),
)
