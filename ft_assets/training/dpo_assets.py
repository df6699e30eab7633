"""The preference-alignment asset: DPO on top of the SFT adapter, in the training worker through Dagster Pipes."""

from dataclasses import asdict

from dagster import AssetExecutionContext, MetadataValue, Output, asset
from pydantic import Field

from ft_assets.artifact_output import artifact_output, card
from ft_assets.lineage.artifacts import Artifact
from ft_assets.training.core import training_code_version
from ft_assets.training.dpo import DPOParams, DPOSettings, validate_dpo
from ft_assets.training.wiring import (
    asset_config,
    compute_fingerprint,
    not_trained_output,
    reused_output,
    training_key,
)
from resources import ArtifactStore, TrainingCompute

DpoAdapterConfig = asset_config("DpoAdapterConfig", DPOSettings, DPOSettings.__doc__ or "",
                                exclude=("lora_r", "lora_alpha", "lora_dropout", "target_modules"),
                                bounds={"beta": {"gt": 0}},  # validate_dpo's rule (GRPO's 0: no KL)
                                enabled=(bool, Field(True, description="train DPO when the data has preference "
                                                                       "pairs; off: the asset records that it did "
                                                                       "not train")))


def _reward_table(steps: list[dict], max_rows: int = 20) -> str:
    stride = max(1, len(steps) // max_rows)
    rows = steps[::stride] + ([steps[-1]] if steps and (len(steps) - 1) % stride else [])
    lines = ["| step | loss | reward accuracy | reward margin | lr | grad norm | tokens/s |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {s['step']} | {s['loss']:.4f} | {s.get('rewards/accuracies', float('nan')):.2f} | "
              f"{s.get('rewards/margins', float('nan')):.4f} | {s['learning_rate']:.2e} | {s['grad_norm']:.3f} | "
              f"{s['tokens_per_s']} |" for s in rows]
    return "\n".join(lines)


@asset(group_name="training", kinds={"pytorch", "peft"}, pool="training")
def dpo_adapter(context: AssetExecutionContext, config: DpoAdapterConfig, base_model: Artifact, sft_adapter: Artifact,
                preference_dataset: Artifact, artifact_store: ArtifactStore,
                training_compute: TrainingCompute) -> Output:
    """The SFT LoRA adapter trained further with trl's DPOTrainer; the reference is the SFT adapter as loaded."""
    inputs = {"base_model": base_model, "sft_adapter": sft_adapter, "preference_dataset": preference_dataset}
    if not config.enabled:
        return not_trained_output(context, artifact_store, "dpo_adapter", inputs, {},
                                  "DPO switched off in the recipe (dpo.enabled: false)")
    settings = config.model_dump(exclude={"reuse_identical", "enabled"})
    compute = compute_fingerprint(training_compute)
    key = training_key(settings, inputs, compute, training_code_version())
    if config.reuse_identical and (reused := reused_output(context, artifact_store, "dpo_adapter", key, inputs)):
        return reused
    train_path = preference_dataset.path / "train.jsonl"
    if not train_path.is_file() or not train_path.stat().st_size:
        return not_trained_output(context, artifact_store, "dpo_adapter", inputs, settings,
                                  "no preference pairs in the data")
    eval_path = preference_dataset.path / "eval.jsonl"
    params = DPOParams.from_dict(training_compute.worker_params({
        **settings, "base_model_dir": str(base_model.path), "sft_adapter_dir": str(sft_adapter.path),
        "train_path": str(preference_dataset.path / "train.jsonl"),
        "eval_path": str(eval_path) if eval_path.is_file() and eval_path.stat().st_size else "",
        "output_dir": ""}))
    facts = validate_dpo(params)  # before any compute is spent
    context.log.info(f"{facts['train_pairs']} preference pairs, {facts['pairs_per_step']} per step")
    with artifact_store.stage("dpo_adapter") as staging:
        params.output_dir = str(staging)
        invocation = training_compute.launch(context, {**asdict(params), "task": "dpo"})
        messages = invocation.get_custom_messages()
        steps = [m for m in messages if m.get("kind") == "train_step"]
        summaries = [m for m in messages if m.get("kind") == "train_summary"]
        if not summaries:
            raise RuntimeError("the DPO worker exited without reporting a summary")
        summary = {k: v for k, v in summaries[-1].items() if k not in ("kind", "params")}
        training = {**summary, "config_hash": key, "seed": config.seed, "compute": compute}
        artifact = artifact_store.publish(staging, card(context, inputs, settings, method="dpo", trained=True,
                                                        training=training,
                                                        base_model=base_model.card().get("base_model")))
    artifact_store.remember("dpo_adapter", key, artifact)
    return artifact_output(
        artifact, inputs,
        **{k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
        trained=True, reused=False, config_hash=key, reference=summary.get("reference", ""),
        reward_curve=MetadataValue.md(_reward_table(steps)),
        loss_history=MetadataValue.json(steps),
        seed=config.seed,
    )
