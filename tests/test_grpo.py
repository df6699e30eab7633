"""GRPO on top of an SFT adapter with the task's scorer as the reward, on the scratch model: the rewards trl logs
are the scorer's values on the sampled completions, the reward moves, bad settings are refused before compute."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ft_assets.data.text_to_sql import generate_clean_pairs
from ft_assets.evaluation.scorers import score
from ft_assets.training.grpo import GRPO_METRICS, GRPOParams, settings_problems, train_grpo, validate_grpo

LOWERCASE = "tests.test_grpo:lowercase_share"


def lowercase_share(generations: list[str], references: list[str], rows: list[dict] | None = None) -> list[float]:
    """A test reward (a user scorer by import path) that every token moves: the share of lowercase letters."""
    return [sum(c.islower() for c in g) / max(len(g), 1) for g in generations]


@pytest.fixture(scope="module")
def confident_model_dir(scratch_model_dir, tmp_path_factory) -> Path:
    """The scratch model with its (tied) embeddings scaled up. A freshly initialised model's logits span about
    +-1 over 400 tokens, so no adapter can make it prefer anything; scaled, it samples as peaked as a trained
    model, which is what RL starts from."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("confident")
    model = AutoModelForCausalLM.from_pretrained(scratch_model_dir)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(8.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(scratch_model_dir).save_pretrained(out)
    return out


def _rows(n: int) -> list[dict]:
    """sft_dataset rows (conversational prompt + completion) over the demo's questions."""
    return [{"record_id": f"r{i}", "db_id": "company", "prompt": [{"role": "user", "content": q}],
             "completion": [{"role": "assistant", "content": sql}]}
            for i, (q, sql) in enumerate(generate_clean_pairs(n, seed=3))]


def _write(path: Path, rows: list[dict]) -> Path:
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


def test_grpo_rewards_are_the_scorers_values_and_move(confident_model_dir, tmp_path):
    sft_dir = _sft_like_adapter(confident_model_dir, tmp_path / "sft")
    sft_weights = load_file(sft_dir / "adapter_model.safetensors")
    logged: list[dict] = []
    steps = 8
    params = GRPOParams(base_model_dir=str(confident_model_dir), sft_adapter_dir=str(sft_dir),
                        train_path=str(_write(tmp_path / "train.jsonl", _rows(40))), output_dir=str(tmp_path / "out"),
                        max_steps=steps, per_device_train_batch_size=8, num_generations=4, learning_rate=0.02,
                        max_completion_length=16, reward_metric="lowercase", reward_spec={"scorer": LOWERCASE})
    summary = train_grpo(params, on_log=logged.append)

    assert [r["step"] for r in logged] == list(range(1, steps + 1))
    assert all({"loss", "reward", "reward_std", "kl"} <= set(r) for r in logged)
    assert set(GRPO_METRICS) & set(logged[0]) >= {"reward", "kl", "entropy"}
    # The policy starts as the SFT adapter and so does the reference: no KL before the first update.
    # (Had the reference been the bare base model, the SFT adapter's own change would show as KL.)
    assert logged[0]["kl"] == pytest.approx(0.0, abs=1e-6) and max(r["kl"] for r in logged) > 0

    # Every reward is the scorer's own value on the completion that was sampled, and trl's logged mean
    # reward per step is the mean of exactly those values.
    out = tmp_path / "out"
    rollouts = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert len(rollouts) == steps * 8 == summary["rollouts"]
    rescored = score({"scorer": LOWERCASE}, [r["completion"] for r in rollouts], [r["reference"] for r in rollouts],
                     rollouts).per_example
    assert [r["reward"] for r in rollouts] == pytest.approx(rescored, abs=1e-9)
    for record in logged:
        mine = [r["reward"] for r in rollouts if r["step"] == record["step"]]
        assert len(mine) == 8 and record["reward"] == pytest.approx(sum(mine) / 8, abs=1e-5)

    # A few steps move the reward.
    early, late = sum(r["reward"] for r in logged[:2]) / 2, sum(r["reward"] for r in logged[-2:]) / 2
    assert late > early + 0.2, [round(r["reward"], 3) for r in logged]
    assert summary["reward_gain"] > 0 and summary["reference"] == "sft_adapter" and summary["steps"] == steps

    # The adapter is the SFT adapter's shape (a candidate like sft/dpo), trained, without trl's "ref" copy.
    weights = load_file(out / "adapter_model.safetensors")
    assert sorted(weights) == sorted(sft_weights) and all(weights[k].shape == sft_weights[k].shape for k in weights)
    assert max((weights[k] - sft_weights[k]).abs().max().item() for k in weights) > 1e-4
    assert summary["trainable_parameters"] == sum(w.numel() for w in sft_weights.values())
    assert not (out / "ref").exists() and not (out / "trainer").exists()
    history = json.loads((out / "train_history.json").read_text())
    assert [h["reward"] for h in history] == [r["reward"] for r in logged]
    assert json.loads((out / "train_summary.json").read_text())["reward_metric"] == "lowercase"


def test_the_reward_is_the_tasks_sql_execution_on_its_prepared_database(scratch_model_dir, tmp_path):
    """text_to_sql's execution_accuracy: Task.prepare builds the database, the gold SQL earns the full reward, and
    the rewards of the sampled completions are the sql_execution scorer's."""
    from ft_assets.tasks import load_task

    task = load_task("text_to_sql")
    spec = task.prepare(tmp_path / "task")["execution_accuracy"]
    rows = _rows(12)
    params = GRPOParams(base_model_dir=str(scratch_model_dir), train_path=str(_write(tmp_path / "t.jsonl", rows)),
                        output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=4,
                        num_generations=2, max_completion_length=12, reward_metric="execution_accuracy",
                        reward_spec=spec)
    assert validate_grpo(params)["reward_of_references"] == 1.0
    summary = train_grpo(params)
    assert summary["reference"] == "base_model" and summary["reward_scorer"] == "sql_execution"
    rollouts = [json.loads(line) for line in (tmp_path / "out" / "rollouts.jsonl").read_text().splitlines()]
    # A gold query planted among the completions scores 1 through the same scorer and database.
    completions = [r["completion"] for r in rollouts] + [rows[0]["completion"][0]["content"]]
    references = [r["reference"] for r in rollouts] + [rows[0]["completion"][0]["content"]]
    rescored = score(spec, completions, references, [*rollouts, {"db_id": "company"}]).per_example
    assert [r["reward"] for r in rollouts] == rescored[:-1] and rescored[-1] == 1.0


@pytest.mark.parametrize(("change", "message"), [
    ({"num_generations": 1}, "num_generations must be >= 2"),
    ({"per_device_train_batch_size": 6, "num_generations": 4}, "6 completions per step .* not a multiple of"),
    ({"beta": -0.1}, "beta must be >= 0"),
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"loss_type": "ppo"}, "loss_type 'ppo'"),
    ({"scale_rewards": "std"}, "scale_rewards 'std'"),
    ({"learning_rate": 0.0}, "learning_rate must be > 0"),
    ({"max_completion_length": 0}, "max_completion_length must be >= 1"),
    ({"epsilon": 1.5}, "epsilon must be in"),
    ({"reward_spec": {}}, "no reward"),
    ({"reward_spec": {"scorer": "numeric_match"}}, "scorer cannot score this data.*holds no number"),
    ({"reward_spec": {"scorer": "sql_execution"}}, "needs db_folder"),
    ({"max_prompts": 1}, "1 prompts are too few for one step of 2"),
    ({"sft_adapter_dir": "nowhere"}, "no LoRA adapter"),
    ({"base_model_dir": "nowhere"}, "no model"),
])
def test_bad_config_fails_before_any_compute_saying_what_to_change(scratch_model_dir, tmp_path, change, message):
    params = {"base_model_dir": str(scratch_model_dir), "train_path": str(_write(tmp_path / "t.jsonl", _rows(8))),
              "output_dir": str(tmp_path / "out"), "reward_spec": {"scorer": "exact_match"}, **change}
    for key in ("sft_adapter_dir", "base_model_dir"):
        if params.get(key) == "nowhere":
            params[key] = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=message):
        train_grpo(GRPOParams(**params))
    assert not (tmp_path / "out").exists()


def test_reward_metric_must_be_one_of_the_tasks_metrics():
    assert settings_problems({"reward_metric": "execution_accuracy"}, {"numeric_match": {}, "exact_match": {}}) == [
        "grpo.reward_metric 'execution_accuracy' is none of the task's metrics ['exact_match', 'numeric_match']: "
        "name one of them (or leave it empty for the primary metric)"]
    assert settings_problems({}, {"numeric_match": {}}) == []
    # Wrong types are the config schema's to report, not a crash here.
    assert settings_problems({"num_generations": "four", "beta": True}) == []


def test_a_recipes_grpo_section_is_refused_before_compute():
    from ft_assets.recipe_checks import recipe_problems
    from ft_assets.recipes import load_recipe, run_config

    recipe = load_recipe("gsm8k-math", ["grpo.num_generations=3", "grpo.reward_metric=execution_accuracy"])
    problems = recipe_problems(recipe, "", "", sample_data=False)
    assert any("6 completions per step" not in p and "not a multiple of num_generations=3" in p for p in problems)
    assert any("reward_metric 'execution_accuracy' is none of the task's metrics" in p for p in problems)
    assert run_config(recipe, "", {"grpo_adapter"})["ops"]["grpo_adapter"]["config"]["num_generations"] == 3
    no_section = load_recipe("text-to-sql-demo", ["policy=grpo"])
    assert any("policy grpo but the recipe has no grpo section" in p
               for p in recipe_problems(no_section, "", "", sample_data=False))


def test_grpo_adapter_materializes_in_the_graph_with_the_tasks_reward(tmp_path):
    """Demo drops -> sft_dataset, base_model -> sft_adapter -> grpo_adapter through the worker process, the reward
    being text_to_sql's execution_accuracy on the database the task prepares inside the asset."""
    from dagster import AssetKey, DagsterInstance

    from ft_assets.automation.ingest import ingest_present_drops
    from ft_assets.data.text_to_sql import write_demo_drops
    from ft_assets.definitions import build_defs
    from resources.factory import build_resources
    from tests.test_pipeline import SCRATCH_CONFIG, materialization, path_of

    write_demo_drops(tmp_path / "drops", n_records=120)
    defs = build_defs(build_resources(tmp_path))
    instance = DagsterInstance.ephemeral()
    assert all(r.success for r in ingest_present_drops(defs, instance))
    grpo = {"enabled": True, "max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 2,
            "max_completion_length": 12, "reward_metric": "execution_accuracy", "max_prompts": 16}
    ops = SCRATCH_CONFIG["ops"]
    config = {"ops": {"base_model": ops["base_model"], "grpo_adapter": {"config": grpo},
                      "sft_adapter": {"config": {**ops["sft_adapter"]["config"], "max_steps": 2}}}}
    names = ["clean_records", "deduped_records", "sft_dataset", "base_model", "sft_adapter", "grpo_adapter"]
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, run_config=config, raise_on_error=False, asset_selection=[AssetKey(n) for n in names])
    assert result.success

    meta = materialization(instance, "grpo_adapter").metadata
    assert meta["steps"].value == 2 and meta["reference"].value == "sft_adapter"
    assert meta["reward_metric"].value == "execution_accuracy" and meta["reward_scorer"].value == "sql_execution"
    assert meta["reward_of_references"].value == 1.0  # the gold SQL runs on the prepared database and matches
    assert meta["input_versions"].value == {n: path_of(instance, n).name
                                            for n in ("base_model", "sft_adapter", "sft_dataset")}
    steps = meta["loss_history"].value
    assert [s["step"] for s in steps] == [1, 2] and all({"reward", "kl", "loss"} <= set(s) for s in steps)
    assert "| reward |" in meta["reward_table"].value and "data:image/png;base64," in meta["reward_curve"].value
    out = path_of(instance, "grpo_adapter")
    card = json.loads((out / "card.json").read_text())
    assert card["method"] == "grpo" and card["training"]["reward"]["metric"] == "execution_accuracy"
    assert card["task"]["name"] == "text_to_sql"
    sft = load_file(path_of(instance, "sft_adapter") / "adapter_model.safetensors")
    tuned = load_file(out / "adapter_model.safetensors")
    assert sorted(tuned) == sorted(sft)  # a policy candidate in the SFT adapter's shape
    assert {"train_summary.json", "train_history.json", "rollouts.jsonl", "reward_curve.png"} <= {
        p.name for p in out.iterdir()}
