"""The code location tests/test_production_topology.py serves with ``dagster code-server start -m``.

ftops' own definitions (assets, checks, the recipe jobs, both sensors, every resource resolved from the
environment as in production), with test settings: model gates a tiny scratch model can pass, and the
in-process executor, so one run is one process (the run worker the test kills) and two cores are not shared
between step processes. The sensors load but start stopped: the test launches its one recipe run itself, and a
running automation sensor would answer its ingested drop with a second, full-size retrain on the same two
cores (drop -> sensor -> retrain is tests/test_daemon_e2e.py's, on the embedded instance).
"""

from __future__ import annotations

from dagster import DefaultSensorStatus, Definitions, in_process_executor

import ft_assets.definitions as ftops
from ft_assets.automation.conditions import with_retrain_automation
from ft_assets.automation.sensors import build_automation_sensor, build_drop_sensor, ingest_drop
from ft_assets.jobs import build_jobs
from resources import ModelGates, RawDrops, RetrainPolicy
from resources.factory import build_resources
from resources.paths import default_drops_dir

TICK_SECONDS = 2
LENIENT_GATES = ModelGates(min_exact_match_gain=0.0, max_runaway_rate=1.0, quantized_exact_match_tolerance=1.0)

defs = Definitions(
    assets=with_retrain_automation(ftops.all_assets),
    asset_checks=ftops.gates,
    jobs=[ingest_drop, *build_jobs({a.key.to_user_string() for a in ftops.all_assets})],
    sensors=[build_drop_sensor(minimum_interval_seconds=TICK_SECONDS, default_status=DefaultSensorStatus.STOPPED),
             build_automation_sensor(minimum_interval_seconds=TICK_SECONDS,
                                     default_status=DefaultSensorStatus.STOPPED)],
    executor=in_process_executor,
    resources=build_resources(raw_drops=RawDrops(path=default_drops_dir(), demo_if_empty=False),
                              retrain_policy=RetrainPolicy(settle_seconds=1, min_new_rows=50, cooldown_seconds=0,
                                                           max_wait_seconds=0),
                              model_gates=LENIENT_GATES),
)
