"""What the daemon and topology tests' code locations share: ftops' own definitions with test settings.

``ft_assets.definitions.build_defs`` (every asset, check, job and both sensors, as shipped, including their
default RUNNING status) with: sensors that tick every few seconds, drops that settle after 1 s and need 50 rows
with no cooldown, no demo drops in the watched folder, and model gates a tiny scratch model can pass (it writes
no SQL and rarely stops on EOS).
"""

from __future__ import annotations

from dagster import Definitions, ExecutorDefinition

from ft_assets.automation.sensors import build_automation_sensor, build_drop_sensor
from ft_assets.definitions import build_defs
from resources import ModelGates, RawDrops, RetrainPolicy
from resources.factory import build_resources
from resources.paths import default_drops_dir

LENIENT_GATES = ModelGates(min_exact_match_gain=0.0, max_runaway_rate=1.0, quantized_exact_match_tolerance=1.0)
QUICK_RETRAIN = RetrainPolicy(settle_seconds=1, min_new_rows=50, cooldown_seconds=0, max_wait_seconds=0)


def scratch_location(tick_seconds: int, executor: ExecutorDefinition) -> Definitions:
    """The code location with test settings; resources resolved from the environment (``$FTOPS_*``)."""
    return build_defs(
        build_resources(raw_drops=RawDrops(path=default_drops_dir(), demo_if_empty=False),
                        retrain_policy=QUICK_RETRAIN, model_gates=LENIENT_GATES),
        sensor_defs=[build_drop_sensor(minimum_interval_seconds=tick_seconds),
                     build_automation_sensor(minimum_interval_seconds=tick_seconds)],
        executor=executor)
