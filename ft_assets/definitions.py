"""The table of contents: every asset, check, job and resource of ftops."""

from __future__ import annotations

from dagster import Definitions, ExecutorDefinition, multi_or_in_process_executor

from data_checks.checks import clean_records_gate, deduped_records_gate, sft_dataset_gate
from data_checks.preference_checks import preference_dataset_gate
from ft_assets.automation.conditions import with_retrain_automation
from ft_assets.automation.sensors import build_automation_sensor, build_drop_sensor, ingest_drop
from ft_assets.config_guard import guarded_executor
from ft_assets.data.assets import clean_records, deduped_records, raw_records, sft_dataset
from ft_assets.data.preference_assets import preference_dataset
from ft_assets.evaluation.assets import eval_report
from ft_assets.evaluation.checks import (
    adapter_beats_base,
    forgetting_within_tolerance,
    merged_matches_adapter,
    merged_serving_consistent,
    quantized_serving_consistent,
    quantized_within_tolerance,
)
from ft_assets.jobs import build_jobs
from ft_assets.lineage.assets import model_cards, registered_models
from ft_assets.models.assets import base_model, merged_model, quantized_model
from ft_assets.training.assets import sft_adapter
from ft_assets.training.checks import sft_label_mask
from ft_assets.training.dpo_assets import dpo_adapter
from ft_assets.training.grpo_assets import grpo_adapter
from ft_assets.training.hpo_assets import hpo_study
from ft_assets.training.policy_assets import policy
from resources.factory import build_resources

data_assets = [raw_records, clean_records, deduped_records, sft_dataset, preference_dataset]
model_assets = [base_model, hpo_study, sft_adapter, dpo_adapter, grpo_adapter, policy, merged_model,
                quantized_model]
evaluation_assets = [eval_report, model_cards, registered_models]
all_assets = [*data_assets, *model_assets, *evaluation_assets]
data_gates = [clean_records_gate, deduped_records_gate, sft_dataset_gate, preference_dataset_gate]
model_gates = [merged_matches_adapter, merged_serving_consistent, quantized_serving_consistent, adapter_beats_base,
               forgetting_within_tolerance, quantized_within_tolerance]
training_gates = [sft_label_mask]
gates = [*data_gates, *training_gates, *model_gates]

# New drop -> sensor -> ingest run -> automation: every downstream asset follows, stopped by a failing gate.
sensors = [build_drop_sensor(), build_automation_sensor()]


def build_defs(resources: dict | None = None, *, sensor_defs: list | None = None,
               executor: ExecutorDefinition | None = None) -> Definitions:
    """The code location: every asset and gate, ``ingest_drop``, ``end_to_end`` and one job per recipe, the sensors,
    and a resource set (``build_resources()``: the deployment ``FTOPS_DEPLOYMENT`` names, embedded by default).

    ``sensor_defs`` and ``executor`` replace the sensors and Dagster's default executor (test code locations
    tick faster or run each run in one process)."""
    asset_names = {a.key.to_user_string() for a in all_assets}
    return Definitions(assets=with_retrain_automation(all_assets), asset_checks=gates,
                       jobs=[ingest_drop, *build_jobs(asset_names)],
                       sensors=sensors if sensor_defs is None else sensor_defs,
                       # every run's config checked whole before any step (bad values name their field)
                       executor=guarded_executor(executor or multi_or_in_process_executor),
                       resources=resources if resources is not None else build_resources())


defs = build_defs()
