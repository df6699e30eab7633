"""The model registry: versions registered by the graph, aliases, gate-checked promotion, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from ft_assets.lineage.registry import (
    ModelVersion,
    PromotionRefused,
    Registry,
    UnknownModel,
    gates_for_variant,
)
from tests.conftest import REPO
from tests.test_pipeline import SCRATCH_CONFIG, materialization, path_of, run_graph

# The model chain, the alignment stages the policy chooses among included (no HPO study).
MODEL_CHAIN = [AssetKey(k) for k in ("raw_records", "clean_records", "deduped_records", "sft_dataset", "base_model",
                                     "sft_adapter", "preference_dataset", "dpo_adapter", "grpo_adapter", "policy",
                                     "merged_model", "quantized_model", "eval_report", "model_cards",
                                     "registered_models")]
DAGSTER_YAML = "telemetry:\n  enabled: false\n"


def real_instance(home: Path) -> DagsterInstance:
    """A persistent SQLite instance in ``home``, the same one ``ftops`` opens with DAGSTER_HOME=home."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    return DagsterInstance.from_config(str(home))


# -- the registry alone (no Dagster, milliseconds) ---------------------------------------------------------

GATES = [
    {"name": "adapter_beats_base", "passed": True, "value": 0.5, "threshold": 0.2},
    {"name": "merged_matches_adapter", "passed": True, "value": 1e-4, "threshold": 0.01},
    {"name": "merged_serving_consistent", "passed": True, "value": 0.0, "threshold": 0.0},
    {"name": "quantized_serving_consistent", "passed": True, "value": 0.0, "threshold": 0.0},
    {"name": "quantized_int8_serving_consistent", "passed": True, "value": 0.0, "threshold": 0.0},
    {"name": "quantized_within_tolerance", "passed": False, "value": 0.4, "threshold": 0.15},
    {"name": "quantized_int8_within_tolerance", "passed": True, "value": 0.0, "threshold": 0.15},
]
VARIANTS = ["base", "adapter", "merged", "quantized", "quantized_int8"]


def test_each_variant_is_judged_by_its_own_gates_and_its_ancestors():
    names = {v: {g["name"] for g in gates_for_variant(GATES, v, VARIANTS)} for v in ("merged", "quantized_int8")}
    assert names["merged"] == {"adapter_beats_base", "merged_matches_adapter", "merged_serving_consistent"}
    # "quantized_" is a prefix of quantized_int8's gates too: ownership is by the longest variant name.
    assert names["quantized_int8"] == names["merged"] | {"quantized_int8_serving_consistent",
                                                          "quantized_int8_within_tolerance"}
    assert "quantized_within_tolerance" in {g["name"] for g in gates_for_variant(GATES, "quantized", VARIANTS)}


def _version(tmp_path: Path, name: str, variant: str, gates: list[dict], eval_storage_id: int = 1) -> ModelVersion:
    (tmp_path / name).mkdir(exist_ok=True)
    return ModelVersion(id=f"merged_model@{name}", asset="merged_model", variant=variant, version=name,
                        path=str(tmp_path / name), gates=gates, eval_storage_id=eval_storage_id,
                        metrics={"exact_match": 0.5})


def test_aliases_move_and_every_move_is_recorded(tmp_path):
    registry = Registry(tmp_path / "registry.sqlite")
    good = gates_for_variant(GATES, "merged", VARIANTS)
    registry.register(_version(tmp_path, "aaaa1111", "merged", good))
    registry.register(_version(tmp_path, "bbbb2222", "merged", good))
    assert registry.set_alias("staging", "aaaa", actor="ann", reason="first") is not None
    assert registry.set_alias("staging", "aaaa1111", actor="ann") is None  # already there: no event
    registry.set_alias("staging", "merged_model@bbbb2222", actor="bob", reason="newer", source="cli")
    moves = registry.history(alias="staging")
    assert [(m.from_id, m.to_id, m.actor, m.reason) for m in moves] == [
        (None, "merged_model@aaaa1111", "ann", "first"),
        ("merged_model@aaaa1111", "merged_model@bbbb2222", "bob", "newer")]
    assert registry.resolve("staging").id == "merged_model@bbbb2222"
    assert registry.get("merged_model@bbbb2222").aliases == ["staging"]
    with pytest.raises(ValueError, match="alias"):
        registry.set_alias("Not An Alias", "aaaa1111", actor="ann")
    with pytest.raises(UnknownModel):
        registry.resolve("cccc")


def test_production_refuses_failed_unevaluated_and_missing_versions(tmp_path):
    registry = Registry(tmp_path / "registry.sqlite")
    registry.register(_version(tmp_path, "aaaa1111", "quantized", gates_for_variant(GATES, "quantized", VARIANTS)))
    registry.register(_version(tmp_path, "bbbb2222", "merged", []))
    registry.register(_version(tmp_path, "cccc3333", "merged", gates_for_variant(GATES, "merged", VARIANTS)))
    with pytest.raises(PromotionRefused, match="quantized_within_tolerance"):
        registry.promote("aaaa1111", actor="ann")
    with pytest.raises(PromotionRefused, match="no evaluation"):
        registry.promote("bbbb2222", actor="ann")
    (tmp_path / "cccc3333").rmdir()
    with pytest.raises(PromotionRefused, match="no longer exists"):
        registry.promote("cccc3333", actor="ann")
    assert registry.aliases() == {} and registry.history() == []
    # A later evaluation that fails replaces the passing one; an older one synced late does not.
    (tmp_path / "cccc3333").mkdir()
    failed = [{**g, "passed": False} if g["name"] == "adapter_beats_base" else g
              for g in gates_for_variant(GATES, "merged", VARIANTS)]
    registry.register(_version(tmp_path, "cccc3333", "merged", failed, eval_storage_id=5))
    registry.register(_version(tmp_path, "cccc3333", "merged", gates_for_variant(GATES, "merged", VARIANTS),
                               eval_storage_id=3))
    assert registry.get("merged_model@cccc3333").gates_passed is False


# -- the graph registers its models -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("registry")
    instance = real_instance(tmp_path / "dagster_home")
    result, _ = run_graph(tmp_path, SCRATCH_CONFIG, instance=instance, asset_selection=MODEL_CHAIN)
    assert result.success
    return result, instance, tmp_path


def ftops(tmp_path: Path, *argv: str) -> tuple[int, str]:
    """``ftops`` as a user runs it, in its own process, on the instance and registry under ``tmp_path``."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "FTOPS_USER": "auditor",
           "FTOPS_REGISTRY": str(tmp_path / "registry.sqlite"), "GX_ANALYTICS_ENABLED": "false"}
    done = subprocess.run([sys.executable, "-m", "ft_assets.cli", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    return done.returncode, done.stdout


@pytest.fixture
def cli(registered):
    return lambda *argv: ftops(registered[2], *argv)


def test_the_run_registers_every_merged_and_quantized_version(registered):
    result, instance, tmp_path = registered
    merged_version = path_of(instance, "merged_model").name
    quantized_version = path_of(instance, "quantized_model").name
    report = json.loads((path_of(instance, "eval_report") / "report.json").read_text())
    with Registry(tmp_path / "registry.sqlite") as registry:
        models = {m.id: m for m in registry.versions()}
        assert set(models) == {f"merged_model@{merged_version}", f"quantized_model@{quantized_version}/bnb-nf4",
                               f"quantized_model@{quantized_version}/bnb-int8"}
        merged = models[f"merged_model@{merged_version}"]
        assert merged.path == str(path_of(instance, "merged_model"))
        assert merged.metrics == report["models"]["merged"] and merged.gates_passed
        assert merged.eval_report == path_of(instance, "eval_report").name and merged.run_id == result.run_id
        assert Path(merged.card_path).read_text().startswith("# merged_model")
        nf4 = models[f"quantized_model@{quantized_version}/bnb-nf4"]
        assert nf4.variant == "quantized" and Path(nf4.path) == path_of(instance, "quantized_model") / "bnb-nf4"
        assert {g["name"] for g in nf4.gates} >= {"adapter_beats_base", "quantized_serving_consistent"}
        assert "quantized_int8_serving_consistent" not in {g["name"] for g in nf4.gates}
        # 'candidate' moved onto the merged model, by the run; nothing was promoted (auto_promote is off).
        assert registry.aliases() == {"candidate": merged.id}
        (move,) = registry.history()
        assert (move.alias, move.from_id, move.to_id, move.actor) == ("candidate", None, merged.id,
                                                                       f"dagster run {result.run_id}")
    metadata = materialization(instance, "registered_models").metadata
    assert metadata["candidate"].value == merged.id and metadata["production"].value == ""
    assert metadata["alias_moves"].value[0]["to_id"] == merged.id


def test_cli_lists_moves_aliases_and_promotes(registered, cli):
    _, instance, _ = registered
    code, out = cli("models", "list", "--json")
    listing = json.loads(out)
    assert code == 0 and len(listing["models"]) == 3 and listing["aliases"]["candidate"].startswith("merged_model@")
    merged = listing["aliases"]["candidate"]
    int8 = next(m["id"] for m in listing["models"] if m["variant"] == "quantized_int8")
    code, out = cli("models", "list")
    assert code == 0 and merged in out and "candidate" in out and "exact_match" in out.splitlines()[0]
    assert json.loads(cli("models", "alias", int8, "edge", "--reason", "smallest", "--json")[1])["moved"]
    assert json.loads(cli("models", "alias", merged, "edge", "--json")[1])["move"]["from_id"] == int8
    code, out = cli("models", "promote", "candidate", "--reason", "reviewed", "--json")
    promoted = json.loads(out)
    assert code == 0 and promoted["model"] == merged and promoted["move"]["actor"] == "auditor"
    history = json.loads(cli("models", "history", "--json")[1])
    assert [(m["alias"], m["to_id"], m["source"]) for m in history][-3:] == [
        ("edge", int8, "cli"), ("edge", merged, "cli"), ("production", merged, "cli")]
    # Dagster's own record of the command-line moves: observations on registered_models.
    observations = instance.fetch_observations(AssetKey("registered_models"), limit=10).records
    recorded = [{k: v.value for k, v in r.asset_observation.metadata.items()} for r in observations]
    assert {"alias": "production", "to_id": merged, "reason": "reviewed"}.items() <= recorded[0].items()
    assert len(recorded) == 3


def test_promotion_is_refused_when_a_blocking_gate_failed(registered, cli):
    """Re-evaluate the same models with a margin the scratch model cannot meet: the run stops before
    registered_models, yet the registry lists the failed evaluation and refuses production."""
    _, instance, tmp_path = registered
    production_before = json.loads(cli("models", "list", "--json")[1])["aliases"].get("production")
    # In a second process, as another run would be; a second in-process pipeline run here found sys.stderr
    # closed under pytest's capture (a stream some library swapped in during the first run).
    script = f"""
from pathlib import Path
from dagster import AssetKey, DagsterInstance
from resources import ModelGates, ModelRegistry
from tests.test_pipeline import SCRATCH_CONFIG, run_graph
tmp = Path({str(tmp_path)!r})
strict = ModelGates(min_exact_match_gain=0.5, max_runaway_rate=1.0, quantized_exact_match_tolerance=1.0)
result, _ = run_graph(tmp, SCRATCH_CONFIG, instance=DagsterInstance.from_config(str(tmp / "dagster_home")),
                      model_gates=strict, model_registry=ModelRegistry(path=str(tmp / "registry.sqlite")),
                      asset_selection=[AssetKey(k) for k in ("eval_report", "model_cards", "registered_models")])
raise SystemExit(3 if result.success else 0)
"""
    rerun = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=400,
                           env={**os.environ, "GX_ANALYTICS_ENABLED": "false"})
    assert rerun.returncode == 0, rerun.stderr[-3000:]  # the run failed, at the gate
    merged_id = f"merged_model@{path_of(instance, 'merged_model').name}"
    models = {m["id"]: m for m in json.loads(cli("models", "list", "--json")[1])["models"]}
    assert models[merged_id]["gates_passed"] is False
    assert models[merged_id]["eval_report"] == path_of(instance, "eval_report").name  # the new evaluation
    code, out = cli("models", "promote", merged_id, "--json")
    refusal = json.loads(out)
    assert code == 1 and not refusal["moved"] and "adapter_beats_base" in refusal["error"]
    assert json.loads(cli("models", "list", "--json")[1])["aliases"].get("production") == production_before

