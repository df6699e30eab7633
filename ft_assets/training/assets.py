"""The training asset: launches the LoRA worker out of process through Dagster Pipes."""


from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset

from ft_assets.artifact_output import artifact_output, card
from ft_assets.lineage.artifacts import Artifact
from resources import ArtifactStore, TrainingCompute


class SftAdapterConfig(Config):
    """LoRA SFT settings; the defaults teach SmolLM2-135M the demo task in a few CPU minutes."""

    max_steps: int = 40
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    max_length: int = 256
    seed: int = 0


def _loss_table(steps: list[dict], max_rows: int = 20) -> str:
    stride = max(1, len(steps) // max_rows)
    rows = steps[::stride] + ([steps[-1]] if steps and (len(steps) - 1) % stride else [])
    lines = ["| step | loss | lr | grad norm | tokens/s |", "|---|---|---|---|---|"]
    lines += [f"| {s['step']} | {s['loss']:.4f} | {s['learning_rate']:.2e} | {s['grad_norm']:.3f} | "
              f"{s['tokens_per_s']} |" for s in rows]
    return "\n".join(lines)


@asset(group_name="training", kinds={"pytorch", "peft"}, pool="training")
def sft_adapter(context: AssetExecutionContext, config: SftAdapterConfig, base_model: Artifact,
                sft_dataset: Artifact, artifact_store: ArtifactStore, training_compute: TrainingCompute) -> Output:
    """A LoRA adapter trained with trl's SFTTrainer (loss on completions only) in a separate process."""
    inputs = {"base_model": base_model, "sft_dataset": sft_dataset}
    with artifact_store.stage("sft_adapter") as staging:
        params = {**config.model_dump(), "base_model_dir": str(base_model.path),
                  "train_path": str(sft_dataset.path / "train.jsonl"), "output_dir": str(staging),
                  "num_threads": training_compute.num_threads}
        invocation = training_compute.launch(context, params)
        messages = invocation.get_custom_messages()
        steps = [m for m in messages if m.get("kind") == "train_step"]
        summaries = [m for m in messages if m.get("kind") == "train_summary"]
        if not summaries:
            raise RuntimeError("the training worker exited without reporting a summary")
        summary = {k: v for k, v in summaries[-1].items() if k not in ("kind", "params")}
        artifact = artifact_store.publish(staging, card(context, inputs, config.model_dump(), training=summary,
                                                        base_model=base_model.card().get("base_model")))
    return artifact_output(
        artifact, inputs,
        **{k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
        loss_curve=MetadataValue.md(_loss_table(steps)),
        loss_history=MetadataValue.json(steps),
        seed=config.seed,
    )
