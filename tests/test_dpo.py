"""DPO on top of an SFT adapter: generated text-to-SQL pairs and real hh-rlhf pairs on the scratch model."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ft_assets.data.ingest import ingest_drops
from ft_assets.data.preference import build_preference_dataset
from ft_assets.data.text_to_sql import write_demo_drops
from ft_assets.training.dpo import DPO_METRICS, DPOParams, train_dpo, validate_dpo

HH_RLHF = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "hh_rlhf" / "harmless_base_test.jsonl.gz"
LN2 = math.log(2)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _sft_like_adapter(base_dir: Path, out: Path) -> Path:
    """A LoRA adapter that is not the identity (B != 0), standing in for a trained SFT adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def demo_pairs(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("pairs")
    drops = write_demo_drops(tmp / "drops", n_records=300)
    split = build_preference_dataset(ingest_drops(drops).records)
    return _write_jsonl(tmp / "train.jsonl", split.train), _write_jsonl(tmp / "eval.jsonl", split.eval)


def test_dpo_on_the_sft_adapter_learns_the_preference_and_saves_a_loadable_adapter(scratch_model_dir, demo_pairs,
                                                                                 tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    train, evaluation = demo_pairs
    sft_dir = _sft_like_adapter(scratch_model_dir, tmp_path / "sft")
    sft_weights = load_file(sft_dir / "adapter_model.safetensors")
    logged: list[dict] = []
    params = DPOParams(base_model_dir=str(scratch_model_dir), sft_adapter_dir=str(sft_dir), train_path=str(train),
                       eval_path=str(evaluation), output_dir=str(tmp_path / "dpo"), max_steps=8,
                       per_device_train_batch_size=4, learning_rate=5e-3)
    summary = train_dpo(params, on_log=logged.append)

    assert [r["step"] for r in logged] == list(range(1, 9))
    for record in logged:
        assert {"step", "loss", "learning_rate", "grad_norm", "tokens_per_s", "elapsed_s", *DPO_METRICS} <= set(record)
        assert record["tokens_per_s"] > 0 and math.isfinite(record["loss"])
    # The policy starts as the SFT adapter and so does the reference: zero margin, loss exactly ln 2.
    # (Had the reference been the bare base model, the first margin would not be zero.)
    assert logged[0]["loss"] == pytest.approx(LN2, abs=1e-4)
    assert logged[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert sum(r["rewards/margins"] for r in logged[-3:]) / 3 > 0.02
    assert sum(r["loss"] for r in logged[-3:]) / 3 < LN2
    # Held-out pairs: the chosen SQL now beats the corrupted one more often than not.
    assert summary["eval_pairs"] > 0 and summary["eval_loss"] < LN2 and summary["eval_reward_accuracy"] > 0.5
    assert summary["steps"] == 8 and summary["reference"] == "sft_adapter" and summary["pairs_dropped_too_long"] == 0

    out = tmp_path / "dpo"
    dpo_weights = load_file(out / "adapter_model.safetensors")
    # Only the trained adapter is saved (not trl's frozen "ref" copy), in the SFT adapter's exact shape.
    assert not (out / "ref").exists() and not (out / "trainer").exists()
    assert sorted(dpo_weights) == sorted(sft_weights)
    assert all(dpo_weights[k].shape == sft_weights[k].shape for k in sft_weights)
    assert max((dpo_weights[k] - sft_weights[k]).abs().max().item() for k in sft_weights) > 1e-4
    # The reference copy stayed frozen: exactly the SFT adapter's parameters were trained.
    assert summary["trainable_parameters"] == sum(w.numel() for w in sft_weights.values())

    history = json.loads((out / "train_history.json").read_text())
    assert [r["step"] for r in history] == list(range(1, 9))
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 8

    # Loads on the plain base like any LoRA adapter, and changes its outputs relative to the SFT adapter.
    ids = torch.tensor([[1, 5, 9, 12, 30]])
    with torch.no_grad():
        tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(scratch_model_dir), out)(ids).logits
        sft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(scratch_model_dir), sft_dir)(ids).logits
    assert not torch.allclose(tuned, sft, atol=1e-4)


def test_dpo_on_real_hh_rlhf_pairs(scratch_model_dir, tmp_path):
    """32 real multi-turn pairs, two steps, a fresh LoRA (the reference is the base model)."""
    if not HH_RLHF.is_file():
        pytest.skip(f"real preference pairs not found at {HH_RLHF}")
    with gzip.open(HH_RLHF, "rt", encoding="utf-8") as handle:
        lines = [next(handle) for _ in range(40)]
    drop = tmp_path / "hh.jsonl"
    drop.write_text("".join(lines), encoding="utf-8")
    split = build_preference_dataset(ingest_drops([drop]).records, eval_fraction=0.0)
    train = _write_jsonl(tmp_path / "train.jsonl", split.train[:32])
    assert sum(1 for e in split.train[:32] if len(e["prompt"]) > 1) > 5  # multi-turn histories reach the trainer
    logged: list[dict] = []
    summary = train_dpo(DPOParams(base_model_dir=str(scratch_model_dir), train_path=str(train),
                                  output_dir=str(tmp_path / "dpo"), max_steps=2, per_device_train_batch_size=4,
                                  max_length=1024), on_log=logged.append)
    assert summary["steps"] == 2 and summary["pairs"] == 32 and summary["reference"] == "base_model"
    assert logged[0]["loss"] == pytest.approx(LN2, abs=1e-4)  # fresh LoRA (B = 0): policy == base == reference
    assert all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in logged)
    assert summary["train_tokens"] > 32 * 2 * 20  # whole dialogues, not just the last turn, were tokenized
    weights = load_file(tmp_path / "dpo" / "adapter_model.safetensors")
    assert any(torch.count_nonzero(w) > 0 for name, w in weights.items() if "lora_B" in name)


def test_dpo_after_a_full_fine_tune_trains_a_lora_whose_reference_is_that_model(scratch_model_dir, demo_pairs,
                                                                                 tmp_path):
    train, _ = demo_pairs
    logged: list[dict] = []
    # The scratch model directory stands in for a fully fine-tuned SFT model (a whole model, no adapter).
    summary = train_dpo(DPOParams(base_model_dir=str(scratch_model_dir), sft_adapter_dir=str(scratch_model_dir),
                                  train_path=str(train), output_dir=str(tmp_path / "dpo"), max_steps=1),
                        on_log=logged.append)
    assert summary["reference"] == "sft_model" and logged[0]["loss"] == pytest.approx(LN2, abs=1e-4)
    assert (tmp_path / "dpo" / "adapter_config.json").is_file()


@pytest.mark.parametrize(("change", "message"), [
    ({"train_path": "empty"}, "0 preference pairs are too few for one step of 4"),
    ({"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4}, "too few for one step of 8"),
    ({"loss_type": "dpo"}, "unknown DPO loss_type 'dpo'"),
    ({"beta": 0.0}, "beta must be > 0"),
    ({"precision": "int8"}, "precision must be auto"),
    ({"sft_adapter_dir": "nowhere"}, "no LoRA adapter"),
    ({"base_model_dir": "nowhere"}, "no model"),
    ({"train_path": "broken"}, "missing rejected"),
])
def test_bad_config_fails_before_any_compute_saying_what_to_change(scratch_model_dir, tmp_path, change, message):
    pair = {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}]}
    files = {"ok": _write_jsonl(tmp_path / "ok.jsonl", [pair] * 6), "empty": _write_jsonl(tmp_path / "e.jsonl", []),
             "broken": _write_jsonl(tmp_path / "b.jsonl", [{"prompt": pair["prompt"], "chosen": []}])}
    params = {"base_model_dir": str(scratch_model_dir), "train_path": str(files["ok"]),
              "output_dir": str(tmp_path / "out"), **change}
    for key in ("train_path", "sft_adapter_dir", "base_model_dir"):
        if params.get(key) in files:
            params[key] = str(files[params[key]])
        elif params.get(key) == "nowhere":
            params[key] = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=message):
        validate_dpo(DPOParams(**params))
    with pytest.raises(ValueError, match=message):
        train_dpo(DPOParams(**params))
    assert not (tmp_path / "out").exists()


def test_preference_dataset_and_dpo_adapter_materialize_in_the_graph(tmp_path):
    """Demo drops -> ... -> preference_dataset (+ its gate) and sft_adapter -> dpo_adapter, through the worker."""
    from dagster import AssetKey
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tests.test_pipeline import SCRATCH_CONFIG, materialization, path_of, run_graph

    ops = SCRATCH_CONFIG["ops"]
    config = {"ops": {**ops, "sft_adapter": {"config": {**ops["sft_adapter"]["config"], "max_steps": 10}},
                      "dpo_adapter": {"config": {"max_steps": 6, "learning_rate": 5e-3}}}}
    names = ["raw_records", "clean_records", "deduped_records", "sft_dataset", "base_model", "sft_adapter",
             "preference_dataset", "dpo_adapter"]
    result, instance = run_graph(tmp_path, config, n_records=300, asset_selection=[AssetKey(n) for n in names])
    assert result.success
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()}["preference_dataset_gate"]

    data = materialization(instance, "preference_dataset").metadata
    data_dir = path_of(instance, "preference_dataset")
    counts = {name: len((data_dir / f"{name}.jsonl").read_text().splitlines())
              for name in ("train", "eval", "quarantine")}
    assert counts == {"train": data["train_rows"].value, "eval": data["eval_rows"].value,
                      "quarantine": data["quarantined"].value}
    assert data["pairs_in"].value == sum(counts.values()) and counts["train"] >= 40 and counts["eval"] >= 2
    # Every pair the records hold is accounted for: kept in a split, or quarantined with a reason.
    records = materialization(instance, "sft_dataset").metadata["preference_rows_set_aside"].value
    assert records == data["pairs_in"].value

    meta = materialization(instance, "dpo_adapter").metadata
    assert meta["steps"].value == 6 and meta["reference"].value == "sft_adapter"
    assert meta["first_loss"].value == pytest.approx(LN2, abs=1e-4)
    assert meta["input_versions"].value == {"base_model": path_of(instance, "base_model").name,
                                            "sft_adapter": path_of(instance, "sft_adapter").name,
                                            "preference_dataset": data_dir.name}
    steps = meta["loss_history"].value
    assert [s["step"] for s in steps] == list(range(1, 7)) and all("rewards/margins" in s for s in steps)
    assert "| reward accuracy |" in meta["reward_curve"].value
    adapter_dir = path_of(instance, "dpo_adapter")
    card = json.loads((adapter_dir / "card.json").read_text())
    assert card["method"] == "dpo" and card["training"]["steps"] == 6
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path_of(instance, "base_model")), adapter_dir)

    # Same inputs, config and code: the second materialization reuses the adapter instead of retraining.
    again, _ = run_graph(tmp_path, config, instance=instance, asset_selection=[AssetKey("dpo_adapter")])
    assert again.success
    reused = materialization(instance, "dpo_adapter").metadata
    assert reused["reused"].value is True and reused["version"].value == adapter_dir.name

    # Switched off (a recipe's dpo.enabled: false): the pairs are there, but the asset records that it did not train.
    off = {"ops": {**config["ops"], "dpo_adapter": {"config": {**config["ops"]["dpo_adapter"]["config"],
                                                               "enabled": False}}}}
    skipped, _ = run_graph(tmp_path, off, instance=instance, asset_selection=[AssetKey("dpo_adapter")])
    assert skipped.success
    meta = materialization(instance, "dpo_adapter").metadata
    assert meta["trained"].value is False and "dpo.enabled: false" in meta["reason"].value
    assert not list(path_of(instance, "dpo_adapter").glob("adapter_model.*"))


def test_without_preference_pairs_dpo_records_that_it_did_not_train_and_the_run_succeeds(tmp_path):
    from dagster import AssetKey

    from tests.test_pipeline import SCRATCH_CONFIG, materialization, path_of, run_graph

    write_demo_drops(tmp_path / "drops", n_records=300, n_preference=0)
    names = ["raw_records", "clean_records", "deduped_records", "sft_dataset", "base_model", "sft_adapter",
             "preference_dataset", "dpo_adapter"]
    ops = SCRATCH_CONFIG["ops"]
    config = {"ops": {"base_model": ops["base_model"],
                      "sft_adapter": {"config": {**ops["sft_adapter"]["config"], "max_steps": 2}}}}
    result, instance = run_graph(tmp_path, config, asset_selection=[AssetKey(n) for n in names])
    assert result.success
    assert materialization(instance, "preference_dataset").metadata["pairs_in"].value == 0
    evaluation = {e.check_name: e for e in result.get_asset_check_evaluations()}["preference_dataset_gate"]
    assert evaluation.passed and "no preference pairs" in evaluation.description
    dpo = materialization(instance, "dpo_adapter").metadata
    assert dpo["trained"].value is False and dpo["reason"].value == "no preference pairs in the data"
    assert not list(path_of(instance, "dpo_adapter").glob("adapter_model.*"))


def test_too_few_pairs_fail_the_gate_and_block_dpo(tmp_path):
    from dagster import AssetKey

    from tests.test_pipeline import materialization, run_graph

    write_demo_drops(tmp_path / "drops", n_records=300, n_preference=10)
    names = ["raw_records", "clean_records", "deduped_records", "preference_dataset", "dpo_adapter"]
    result, instance = run_graph(tmp_path, {}, asset_selection=[AssetKey(n) for n in names])
    assert not result.success
    evaluation = {e.check_name: e for e in result.get_asset_check_evaluations()}["preference_dataset_gate"]
    assert not evaluation.passed and "expect_table_row_count_to_be_between" in evaluation.description
    assert materialization(instance, "preference_dataset") is not None
    assert materialization(instance, "dpo_adapter") is None


def test_a_not_trained_stage_gets_its_own_version_per_input(tmp_path):
    """Two retrains with no preference pairs: each 'not trained' artifact names its own inputs (the reason alone
    hashed to one version, so every later run reused the first run's card and broke its lineage)."""
    from types import SimpleNamespace

    from dagster import AssetKey

    from ft_assets.lineage.artifacts import Artifact
    from ft_assets.training.wiring import not_trained_output
    from resources import ArtifactStore

    store = ArtifactStore(root=str(tmp_path / "artifacts"))
    published = []
    for run, version in (("run-1", "aaaa"), ("run-2", "bbbb")):
        context = SimpleNamespace(asset_key=AssetKey("dpo_adapter"), run=SimpleNamespace(run_id=run),
                                  log=SimpleNamespace(info=lambda _: None))
        inputs = {"preference_dataset": Artifact(path=tmp_path / version, version=version)}
        published.append(not_trained_output(context, store, "dpo_adapter", inputs, {}, "no preference pairs").value)
    first, second = published
    assert first.version != second.version
    assert second.card()["run_id"] == "run-2"
    assert second.card()["inputs"]["preference_dataset"]["version"] == "bbbb"
