"""`ftops lineage`: the whole chain of a model version from Dagster's records and the cards, and back."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetObservation

from ft_assets.lineage.audit import audit, render, trained_on
from ft_assets.lineage.registry import Registry
from resources import ModelRegistry
from tests.test_cli_imports import PROBE, REPO
from tests.test_pipeline import SCRATCH_CONFIG, materialization, path_of, raw_partitions, run_graph
from tests.test_registry import MODEL_CHAIN, ftops, real_instance


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """One run with auto-promotion on, so the audit has a promotion to show."""
    tmp_path = tmp_path_factory.mktemp("lineage")
    instance = real_instance(tmp_path / "dagster_home")
    registry = ModelRegistry(path=str(tmp_path / "registry.sqlite"), auto_promote=True)
    # policy sft: the audited training is the SFT adapter's (the choice itself is tested with the pipeline).
    config = {"ops": {**SCRATCH_CONFIG["ops"], "policy": {"config": {"policy": "sft"}}}}
    result, _ = run_graph(tmp_path, config, instance=instance, asset_selection=MODEL_CHAIN,
                          model_registry=registry)
    assert result.success
    return result, instance, tmp_path


@pytest.fixture
def registry(audited):
    with Registry(audited[2] / "registry.sqlite") as opened:
        yield opened


def test_without_a_ranking_merged_generates_once_for_adapter_and_merged(audited):
    """policy sft ranks nothing, so eval_report generates: merged_matches_adapter holds, so the merged model runs
    the one pass (no LoRA in every token) and the adapter is scored on it, listed in the variants' order."""
    _, instance, _ = audited
    report = json.loads((path_of(instance, "eval_report") / "report.json").read_text())
    assert report["reused_generations"] == {"adapter": "merged"}
    models = report["models"]
    assert list(models)[:3] == ["base", "adapter", "merged"]
    assert models["adapter"]["perplexity"] == models["merged"]["perplexity"]
    # Provenance, not timing: a tiny model on a fast CPU can generate in under a millisecond.
    assert models["adapter"]["generation_seconds"] == 0.0
    assert models["adapter"]["generations_reused_from"] == "merged"
    assert "generations_reused_from" not in models["merged"]


def test_the_chain_is_complete_and_matches_the_recorded_materializations(audited, registry):
    result, instance, tmp_path = audited
    chain = audit(registry, instance, "production")
    assert chain["verified"], chain["problems"]
    assert chain["model"]["id"] == f"merged_model@{path_of(instance, 'merged_model').name}"
    nodes = {n["name"]: n for n in chain["chain"]}
    partitions = raw_partitions(instance)
    assert {f"raw_records[{k}]" for k in partitions} | {
        "clean_records", "deduped_records", "sft_dataset", "base_model", "sft_adapter", "preference_dataset",
        "dpo_adapter", "grpo_adapter", "policy", "merged_model"} == set(nodes)
    for name in ("clean_records", "deduped_records", "sft_dataset", "base_model", "sft_adapter", "policy",
                 "merged_model"):
        assert nodes[name]["version"] == path_of(instance, name).name, name
        assert nodes[name]["run_id"] == result.run_id
    for key, metadata in partitions.items():
        assert nodes[f"raw_records[{key}]"]["version"] == metadata["version"]
    # Raw drops with the content hash of the bytes on disk.
    drops = {d["id"]: d for d in chain["raw_drops"]}
    assert set(drops) == set(partitions)
    for drop in drops.values():
        assert drop["sha256"] == hashlib.sha256(Path(drop["file"]).read_bytes()).hexdigest()
    # Dataset versions, with their DVC md5s, configs and counts.
    for name in ("clean_records", "deduped_records", "sft_dataset"):
        recorded = materialization(instance, name).metadata
        assert chain["datasets"][name]["dvc_md5"] == recorded["dvc_md5"].value
    assert chain["datasets"]["deduped_records"]["config"]["near_threshold"] == 0.8
    assert chain["datasets"]["sft_dataset"]["counts"]["train_rows"] == \
        materialization(instance, "sft_dataset").metadata["train_rows"].value
    assert chain["base_model"]["source"] == "scratch" and chain["base_model"]["revision"] != "unknown"
    training = chain["training"]
    assert training["adapter"] == "sft_adapter" and "asks for the SFT adapter" in training["policy_reason"]
    assert training["git_commit"] == materialization(instance, "sft_adapter").metadata["code_version"].value
    assert training["seed"] == 0 and training["config"]["max_steps"] == 60
    for key in ("method", "config_hash", "library_versions"):
        assert training[key]  # the recorded value, or "unknown" where the card does not carry it yet
    # Evaluation, gates and the checks Dagster recorded.
    report = json.loads((path_of(instance, "eval_report") / "report.json").read_text())
    assert chain["evaluation"]["metrics"] == report["models"]["merged"]
    assert chain["evaluation"]["eval_report"] == path_of(instance, "eval_report").name
    assert all(g["passed"] for g in chain["evaluation"]["gates"])
    checks = {c["check"] for c in chain["checks"] + chain["evaluation"]["checks"]}
    assert {"clean_records_gate", "sft_dataset_gate", "merged_matches_adapter", "adapter_beats_base"} <= checks
    # auto_promote moved production in the run, and the run recorded it.
    assert [(m["alias"], m["actor"]) for m in chain["promotions"]] == [
        ("candidate", f"dagster run {result.run_id}"), ("production", f"dagster run {result.run_id}")]
    assert materialization(instance, "registered_models").metadata["production"].value == chain["model"]["id"]
    text = render(chain)
    assert "verified: Dagster records and artifact cards agree" in text and "production" in text


def test_a_quantized_variant_chains_through_the_merged_model(audited, registry):
    _, instance, _ = audited
    quantized = path_of(instance, "quantized_model").name
    chain = audit(registry, instance, f"quantized_model@{quantized}/bnb-int8")
    nodes = {n["name"]: n for n in chain["chain"]}
    assert chain["verified"], chain["problems"]
    assert nodes["quantized_model"]["inputs"]["merged_model"] == nodes["merged_model"]["version"]
    assert chain["model"]["variant"] == "quantized_int8" and chain["promotions"] == []
    assert "quantized_int8_serving_consistent" in {g["name"] for g in chain["evaluation"]["gates"]}


def test_reverse_lookup_finds_the_models_trained_on_a_dataset_version(audited, registry):
    _, instance, _ = audited
    merged = f"merged_model@{path_of(instance, 'merged_model').name}"
    md5 = materialization(instance, "sft_dataset").metadata["dvc_md5"].value
    sha256 = next(iter(raw_partitions(instance).values()))["sha256"]
    for query in (path_of(instance, "sft_dataset").name, md5, md5[:10], sha256, "drop-0001"):
        found = {m["id"] for m in trained_on(registry, instance, query)["models"]}
        assert merged in found and len(found) == 3, query
    assert trained_on(registry, instance, "0" * 32)["models"] == []


def test_cli_prints_and_emits_json(audited):
    _, instance, tmp_path = audited
    code, out = ftops(tmp_path, "lineage", "production", "--json")
    emitted = json.loads(out)
    assert code == 0 and emitted["verified"] and emitted["model"]["aliases"] == ["candidate", "production"]
    code, text = ftops(tmp_path, "lineage", path_of(instance, "merged_model").name[:8])
    assert code == 0
    for line in ("raw drops", "sft_dataset ", "base_model ", "method ", "gate adapter_beats_base: passed",
                 "production: - -> merged_model@", "verified: Dagster records and artifact cards agree"):
        assert line in text, line
    md5 = materialization(instance, "sft_dataset").metadata["dvc_md5"].value
    code, out = ftops(tmp_path, "lineage", "--dataset", md5, "--json")
    assert code == 0 and len(json.loads(out)["models"]) == 3
    assert ftops(tmp_path, "lineage", "nothing-like-this")[0] == 2


def _probe(tmp_path: Path, *argv: str) -> dict:
    """``ftops ARGV`` in its own process: exit code, output and the top-level modules it imported."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "FTOPS_USER": "auditor",
           "FTOPS_REGISTRY": str(tmp_path / "registry.sqlite"), "GX_ANALYTICS_ENABLED": "false"}
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_readers_skip_dagster_until_the_instance_records_something_new(audited):
    """Issue 12.4: importing and opening Dagster alone costs >2 s of CPU on a busy 2-core box, so once the
    registry has caught up and a version is audited, lineage and models list answer from the registry."""
    _, instance, tmp_path = audited
    audited_once = json.loads(ftops(tmp_path, "lineage", "production", "--json")[1])
    ftops(tmp_path, "models", "list", "--json")  # catches up with the instance
    again = _probe(tmp_path, "lineage", "production", "--json")
    assert again["code"] == 0 and "dagster" not in again["modules"]
    assert json.loads(again["out"]) == audited_once
    listed = _probe(tmp_path, "models", "list", "--json")
    assert listed["code"] == 0 and "dagster" not in listed["modules"]
    assert len(json.loads(listed["out"])["models"]) == 3
    # Something new in the instance: the next reader syncs with it again.
    instance.report_runless_asset_event(AssetObservation(asset_key="registered_models", description="probe"))
    assert "dagster" in _probe(tmp_path, "models", "list", "--json")["modules"]
    assert "dagster" not in _probe(tmp_path, "models", "list", "--json")["modules"]
    # --refresh audits from the instance and the cards again.
    refreshed = _probe(tmp_path, "lineage", "production", "--json", "--refresh")
    assert "dagster" in refreshed["modules"] and json.loads(refreshed["out"])["verified"]


def test_a_card_that_disagrees_with_dagster_fails_the_audit(audited, registry):
    _, instance, _ = audited
    card_path = path_of(instance, "deduped_records") / "card.json"
    original = card_path.read_text()
    card = json.loads(original)
    card["inputs"]["clean_records"]["version"] = "0123456789abcdef"
    card_path.write_text(json.dumps(card))
    try:
        chain = audit(registry, instance, "production")
    finally:
        card_path.write_text(original)
    assert not chain["verified"]
    assert any("deduped_records: card inputs" in p for p in chain["problems"]), chain["problems"]
