"""The SFT asset: validates the config, then launches the worker out of process through the compute resource."""

import json
import shutil
from dataclasses import asdict

from dagster import AssetExecutionContext, MetadataValue, Output, asset
from pydantic import Field

from ft_assets.artifact_output import artifact_output, card
from ft_assets.lineage.artifacts import Artifact
from ft_assets.training.core import training_code_version
from ft_assets.training.hpo_wiring import STUDY_ASSET, latest_study_choice
from ft_assets.training.metrics import library_versions, loss_curve_png, loss_table, summary_table
from ft_assets.training.sft import SFTParams, SFTSettings
from ft_assets.training.validate import validate_sft
from ft_assets.training.wiring import asset_config, compute_fingerprint, plot_md, reused_output, training_key
from resources import ArtifactStore, TrainingCompute

__all__ = ["SftAdapterConfig", "sft_adapter", "training_code_version", "training_key", "compute_fingerprint",
           "reused_output"]

SftAdapterConfig = asset_config(
    "SftAdapterConfig", SFTSettings,
    "SFT settings; the defaults teach SmolLM2-135M the demo task in a few CPU minutes.",
    hyperparameters_from_study=(bool, Field(False, description="take the searched settings from the best trial of "
                                                               "the latest hpo_study (recorded in the card)")))


# hpo_study is a dependency for ordering and lineage only (read from the instance when asked for): a recipe
# without a study runs sft_adapter alone.
@asset(group_name="training", kinds={"pytorch", "peft"}, pool="training", deps=[STUDY_ASSET])
def sft_adapter(context: AssetExecutionContext, config: SftAdapterConfig, base_model: Artifact,
                sft_dataset: Artifact, artifact_store: ArtifactStore, training_compute: TrainingCompute) -> Output:
    """A LoRA / QLoRA / DoRA adapter (or a fully fine-tuned model) trained with trl's SFTTrainer, loss on the
    replies only, in a worker process; checkpoints let a crashed run resume."""
    inputs = {"base_model": base_model, "sft_dataset": sft_dataset}
    settings = config.model_dump(exclude={"reuse_identical", "hyperparameters_from_study"})
    study = latest_study_choice(context) if config.hyperparameters_from_study else None
    if study:
        settings.update(study["params"])
        context.log.info(f"hyperparameters {study['params']} from study {study['study_name']} trial "
                         f"{study['trial_number']}")
    compute = compute_fingerprint(training_compute)
    code_version = training_code_version()
    key = training_key(settings, inputs, compute, code_version)
    if config.reuse_identical and (reused := reused_output(context, artifact_store, "sft_adapter", key, inputs)):
        return reused

    work = artifact_store.work_dir("sft_adapter", key)
    eval_path = sft_dataset.path / "eval.jsonl"
    params = SFTParams.from_dict(training_compute.worker_params({
        **settings, "base_model_dir": str(base_model.path), "train_path": str(sft_dataset.path / "train.jsonl"),
        "eval_path": str(eval_path) if eval_path.is_file() else "",
        "output_dir": "", "checkpoint_dir": str(work / "checkpoints"),
        "mlflow_tracking_uri": training_compute.mlflow_tracking_uri,
        "mlflow_experiment": training_compute.mlflow_experiment, "run_name": f"sft_adapter-{key}",
    }))
    facts = validate_sft(params, world_size=training_compute.world_size)  # before any compute is spent
    context.log.info(f"config hash {key}; {facts['train_rows']} examples, {facts['examples_per_step']} per step")
    with artifact_store.stage("sft_adapter") as staging:
        params.output_dir = str(staging)
        invocation = training_compute.launch(context, {**asdict(params), "task": "sft"})
        messages = invocation.get_custom_messages()
        steps = [m for m in messages if m.get("kind") == "train_step"]
        summaries = [m for m in messages if m.get("kind") == "train_summary"]
        if not summaries:
            raise RuntimeError("the training worker exited without reporting a summary")
        summary = {k: v for k, v in summaries[-1].items() if k not in ("kind", "params")}
        history_file = staging / "train_history.json"
        steps = json.loads(history_file.read_text()) if history_file.is_file() else steps  # incl. pre-resume steps
        eval_file = staging / "eval_history.json"
        evals = json.loads(eval_file.read_text()) if eval_file.is_file() else \
            [m for m in messages if m.get("kind") == "eval_step"]
        versions = library_versions()
        png = loss_curve_png(steps, title=f"sft_adapter {config.method} ({key})", evals=evals)
        (staging / "loss_curve.png").write_bytes(png)
        training = {**summary, "config_hash": key, "seed": config.seed, "library_versions": versions,
                    "training_code_version": code_version, "compute": compute,
                    **({"hyperparameters_from": study} if study else {})}
        artifact = artifact_store.publish(staging, card(context, inputs, settings, training=training,
                                                        base_model=base_model.card().get("base_model")))
    artifact_store.remember("sft_adapter", key, artifact)
    shutil.rmtree(work, ignore_errors=True)  # checkpoints served their purpose once the artifact is published
    numbers = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    mlflow = {}
    if summary.get("mlflow_run_id"):
        mlflow = {"mlflow_run_id": summary["mlflow_run_id"],
                  "mlflow_run": MetadataValue.url(training_compute.mlflow_run_url(summary["mlflow_experiment_id"],
                                                                                  summary["mlflow_run_id"])),
                  "mlflow_tracking_uri": summary["mlflow_tracking_uri"]}
    return artifact_output(
        artifact, inputs,
        **numbers,
        method=config.method,
        resumed=bool(summary.get("resumed")),
        config_hash=key,
        seed=config.seed,
        loss_curve=plot_md(png),
        summary=MetadataValue.md(summary_table(summary)),
        loss_table=MetadataValue.md(loss_table(steps)),
        loss_history=MetadataValue.json(steps),
        **({"eval_history": MetadataValue.json(evals)} if evals else {}),
        kept=MetadataValue.json(summary.get("kept", {})),
        label_mask=MetadataValue.json(summary.get("label_mask", {})),
        prompt_prefix=_prompt_prefix_metadata(summary.get("prompt_prefix")),
        library_versions=MetadataValue.json(versions),
        **({"hyperparameters_from": MetadataValue.json(study)} if study else {}),
        **mlflow,
    )


def _prompt_prefix_metadata(sharing: dict | str | None) -> MetadataValue:
    """How many forward passes ran their batch's shared prompt prefix once, or why none did."""
    return MetadataValue.json(sharing) if isinstance(sharing, dict) else MetadataValue.text(str(sharing or "unknown"))
