"""The hyperparameter-search asset: an Optuna study whose trials are short SFT runs through the compute resource."""

import json
import shutil
import time
from dataclasses import asdict

from dagster import AssetExecutionContext, Failure, MetadataValue, Output, asset

from ft_assets.artifact_output import artifact_output, card
from ft_assets.lineage.artifacts import Artifact
from ft_assets.training import hpo
from ft_assets.training.hpo_wiring import STUDY_FILE, HpoStudyConfig
from ft_assets.training.sft import SFTParams
from ft_assets.training.validate import count_rows, validate_sft
from ft_assets.training.wiring import compute_fingerprint, plot_md
from resources import ArtifactStore, TrainingCompute


@asset(group_name="training", kinds={"optuna", "pytorch"}, pool="training")
def hpo_study(context: AssetExecutionContext, config: HpoStudyConfig, base_model: Artifact, sft_dataset: Artifact,
              artifact_store: ArtifactStore, training_compute: TrainingCompute) -> Output:
    """Adds ``n_trials`` trials to an Optuna study (RDB storage; rerunning continues it): each a short SFT run in
    the training pool, scored by its best eval loss and pruned by the median pruner from its streamed eval losses.
    A crashed trial is recorded as failed. Metadata: trials table, objective and importance plots, best params."""
    inputs = {"base_model": base_model, "sft_dataset": sft_dataset}
    eval_path = sft_dataset.path / "eval.jsonl"
    if not eval_path.is_file() or count_rows(eval_path) == 0:
        raise hpo.HpoConfigError("hpo_study scores each trial on the held-out split and sft_dataset has none: give "
                                 "the recipe's data.split an eval share")
    compute = compute_fingerprint(training_compute)
    plan = hpo.plan_study(config.plain(), identity={"base_model": base_model.version,
                                                    "sft_dataset": sft_dataset.version, "compute": compute})

    def params_for(settings: dict, output_dir: str, hpo_trial: dict | None, run_name: str) -> SFTParams:
        return SFTParams.from_dict(training_compute.worker_params({
            **settings, "base_model_dir": str(base_model.path), "train_path": str(sft_dataset.path / "train.jsonl"),
            "eval_path": str(eval_path), "output_dir": output_dir, "checkpoint_dir": "", "hpo_trial": hpo_trial,
            "mlflow_tracking_uri": training_compute.mlflow_tracking_uri,
            "mlflow_experiment": training_compute.mlflow_experiment, "run_name": run_name}))

    # Before any compute: the trial with the largest batch of the space must fit the data and the model.
    validate_sft(params_for(plan.extreme_settings(), "", None, ""), world_size=training_compute.world_size)

    def run_trial(number: int, settings: dict, worker_hpo: dict) -> dict:
        work = artifact_store.work_dir("hpo_study", f"{plan.study_name}-trial-{number}")
        params = params_for(settings, str(work / "out"), worker_hpo, f"{plan.study_name}-trial-{number}")
        validate_sft(params, world_size=training_compute.world_size)
        try:
            invocation = training_compute.launch(context, {**asdict(params), "task": "sft"},
                                                 env={hpo.STORAGE_ENV: plan.storage})
        finally:
            shutil.rmtree(work, ignore_errors=True)  # a trial's weights are not kept; its numbers are
        summaries = [m for m in invocation.get_custom_messages() if m.get("kind") == "train_summary"]
        if not summaries:
            raise RuntimeError("the training worker exited without reporting a summary")
        return summaries[-1]

    started = time.perf_counter()
    study = hpo.run_study(plan, run_trial, log=context.log.info)
    seconds = round(time.perf_counter() - started, 1)
    rows = hpo.trial_rows(study)
    best = hpo.best_trial(study)
    importances = hpo.importances(study)
    table = hpo.trials_markdown(rows)
    storage = hpo.redacted(plan.storage)
    states = {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    if best is None:
        raise Failure(f"study {plan.study_name}: no trial has completed ({states}); see the trials table",
                      metadata={"trials": MetadataValue.md(table), "study_name": plan.study_name, "storage": storage})
    objective_png, importance_png = hpo.objective_png(rows), hpo.importance_png(importances)
    record = {"study_name": plan.study_name, "storage": storage, "objective": hpo.OBJECTIVE, "direction": "minimize",
              "best_trial": best, "importances": importances, "trials": rows, "search_space": plan.space,
              "fixed": plan.fixed, "steps_per_trial": plan.steps_per_trial, "eval_steps": plan.eval_steps,
              "pruner": {"kind": "median", **plan.pruner},
              "inputs": {k: a.version for k, a in inputs.items()}}
    with artifact_store.stage("hpo_study") as staging:
        (staging / STUDY_FILE).write_text(json.dumps(record, indent=2, default=str))
        (staging / "objective.png").write_bytes(objective_png)
        (staging / "importances.png").write_bytes(importance_png)
        artifact = artifact_store.publish(staging, card(context, inputs, config.plain(), study={
            k: record[k] for k in ("study_name", "storage", "best_trial", "importances", "pruner")},
            compute=compute))
    return artifact_output(
        artifact, inputs,
        study_name=plan.study_name,
        storage=storage,
        trials_total=len(rows),
        trials_this_run=plan.n_trials,
        **{f"trials_{state.lower()}": n for state, n in states.items()},
        best_trial=best["number"],
        best_eval_loss=best[hpo.OBJECTIVE],
        best_params=MetadataValue.json(best["params"]),
        importances=MetadataValue.json(importances),
        trials=MetadataValue.md(table),
        objective_plot=plot_md(objective_png, "objective per trial"),
        importance_plot=plot_md(importance_png, "parameter importances"),
        study_seconds=seconds,
    )
