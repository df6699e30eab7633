"""The drop sensor (new drops -> raw_records partitions + their ingest runs) and the automation sensor."""

from __future__ import annotations

import time

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    AutomationConditionSensorDefinition,
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    define_asset_job,
    sensor,
)

from ft_assets.automation.drops import DROP_SHA256_TAG, WatchState, advance
from ft_assets.data.assets import raw_drops_partitions
from resources import RawDrops, RetrainPolicy

RAW = AssetKey("raw_records")

# One run per drop: ingest that drop's file into its raw_records partition.
ingest_drop = define_asset_job("ingest_drop", selection=AssetSelection.assets(RAW),
                               partitions_def=raw_drops_partitions,
                               description="ingest one drop file into its raw_records partition")


def ingested_sha256(instance: DagsterInstance, key: str) -> str | None:
    """The content hash recorded by the latest materialization of raw_records[key], if any."""
    if not instance.has_dynamic_partition(raw_drops_partitions.name, key):
        return None
    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=RAW, asset_partitions=[key]),
                                              limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    value = records[0].asset_materialization.metadata.get("sha256")
    return None if value is None else str(value.value)


def build_drop_sensor(minimum_interval_seconds: int = 30, name: str = "new_drops",
                      default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING) -> SensorDefinition:
    @sensor(name=name, job=ingest_drop, minimum_interval_seconds=minimum_interval_seconds,
            default_status=default_status,
            description="Watches the drop location; registers settled new drops as raw_records partitions and "
                        "requests their ingest runs (debounced, content-hashed, minimum amount + cooldown).")
    def _new_drops(context: SensorEvaluationContext, raw_drops: RawDrops, retrain_policy: RetrainPolicy):
        state = WatchState.from_json(context.cursor)
        decision = advance(state, raw_drops.scan(), time.time(), retrain_policy.policy(), digest=raw_drops.digest,
                           known=lambda key, sha: ingested_sha256(context.instance, key) == sha)
        for note in decision.notes:
            context.log.info(note)
        cursor = decision.state.to_json()
        if not decision.release:
            return SensorResult(skip_reason="; ".join(decision.notes) or "no new drops", cursor=cursor)
        new_keys = [d["key"] for d in decision.release
                    if not context.instance.has_dynamic_partition(raw_drops_partitions.name, d["key"])]
        requests = [RunRequest(run_key=f"{d['key']}:{d['sha256'][:16]}", partition_key=d["key"],
                               tags={DROP_SHA256_TAG: d["sha256"], "ftops/drop_uri": d["uri"]})
                    for d in decision.release]
        context.log.info(f"releasing {len(requests)} drop(s): "
                         + ", ".join(f"{d['key']} ({d['rows']} rows, {d['sha256'][:12]})" for d in decision.release))
        return SensorResult(run_requests=requests, cursor=cursor,
                            dynamic_partitions_requests=[raw_drops_partitions.build_add_request(new_keys)]
                            if new_keys else [])

    return _new_drops


def build_automation_sensor(minimum_interval_seconds: int = 30, name: str = "retrain_automation",
                            default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING
                            ) -> AutomationConditionSensorDefinition:
    """Evaluates the assets' automation conditions (see conditions.py); running by default."""
    return AutomationConditionSensorDefinition(
        name, target=AssetSelection.all(), minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="New raw data flows down to a new evaluated model version, stopped by any failing gate.")
