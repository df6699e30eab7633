"""The shared base-model eval cache (policy and eval_report both use it): a real Dagster materialization with a
tiny scratch model; the second one with the same base, rows and settings generates nothing, a change misses."""

# No `from __future__ import annotations`: Dagster reads the nested asset's config type from its annotation.
import json
from pathlib import Path

from dagster import AssetExecutionContext, Config, DagsterInstance, asset, materialize

from ft_assets.data.text_to_sql import SCHEMA_SUMMARY, generate_clean_pairs
from ft_assets.evaluation.base_cache import BASE_CACHE, base_eval
from ft_assets.evaluation.evaluate import GenerationSettings, load_variant
from ft_assets.lineage.artifacts import Artifact
from resources import ArtifactStore

METRICS = {"exact_match": {"scorer": "exact_match"}}


def _rows(n: int, offset: int = 0) -> list[dict]:
    pairs = generate_clean_pairs(n + offset, seed=3)[offset:]
    return [{"record_id": f"r{i}", "prompt": [{"role": "system", "content": SCHEMA_SUMMARY},
                                              {"role": "user", "content": q}],
             "completion": [{"role": "assistant", "content": s}]} for i, (q, s) in enumerate(pairs)]


class Probe(Config):
    rows: int = 4
    offset: int = 0
    max_new_tokens: int = 8


def _run(instance: DagsterInstance, store: ArtifactStore, base: Artifact, probe: Probe) -> dict:
    loads: list[str] = []

    @asset
    def probe_eval(context: AssetExecutionContext, config: Probe, artifact_store: ArtifactStore):
        def load():
            loads.append("base")
            return load_variant("base", base.path)

        result, cache = base_eval(context, artifact_store, base, {}, _rows(config.rows, config.offset), METRICS,
                                  "exact_match", GenerationSettings(config.max_new_tokens, 4), {"name": "probe"}, load)
        return {"cache": cache, "generations": result["generations"], "metrics": result["metrics"]}

    result = materialize([probe_eval], instance=instance, resources={"artifact_store": store},
                         run_config={"ops": {"probe_eval": {"config": probe.model_dump()}}})
    assert result.success
    return {**result.output_for_node("probe_eval"), "loads": loads}


def test_base_eval_is_cached_by_base_rows_and_settings(tmp_path: Path, scratch_model_dir: Path):
    instance = DagsterInstance.ephemeral()
    store = ArtifactStore(root=str(tmp_path / "artifacts"))
    base = Artifact(scratch_model_dir, "scratch-v1")

    first = _run(instance, store, base, Probe())
    assert first["loads"] == ["base"] and first["cache"]["hit"] is False
    again = _run(instance, store, base, Probe())
    assert again["loads"] == [], "a hit must not load or run the model"
    assert again["cache"] == {**first["cache"], "hit": True}
    assert again["generations"] == first["generations"]
    assert again["metrics"]["perplexity"] == first["metrics"]["perplexity"]
    # The cache is an artifact whose card names the base model it came from (lineage).
    card = json.loads((tmp_path / "artifacts" / BASE_CACHE / first["cache"]["artifact"] / "card.json").read_text())
    assert card["inputs"]["base_model"]["version"] == "scratch-v1"
    assert card["config"]["cache_key"] == first["cache"]["key"]

    for changed in (Probe(offset=1), Probe(max_new_tokens=9)):  # other rows, other length: a miss each
        miss = _run(instance, store, base, changed)
        assert miss["loads"] == ["base"] and miss["cache"]["hit"] is False
        assert miss["cache"]["key"] != first["cache"]["key"]
    other_base = _run(instance, store, Artifact(scratch_model_dir, "scratch-v2"), Probe())
    assert other_base["cache"]["hit"] is False


def test_forgetting_base_side_comes_from_the_shared_cache(tmp_path: Path, scratch_model_dir: Path):
    """eval_report's forgetting set: the base side is cached like the task's; the tuned side is always run."""
    from conftest import SHARED_DATASETS

    from ft_assets.evaluation.assets import _forgetting
    from ft_assets.tasks.common import load_task

    gsm8k = SHARED_DATASETS / "gsm8k" / "test.jsonl"
    if not gsm8k.is_file():
        import pytest

        pytest.skip(f"{gsm8k} is missing")
    task = load_task("text_to_sql", forgetting={"path": str(gsm8k), "scorer": "numeric_match", "max_examples": 3,
                                                "max_new_tokens": 6, "tolerance": 0.05})
    store = ArtifactStore(root=str(tmp_path / "artifacts"))
    base = Artifact(scratch_model_dir, "scratch-v1")
    outs = []

    @asset
    def forgetting_probe(context: AssetExecutionContext, artifact_store: ArtifactStore):
        return _forgetting(context, task, base, ("merged", scratch_model_dir), GenerationSettings(8, 4),
                           artifact_store, True)

    instance = DagsterInstance.ephemeral()
    for _ in range(2):
        result = materialize([forgetting_probe], instance=instance, resources={"artifact_store": store})
        assert result.success
        outs.append(result.output_for_node("forgetting_probe"))
    first, second = outs
    assert first["n"] == 3 and first["tuned_model"] == "merged"
    assert first["base_cache"]["hit"] is False and second["base_cache"] == {**first["base_cache"], "hit": True}
    assert second["base"] == first["base"] and second["tuned"] == first["tuned"]


def test_forgetting_by_perplexity_generates_nothing_and_sees_drift(tmp_path: Path, scratch_model_dir: Path):
    """scorer perplexity: base and tuned perplexity of the references, teacher-forced; a model whose weights moved
    shows a rise, the base model against itself none; nothing generated, nothing cached."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ft_assets.evaluation.assets import _forgetting
    from ft_assets.evaluation.gates import forgetting_within_tolerance
    from ft_assets.tasks.common import load_task

    rows_file = tmp_path / "general.jsonl"
    rows_file.write_text("".join(json.dumps({"question": q, "answer": s}) + "\n"
                                 for q, s in generate_clean_pairs(6, seed=5)))
    drifted = tmp_path / "drifted"
    model = AutoModelForCausalLM.from_pretrained(scratch_model_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(drifted)
    AutoTokenizer.from_pretrained(scratch_model_dir).save_pretrained(drifted)
    task = load_task("text_to_sql", forgetting={"path": str(rows_file), "scorer": "perplexity", "max_examples": 6,
                                                "tolerance": 0.05})
    store = ArtifactStore(root=str(tmp_path / "artifacts"))
    outs = {}

    def probe_for(name: str, tuned_dir: Path):
        @asset(name=f"forgetting_{name}")
        def probe(context: AssetExecutionContext, artifact_store: ArtifactStore):
            return _forgetting(context, task, Artifact(scratch_model_dir, "scratch-v1"), ("merged", tuned_dir),
                               GenerationSettings(8, 4), artifact_store, True)
        return probe

    for name, tuned_dir in (("same", scratch_model_dir), ("drifted", drifted)):
        probe = probe_for(name, tuned_dir)

        result = materialize([probe], instance=DagsterInstance.ephemeral(), resources={"artifact_store": store})
        assert result.success
        outs[name] = result.output_for_node(f"forgetting_{name}")
    same, moved = outs["same"], outs["drifted"]
    assert same["scorer"] == "perplexity" and same["n"] == 6 and "base_cache" not in same
    assert same["base"] == same["tuned"] > 1.0 and same["base"] == moved["base"]
    assert moved["tuned"] != moved["base"]
    gate = forgetting_within_tolerance(moved, moved["tolerance"])
    assert gate.value == round(moved["tuned"] / moved["base"] - 1, 4)
    assert gate.passed == (gate.value <= 0.05)
    assert forgetting_within_tolerance(same, 0.0).passed
    assert not (tmp_path / "artifacts" / BASE_CACHE).exists()
