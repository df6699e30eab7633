"""The SFT asset: validates the config, then launches the worker out of process through the compute resource."""


import base64
import hashlib
import json
import shutil
from pathlib import Path
from typing import Literal

from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset
from pydantic import Field

from ft_assets.artifact_output import artifact_output, card
from ft_assets.lineage.artifacts import Artifact
from ft_assets.training.metrics import library_versions, loss_curve_png, loss_table, summary_table
from ft_assets.training.sft import SFTParams
from ft_assets.training.validate import validate_sft
from resources import ArtifactStore, TrainingCompute

TRAINING_CODE = ("sft.py", "masking.py", "worker.py")


class SftAdapterConfig(Config):
    """SFT settings; the defaults teach SmolLM2-135M the demo task in a few CPU minutes."""

    method: Literal["lora", "qlora", "dora", "full"] = Field(
        "lora", description="lora, qlora (4-bit NF4 base), dora (weight-decomposed LoRA) or full fine-tuning")
    max_steps: int = 40
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: list[str] = Field([], description="module names to adapt; empty: every linear layer")
    max_length: int = 256
    packing: bool = False
    gradient_checkpointing: bool = False
    seed: int = 0
    save_steps: int = Field(10, description="checkpoint every N steps; a failed run resumes from the last one")
    reuse_identical: bool = Field(True, description="same inputs, config and training code: reuse, don't retrain")


def training_code_version(files: tuple[str, ...] = TRAINING_CODE) -> str:
    """A hash of the code that trains, so a change to it retrains while an unrelated commit does not."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in files:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:12]


def training_key(config: dict, inputs: dict[str, Artifact], compute: dict, code_version: str) -> str:
    """The config hash: inputs' versions, training config, where it ran and the training code."""
    payload = {"config": config, "inputs": {k: a.version for k, a in sorted(inputs.items())}, "compute": compute,
               "code": code_version}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def compute_fingerprint(training_compute: TrainingCompute) -> dict:
    """What about where training runs changes its result, and so belongs in the config hash."""
    return {"launcher": training_compute.launcher, "world_size": training_compute.world_size,
            "precision": training_compute.precision}


def reused_output(context: AssetExecutionContext, artifact_store: ArtifactStore, asset_name: str, key: str,
                  inputs: dict[str, Artifact]) -> Output | None:
    """The earlier artifact trained from the same key, re-emitted with its numbers; ``None`` if there is none."""
    done = artifact_store.lookup(asset_name, key)
    if done is None:
        return None
    context.log.info(f"inputs, config and training code unchanged (config hash {key}): reusing {done.version}")
    return artifact_output(done, inputs, reused=True, config_hash=key,
                           **{k: v for k, v in done.card().get("training", {}).items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool)})


def _plot_md(png: bytes) -> MetadataValue:
    return MetadataValue.md(f"![loss curve](data:image/png;base64,{base64.b64encode(png).decode()})")


@asset(group_name="training", kinds={"pytorch", "peft"}, pool="training")
def sft_adapter(context: AssetExecutionContext, config: SftAdapterConfig, base_model: Artifact,
                sft_dataset: Artifact, artifact_store: ArtifactStore, training_compute: TrainingCompute) -> Output:
    """A LoRA / QLoRA / DoRA adapter (or a fully fine-tuned model) trained with trl's SFTTrainer, loss on the
    replies only, in a worker process; checkpoints let a crashed run resume."""
    inputs = {"base_model": base_model, "sft_dataset": sft_dataset}
    settings = config.model_dump(exclude={"reuse_identical"})
    compute = compute_fingerprint(training_compute)
    code_version = training_code_version()
    key = training_key(settings, inputs, compute, code_version)
    if config.reuse_identical and (reused := reused_output(context, artifact_store, "sft_adapter", key, inputs)):
        return reused

    work = artifact_store.work_dir("sft_adapter", key)
    params = SFTParams.from_dict({
        **settings, "target_modules": config.target_modules or "all-linear",
        "base_model_dir": str(base_model.path), "train_path": str(sft_dataset.path / "train.jsonl"),
        "output_dir": "", "num_threads": training_compute.num_threads, "checkpoint_dir": str(work / "checkpoints"),
        "mlflow_tracking_uri": training_compute.mlflow_tracking_uri,
        "mlflow_experiment": training_compute.mlflow_experiment, "run_name": f"sft_adapter-{key}",
        "deepspeed": training_compute.deepspeed(),
    })
    facts = validate_sft(params, world_size=training_compute.world_size)  # before any compute is spent
    context.log.info(f"config hash {key}; {facts['train_rows']} examples, {facts['examples_per_step']} per step")
    with artifact_store.stage("sft_adapter") as staging:
        params.output_dir = str(staging)
        invocation = training_compute.launch(context, {**params.__dict__, "task": "sft"})
        messages = invocation.get_custom_messages()
        steps = [m for m in messages if m.get("kind") == "train_step"]
        summaries = [m for m in messages if m.get("kind") == "train_summary"]
        if not summaries:
            raise RuntimeError("the training worker exited without reporting a summary")
        summary = {k: v for k, v in summaries[-1].items() if k not in ("kind", "params")}
        history_file = staging / "train_history.json"
        steps = json.loads(history_file.read_text()) if history_file.is_file() else steps  # incl. pre-resume steps
        versions = library_versions()
        png = loss_curve_png(steps, title=f"sft_adapter {config.method} ({key})")
        (staging / "loss_curve.png").write_bytes(png)
        training = {**summary, "config_hash": key, "seed": config.seed, "library_versions": versions,
                    "training_code_version": code_version, "compute": compute}
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
        loss_curve=_plot_md(png),
        summary=MetadataValue.md(summary_table(summary)),
        loss_table=MetadataValue.md(loss_table(steps)),
        loss_history=MetadataValue.json(steps),
        label_mask=MetadataValue.json(summary.get("label_mask", {})),
        library_versions=MetadataValue.json(versions),
        **mlflow,
    )
