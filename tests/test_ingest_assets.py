"""The data assets on a real (ephemeral) Dagster instance: drop selection, config reaching the logic, gates."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from ft_assets.data.assets import clean_records, deduped_records, raw_records, sft_dataset
from resources import ArtifactIOManager, ArtifactStore, DvcResource, GreatExpectationsResource, RawDrops

DATA_ASSETS = [raw_records, clean_records, deduped_records, sft_dataset]


def _resources(tmp_path: Path, drops: Path, **raw_drops) -> dict:
    return {"io_manager": ArtifactIOManager(), "artifact_store": ArtifactStore(root=str(tmp_path / "artifacts")),
            "raw_drops": RawDrops(path=str(drops), demo_if_empty=False, **raw_drops),
            "gx": GreatExpectationsResource(),
            "dvc": DvcResource(repo_dir=str(tmp_path / "dvc"), remote_url=str(tmp_path / "remote"), enabled=False)}


def _ingest(instance: DagsterInstance, resources: dict, keys: list[str]) -> None:
    instance.add_dynamic_partitions("raw_drops", keys)
    for key in keys:
        assert materialize([raw_records], instance=instance, resources=resources, partition_key=key).success


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _clean(instance: DagsterInstance, resources: dict, config: dict) -> dict:
    result = materialize([raw_records, clean_records], selection=[AssetKey("clean_records")], instance=instance,
                         resources=resources, run_config={"ops": {"clean_records": {"config": config}}},
                         raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return {k: v.value for k, v in result.asset_materializations_for_node("clean_records")[0].metadata.items()}


def _math(n: int, tag: str) -> list[dict]:
    return [{"question": f"{tag} question {i}: what is {i} plus {i}?",
             "answer": f"Add the two numbers.\n{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(n)]


def test_clean_records_takes_only_the_drops_its_config_selects(tmp_path):
    drops = tmp_path / "drops"
    _write(drops / "math-001.jsonl", _math(5, "math"))
    _write(drops / "math-002.jsonl", _math(4, "more math"))
    _write(drops / "sql-001.jsonl", [{"question": "How many employees are there?", "sql": "SELECT 1;"}] * 3)
    instance, resources = DagsterInstance.ephemeral(), _resources(tmp_path, drops)
    _ingest(instance, resources, ["math-001", "math-002", "sql-001"])
    meta = _clean(instance, resources, {"drops": ["math-*"]})
    assert sorted(meta["drops"]) == ["math-001", "math-002"] and meta["rows_in"] == 9
    meta = _clean(instance, resources, {})  # default: every drop
    assert meta["rows_in"] == 12
    result = materialize([raw_records, clean_records], selection=[AssetKey("clean_records")], instance=instance,
                         resources=resources, raise_on_error=False,
                         run_config={"ops": {"clean_records": {"config": {"drops": ["nope-*"]}}}})
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "no ingested drop matches" in str(failure.event_specific_data.error)


def test_keep_newlines_reaches_the_cleaning(tmp_path):
    drops = tmp_path / "drops"
    _write(drops / "gsm.jsonl", _math(3, "gsm"))
    instance, resources = DagsterInstance.ephemeral(), _resources(tmp_path, drops)
    _ingest(instance, resources, ["gsm"])
    for keep, expected in ((True, "Add the two numbers.\n0 + 0 = 0\n#### 0"),
                           (False, "Add the two numbers. 0 + 0 = 0 #### 0")):
        meta = _clean(instance, resources, {"keep_newlines": keep})
        records = pd.read_parquet(Path(meta["path"]) / "records.parquet")
        assert records["completion"].iloc[0] == expected


@pytest.mark.parametrize("field_map", [{"prompt": "text", "completion": "label"}])
def test_raw_records_applies_the_field_map_and_records_the_fields_used(tmp_path, field_map):
    drops = tmp_path / "drops"
    _write(drops / "reviews.jsonl", [{"text": "A warm, funny film about two brothers.", "label": "positive",
                                      "answer": "not this one"}])
    instance, resources = DagsterInstance.ephemeral(), _resources(tmp_path, drops, field_map=field_map)
    instance.add_dynamic_partitions("raw_drops", ["reviews"])
    result = materialize([raw_records], instance=instance, resources=resources, partition_key="reviews")
    meta = result.asset_materializations_for_node("raw_records")[0].metadata
    assert meta["fields_used"].value == {"prompt<-text": 1, "completion<-label": 1}
    bad = _resources(tmp_path, drops, field_map={"prompt": "text", "completion": "stars"})
    result = materialize([raw_records], instance=instance, resources=bad, partition_key="reviews",
                         raise_on_error=False)
    assert not result.success


def _drop_folder(tmp_path: Path) -> Path:
    drops = tmp_path / "drops"
    rows = [{"question": f"How many staff work in department number {i}?", "sql": f"SELECT count(*) FROM s{i};"}
            for i in range(30)]
    rows += rows[:4] + [{"question": "Hi?", "sql": "SELECT 1;"}, {"question": "Who?"}]
    _write(drops / "a.jsonl", rows)
    _write(drops / "b.jsonl", _math(12, "b") + [{"question": "Mail me at jo@example.com please, how much is 2+2?",
                                                "answer": "4"}])
    return drops


def test_validate_and_the_assets_count_the_same_on_the_same_drops(tmp_path):
    from ft_assets.data.preflight import preflight

    drops = _drop_folder(tmp_path)
    instance, resources = DagsterInstance.ephemeral(), _resources(tmp_path, drops)
    _ingest(instance, resources, ["a", "b"])
    result = materialize([raw_records, clean_records, deduped_records], instance=instance, resources=resources,
                         selection=[AssetKey("clean_records"), AssetKey("deduped_records")])
    clean = {k: v.value for k, v in result.asset_materializations_for_node("clean_records")[0].metadata.items()}
    dedup = {k: v.value for k, v in result.asset_materializations_for_node("deduped_records")[0].metadata.items()}
    summary = preflight([str(drops)], min_rows=1)
    raw_quarantined = sum(m["quarantined"] for m in _raw_metadata(instance).values())
    assert summary["quarantined"] == raw_quarantined + clean["quarantined"]
    assert summary["kept"] == dedup["rows"]
    assert summary["duplicates"] == {"exact": dedup["exact_duplicates"], "near": dedup["near_duplicates"]}
    assert summary["pii_redacted"] == clean["pii_redacted"]
    assert summary["rows_in"] == summary["kept"] + summary["quarantined"] + sum(summary["duplicates"].values())


def _raw_metadata(instance: DagsterInstance) -> dict[str, dict]:
    from dagster import AssetRecordsFilter

    out = {}
    for key in instance.get_dynamic_partitions("raw_drops"):
        [record] = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey("raw_records"), asset_partitions=[key]), limit=1).records
        out[key] = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    return out


def test_a_failing_gate_shows_why_rows_went_with_examples(tmp_path):
    from data_checks.checks import clean_records_gate

    drops = _drop_folder(tmp_path)
    instance, resources = DagsterInstance.ephemeral(), _resources(tmp_path, drops)
    _ingest(instance, resources, ["a"])
    result = materialize([raw_records, clean_records, clean_records_gate], instance=instance, resources=resources,
                         selection=[AssetKey("clean_records")], raise_on_error=False)
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed  # 31 rows < 50
    examples = evaluation.metadata["failure_examples"].value
    why = examples["expect_table_row_count_to_be_between()"]["quarantined_by_reason"]
    assert why["too short"][0]["where"] == "a.jsonl:35"
    assert "too short" in evaluation.description and "a.jsonl:35" in evaluation.description
