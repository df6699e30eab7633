"""The automation conditions, evaluated in process on real materializations (no daemon, no training)."""

from __future__ import annotations

import json
from pathlib import Path

from dagster import AssetKey, DagsterInstance, Definitions, evaluate_automation_conditions

from ft_assets.automation.ingest import ingest_present_drops
from ft_assets.data.text_to_sql import generate_clean_pairs
from ft_assets.definitions import build_defs
from resources import ModelGates, RetrainPolicy
from resources.factory import build_resources

CHAIN = ["clean_records", "deduped_records", "sft_dataset", "sft_adapter", "merged_model", "quantized_model",
         "eval_report", "model_cards"]


def requested(result) -> set[str]:
    return {k.to_user_string() for k in result._requested_partitions_by_asset_key if result.get_num_requested(k)}


def build(tmp_path: Path) -> Definitions:
    return build_defs(build_resources(tmp_path, model_gates=ModelGates(),
                                      retrain_policy=RetrainPolicy()))


def test_definitions_load_with_sensors_running_by_default():
    from dagster import DefaultSensorStatus

    from ft_assets.definitions import defs

    repo = defs.get_repository_def()
    for name in ("new_drops", "retrain_automation"):
        assert repo.get_sensor_def(name).default_status == DefaultSensorStatus.RUNNING
    graph = defs.resolve_asset_graph()
    assert graph.get(AssetKey("raw_records")).automation_condition is None  # the sensor drives it
    for name in CHAIN:
        assert graph.get(AssetKey(name)).automation_condition.get_label() == "retrain_on_new_data"


def test_new_data_cascades_identical_data_does_not_and_a_failed_gate_stops(tmp_path):
    drops = tmp_path / "drops"
    drops.mkdir()
    # 30 rows: the clean_records gate (>= 50 rows) fails on it.
    (drops / "small.jsonl").write_text("".join(json.dumps({"question": q, "sql": s}) + "\n"
                                               for q, s in generate_clean_pairs(30, seed=3)))
    defs = build(tmp_path)
    with DagsterInstance.ephemeral() as instance:
        first = evaluate_automation_conditions(defs, instance)
        assert requested(first) == {"base_model"}  # nothing to train on yet; the base model is missing
        assert all(r.success for r in ingest_present_drops(defs, instance))
        new_drop = evaluate_automation_conditions(defs, instance, cursor=first.cursor)
        # One new drop: the whole chain in one tick (one run), the base model with it.
        assert requested(new_drop) >= {"base_model", *CHAIN}
        # The same bytes ingested again publish the same data version: nothing downstream moves.
        job = defs.resolve_job_def("ingest_drop")
        assert job.execute_in_process(instance=instance, partition_key="small").success
        same = evaluate_automation_conditions(defs, instance, cursor=new_drop.cursor)
        assert not requested(same) & set(CHAIN)
        # clean_records materializes but its blocking gate fails: nothing downstream is requested.
        run = defs.resolve_job_def("end_to_end").execute_in_process(
            instance=instance, asset_selection=[AssetKey("clean_records")], raise_on_error=False)
        assert {e.check_name: e.passed for e in run.get_asset_check_evaluations()} == {"clean_records_gate": False}
        gated = evaluate_automation_conditions(defs, instance, cursor=same.cursor)
        assert not requested(gated) & set(CHAIN[1:])
        # More data; clean_records again, its gate passes now: the rest follows.
        (drops / "more.jsonl").write_text("".join(json.dumps({"question": q, "sql": s}) + "\n"
                                                  for q, s in generate_clean_pairs(60, seed=4)))
        assert all(r.success for r in ingest_present_drops(defs, instance))
        run = defs.resolve_job_def("end_to_end").execute_in_process(
            instance=instance, asset_selection=[AssetKey("clean_records")], raise_on_error=False)
        assert {e.check_name: e.passed for e in run.get_asset_check_evaluations()} == {"clean_records_gate": True}
        passed = evaluate_automation_conditions(defs, instance, cursor=gated.cursor)
        assert requested(passed) >= set(CHAIN[1:]) and "clean_records" not in requested(passed)
