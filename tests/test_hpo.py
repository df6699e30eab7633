"""Hyperparameter search: a real Optuna study (SQLite storage) whose trials are real LoRA trainings of a scratch
model through the compute resource. A rerun continues the study, a bad trial is pruned by the median pruner from
its streamed eval losses, a killed trial is recorded as failed, and the best trial's settings reach sft_adapter's
card. Bad settings are refused before any trial trains."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import optuna
import psutil
import pytest
from dagster import AssetKey, AssetMaterialization, AssetSpec, DagsterInstance, materialize

from ft_assets.data.split import to_chat_example
from ft_assets.data.text_to_sql import generate_clean_pairs
from ft_assets.jobs import recipe_selection
from ft_assets.recipes import load_recipe, run_config
from ft_assets.training.assets import sft_adapter
from ft_assets.training.hpo import HpoConfigError, check_space, hpo_problems, plan_study
from ft_assets.training.hpo_assets import hpo_study
from resources import ArtifactIOManager, ArtifactStore, TrainingCompute

STUDY = "test-study"
GOOD, BAD = {"learning_rate": 2e-2, "lora_r": 8}, {"learning_rate": 1e-7, "lora_r": 4}


def _write_chat(path: Path, n: int, seed: int) -> None:
    rows = [to_chat_example({"record_id": f"r{seed}-{i}", "db_id": "company", "prompt": q, "completion": s})
            for i, (q, s) in enumerate(generate_clean_pairs(n, seed=seed))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture()
def setup(scratch_model_dir, tmp_path):
    instance = DagsterInstance.ephemeral()
    dataset = tmp_path / "sft_dataset"
    dataset.mkdir()
    _write_chat(dataset / "train.jsonl", 32, seed=3)
    _write_chat(dataset / "eval.jsonl", 8, seed=11)
    for name, path in (("base_model", scratch_model_dir), ("sft_dataset", dataset)):
        instance.report_runless_asset_event(AssetMaterialization(
            asset_key=name, metadata={"path": str(path), "version": f"{name}-v1"}))
    return instance, tmp_path


def _run(instance, tmp_path, asset, config: dict):
    specs = [AssetSpec("base_model"), AssetSpec("sft_dataset")] + ([AssetSpec("hpo_study")] if asset is sft_adapter
                                                                   else [])
    return materialize(
        [asset, *specs], instance=instance, raise_on_error=False,
        resources={"artifact_store": ArtifactStore(root=str(tmp_path / "artifacts")), "io_manager": ArtifactIOManager(),
                   "training_compute": TrainingCompute(num_threads=1, mlflow_tracking_uri="")},
        run_config={"ops": {asset.key.to_user_string(): {"config": config}}})


def _study_config(tmp_path, **overrides) -> dict:
    (tmp_path / "optuna").mkdir(exist_ok=True)
    return {"n_trials": 2, "steps_per_trial": 6, "eval_steps": 2, "study_name": STUDY,
            "storage": f"sqlite:///{tmp_path / 'optuna' / 'studies.db'}", "pruner_startup_trials": 1,
            "search_space": {"learning_rate": {"low": 1e-7, "high": 5e-2, "log": True}, "lora_r": {"choices": [4, 8]}},
            "training": {"per_device_train_batch_size": 8}, **overrides}


def _kill_first_worker(stop: threading.Event, killed: dict) -> None:
    """SIGKILL the first training worker this test process starts (a trainer dying mid-trial)."""
    me = psutil.Process()
    while not stop.is_set():
        for child in me.children(recursive=True):
            try:
                if "ft_assets.training.worker" in " ".join(child.cmdline()):
                    child.send_signal(signal.SIGKILL)
                    killed["pid"] = child.pid
                    return
            except psutil.Error:
                continue
        time.sleep(0.05)


def test_study_prunes_resumes_records_crashes_and_feeds_sft_adapter(setup):
    instance, tmp_path = setup
    config = _study_config(tmp_path)
    # A good and a hopeless learning rate first (Optuna's enqueue_trial), so the median pruner has a case to prune.
    seeded = optuna.create_study(study_name=STUDY, storage=config["storage"], direction="minimize")
    seeded.enqueue_trial(GOOD)
    seeded.enqueue_trial(BAD)

    started = time.perf_counter()
    first = _run(instance, tmp_path, hpo_study, config)
    first_s = time.perf_counter() - started
    assert first.success
    trials = optuna.load_study(study_name=STUDY, storage=config["storage"]).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    assert trials[0].params == GOOD and trials[1].params == BAD
    # Pruned from its streamed eval losses: its first evaluation was worse than the complete trial's.
    assert trials[1].user_attrs["pruned_at_step"] == 2 and trials[1].user_attrs["steps"] == 2
    assert trials[1].intermediate_values[2] > trials[0].intermediate_values[2]
    assert trials[0].value == min(trials[0].intermediate_values.values()) and trials[0].user_attrs["steps"] == 6
    meta = instance.get_latest_materialization_event(AssetKey("hpo_study")).asset_materialization.metadata
    assert meta["best_trial"].value == 0 and meta["best_params"].value == GOOD
    assert meta["trials_pruned"].value == 1 and "| 1 | PRUNED |" in meta["trials"].value
    assert meta["objective_plot"].value.startswith("![objective per trial](data:image/png;base64,")
    assert (Path(meta["path"].value) / "objective.png").stat().st_size > 1000

    # Rerun: the same study goes on; its trial's worker is killed, and the trial is recorded as failed.
    stop, killed = threading.Event(), {}
    killer = threading.Thread(target=_kill_first_worker, args=(stop, killed))
    killer.start()
    started = time.perf_counter()
    second = _run(instance, tmp_path, hpo_study, {**config, "n_trials": 1})
    second_s = time.perf_counter() - started
    stop.set()
    killer.join()
    assert killed and second.success  # a failed trial fails the trial, not the study
    trials = optuna.load_study(study_name=STUDY, storage=config["storage"]).trials
    assert [(t.number, t.state.name) for t in trials] == [(0, "COMPLETE"), (1, "PRUNED"), (2, "FAIL")]
    assert "DagsterPipesExecutionError" in trials[2].user_attrs["error"]
    meta = instance.get_latest_materialization_event(AssetKey("hpo_study")).asset_materialization.metadata
    assert meta["study_name"].value == STUDY and meta["trials_total"].value == 3 and meta["trials_fail"].value == 1
    assert "| 2 | FAIL |" in meta["trials"].value and meta["best_trial"].value == 0

    # The recipe takes its hyperparameters from the study's best trial; the card names the study and the trial.
    trained = _run(instance, tmp_path, sft_adapter, {"max_steps": 1, "hyperparameters_from_study": True})
    assert trained.success
    mat = instance.get_latest_materialization_event(AssetKey("sft_adapter")).asset_materialization
    card = json.loads((Path(mat.metadata["path"].value) / "card.json").read_text())
    assert card["config"]["learning_rate"] == GOOD["learning_rate"] and card["config"]["lora_r"] == GOOD["lora_r"]
    chosen = card["training"]["hyperparameters_from"]
    assert chosen["study_name"] == STUDY and chosen["trial_number"] == 0 and chosen["params"] == GOOD
    assert chosen["hpo_study_version"] == meta["version"].value
    assert mat.metadata["hyperparameters_from"].value["trial_number"] == 0
    print(f"\nstudy: 2 trials (1 complete, 1 pruned at step 2) in {first_s:.1f}s; rerun with a killed trial "
          f"{second_s:.1f}s; best {trials[0].params} eval_loss {trials[0].value:.4f}")


def test_bad_study_settings_are_refused_before_any_trial(setup):
    instance, tmp_path = setup
    storage = f"sqlite:///{tmp_path / 'optuna' / 'studies.db'}"
    # Larger batches than the data has: refused by the training checks before the study starts.
    result = _run(instance, tmp_path, hpo_study, _study_config(
        tmp_path, search_space={"per_device_train_batch_size": {"choices": [8, 64]}}))
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert "dataset too small for one step" in error and "lower the batch size" in error
    assert STUDY not in optuna.get_all_study_names(storage)  # nothing ran, not even an empty study

    result = _run(instance, tmp_path, sft_adapter, {"max_steps": 1, "hyperparameters_from_study": True})
    error = result.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert "hpo_study was never materialized" in error

    refusals = {
        "cannot be searched": {"search_space": {"seed": {"choices": [1, 2]}}},
        "a log range needs low > 0": {"search_space": {"warmup_steps": {"low": 0, "high": 3, "log": True}}},
        "must be below high": {"search_space": {"lora_r": {"low": 16, "high": 8}}},
        "must be a whole number": {"search_space": {"lora_r": {"choices": [4, 8.5]}}},
        "outside (0, 1)": {"search_space": {"learning_rate": {"choices": [1e-3, 3.0]}}},
        "would never be scored": {"steps_per_trial": 4, "eval_steps": 5},
        "n_trials must be at least 1": {"n_trials": 0},
        "not below steps_per_trial": {"steps_per_trial": 4, "eval_steps": 2,
                                      "search_space": {"warmup_steps": {"low": 0, "high": 4}}},
        "training.method is full": {"training": {"method": "full"}, "search_space": {"lora_r": {"choices": [4, 8]}}},
        "not a database URL": {"storage": "not a url"},
        "takes sqlite, postgresql, mysql": {"storage": "redis://localhost/0"},
    }
    for message, section in refusals.items():
        with pytest.raises(HpoConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            plan_study(section, identity={})
    assert hpo_problems({"search_space": {"lora_r": {"choices": []}}}, {}) != []
    assert check_space({"lora_r": {"choices": [4, 8.0]}}) == {"lora_r": {"choices": [4, 8]}}


def test_plan_names_the_study_by_what_makes_trials_comparable(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    one = plan_study({"storage": storage}, identity={"sft_dataset": "v1"})
    assert one.study_name == plan_study({"storage": storage, "n_trials": 3}, identity={"sft_dataset": "v1"}).study_name
    assert one.study_name != plan_study({"storage": storage}, identity={"sft_dataset": "v2"}).study_name
    assert one.study_name != plan_study({"storage": storage, "steps_per_trial": 40}, {"sft_dataset": "v1"}).study_name
    # Trials train the recipe's own settings except the searched ones, scored every eval_steps, nothing kept.
    trial = one.trial_settings({"learning_rate": 0.003})
    assert trial["learning_rate"] == 0.003 and trial["max_steps"] == 20 and trial["keep"] == "last"


def test_recipe_hpo_section_runs_the_study_with_the_recipe_training_settings():
    recipe = load_recipe("text-to-sql-demo", ["hpo.n_trials=3", "hpo.search_space.lora_r.choices=[4,8]",
                                              "training.hyperparameters_from_study=true"])
    names = {"hpo_study", "sft_adapter", "base_model"}
    ops = run_config(recipe, "/tmp/drops", names)["ops"]
    assert ops["hpo_study"]["config"]["n_trials"] == 3
    assert ops["hpo_study"]["config"]["training"]["max_length"] == recipe.doc["training"]["max_length"]
    assert "hyperparameters_from_study" not in ops["hpo_study"]["config"]["training"]
    assert ops["sft_adapter"]["config"]["hyperparameters_from_study"] is True
    assert hpo_problems(recipe.doc["hpo"], recipe.doc["training"]) == []
    assert hpo_problems({"steps_per_trial": 0}, {}) == ["hpo.steps_per_trial must be at least 1, not 0"]
    # Only a recipe with an hpo section runs the study.
    from ft_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    with_study = recipe_selection(names, recipe).resolve(graph)
    without = recipe_selection(names, load_recipe("text-to-sql-demo")).resolve(graph)
    assert AssetKey("hpo_study") in with_study and AssetKey("hpo_study") not in without
