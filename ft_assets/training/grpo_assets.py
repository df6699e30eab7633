"""The RL asset: GRPO on top of the SFT adapter with the task's own scorer as the reward, in the training worker
through Dagster Pipes."""

import json
import shutil
from dataclasses import asdict

from dagster import AssetExecutionContext, MetadataValue, Output, asset
from pydantic import Field

from ft_assets.artifact_output import artifact_output, card
from ft_assets.lineage.artifacts import Artifact
from ft_assets.training.core import TrainingConfigError, training_code_version
from ft_assets.training.grpo import (
    GRPOParams,
    GRPOSettings,
    reward_curve_png,
    reward_metric_of,
    reward_table,
    settings_problems,
    validate_grpo,
)
from ft_assets.training.wiring import (
    asset_config,
    compute_fingerprint,
    not_trained_output,
    plot_md,
    reused_output,
    training_key,
)
from resources import ArtifactStore, TaskResource, TrainingCompute

GrpoAdapterConfig = asset_config(
    "GrpoAdapterConfig", GRPOSettings, GRPOSettings.__doc__ or "",
    exclude=("lora_r", "lora_alpha", "lora_dropout", "target_modules"),
    # Always in the graph (policy reads it), trained only when a recipe's grpo section switches it on.
    enabled=(bool, Field(False, description="train GRPO (a recipe's grpo: section sets this); off: the asset "
                                            "records that it did not train")))


@asset(group_name="training", kinds={"pytorch", "peft"}, pool="training")
def grpo_adapter(context: AssetExecutionContext, config: GrpoAdapterConfig, base_model: Artifact,
                 sft_adapter: Artifact, sft_dataset: Artifact, artifact_store: ArtifactStore,
                 training_compute: TrainingCompute, task: TaskResource) -> Output:
    """The SFT LoRA adapter trained further with trl's GRPOTrainer on the train split's prompts; the reward is the
    task's own scorer (its primary metric, or ``reward_metric``) against each prompt's reference."""
    inputs = {"base_model": base_model, "sft_adapter": sft_adapter, "sft_dataset": sft_dataset}
    if not config.enabled:
        return not_trained_output(context, artifact_store, "grpo_adapter", inputs, {}, "GRPO not enabled in the "
                                  "recipe (add a grpo: section)")
    the_task = task.task()
    settings = config.model_dump(exclude={"reuse_identical", "enabled"})
    problems = settings_problems(settings, the_task.metrics, world_size=training_compute.world_size)
    if problems:
        raise TrainingConfigError("; ".join(problems))
    metric = reward_metric_of(config.reward_metric, the_task.primary_metric)
    compute = compute_fingerprint(training_compute)
    # The reward is part of what was trained: another task or scorer is another adapter.
    keyed = {**settings, "reward_metric": metric, "reward": the_task.metrics[metric], "task": the_task.name}
    key = training_key(keyed, inputs, compute, training_code_version())
    if config.reuse_identical and (reused := reused_output(context, artifact_store, "grpo_adapter", key, inputs)):
        return reused
    work = artifact_store.work_dir("grpo_adapter", key)
    reward_spec = the_task.prepare(work / "task")[metric]  # e.g. text-to-SQL builds its database here
    params = GRPOParams.from_dict(training_compute.worker_params({
        **settings, "reward_metric": metric, "reward_spec": reward_spec, "base_model_dir": str(base_model.path),
        "sft_adapter_dir": str(sft_adapter.path), "train_path": str(sft_dataset.path / "train.jsonl"),
        "output_dir": ""}))
    facts = validate_grpo(params, world_size=training_compute.world_size)  # before any compute is spent
    context.log.info(f"reward: {the_task.name}'s {metric} ({reward_spec['scorer']}); {facts['prompts']} prompts, "
                     f"{facts['prompts_per_step']} per step; the references score {facts['reward_of_references']:.3f}")
    with artifact_store.stage("grpo_adapter") as staging:
        params.output_dir = str(staging)
        invocation = training_compute.launch(context, {**asdict(params), "task": "grpo"})
        messages = invocation.get_custom_messages()
        summaries = [m for m in messages if m.get("kind") == "train_summary"]
        if not summaries:
            raise RuntimeError("the GRPO worker exited without reporting a summary")
        summary = {k: v for k, v in summaries[-1].items() if k not in ("kind", "params")}
        history = staging / "train_history.json"
        steps = json.loads(history.read_text()) if history.is_file() else \
            [m for m in messages if m.get("kind") == "train_step"]
        png = reward_curve_png(steps, title=f"grpo_adapter: {the_task.name} {metric} ({key})")
        (staging / "reward_curve.png").write_bytes(png)
        training = {**summary, "config_hash": key, "seed": config.seed, "compute": compute,
                    "reward": {"task": the_task.name, "metric": metric, "scorer": reward_spec["scorer"]}}
        artifact = artifact_store.publish(staging, card(context, inputs, settings, method="grpo", training=training,
                                                        task=the_task.describe(),
                                                        base_model=base_model.card().get("base_model")))
    artifact_store.remember("grpo_adapter", key, artifact)
    shutil.rmtree(work, ignore_errors=True)  # the task's prepared files served the reward
    numbers = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return artifact_output(
        artifact, inputs, **numbers,
        reused=False, config_hash=key, seed=config.seed, reference=summary.get("reference", ""),
        reward_metric=metric, reward_scorer=str(reward_spec["scorer"]),
        reward_curve=plot_md(png, alt="reward curve"),
        reward_table=MetadataValue.md(reward_table(steps)),
        loss_history=MetadataValue.json(steps),
    )
