"""What the training assets share: configs derived from the recipes' settings, the config hash, reuse of an
identical earlier run, the compute fingerprint. Dagster wiring, no assets (asset modules import this, not each
other)."""

from __future__ import annotations

import base64
import hashlib
import json

from dagster import AssetExecutionContext, Config, MetadataValue, Output
from pydantic import Field, create_model

from ft_assets.artifact_output import artifact_output, card
from ft_assets.lineage.artifacts import Artifact
from ft_assets.training.core import settings_fields
from resources import ArtifactStore, TrainingCompute

REUSE_FIELD = (bool, Field(True, description="same inputs, config and training code: reuse, don't retrain"))
# Value bounds of the trainers' shared settings (pydantic ``Field`` constraints): a zero or negative size or rate
# is refused with the field's name before the run starts (ft_assets/config_guard.py), not deep inside a trainer.
BOUNDS: dict[str, dict] = {
    "max_steps": {"ge": 1}, "per_device_train_batch_size": {"ge": 1}, "gradient_accumulation_steps": {"ge": 1},
    "learning_rate": {"gt": 0}, "lora_r": {"ge": 1}, "lora_alpha": {"gt": 0}, "lora_dropout": {"ge": 0, "lt": 1},
    "max_length": {"ge": 1}, "warmup_steps": {"ge": -1}, "save_steps": {"ge": 1}, "eval_steps": {"ge": 0},
    "eval_max_examples": {"ge": 1}, "early_stopping_patience": {"ge": 0}, "beta": {"ge": 0},
    "num_generations": {"ge": 2}, "epsilon": {"gt": 0, "lt": 1}, "temperature": {"gt": 0},
    "max_completion_length": {"ge": 1}, "max_prompts": {"ge": 0},
}


def asset_config(name: str, settings_cls: type, doc: str, exclude: tuple[str, ...] = (),
                 bounds: dict[str, dict] | None = None, **extra) -> type[Config]:
    """A Dagster ``Config`` with the recipe's settings (their defaults, descriptions and ``BOUNDS``, ``bounds``
    overriding them) plus ``reuse_identical`` and ``extra`` (``name=(type, Field(...))``): the settings are
    declared once, in the recipe."""
    limits = {**BOUNDS, **(bounds or {})}
    specs = {k: (kind, Field(**spec, **limits.get(k, {}))) for k, (kind, spec) in settings_fields(settings_cls).items()
             if k not in exclude}
    model = create_model(name, __base__=Config, __doc__=doc, **specs, reuse_identical=REUSE_FIELD, **extra)
    model.__module__ = settings_cls.__module__
    return model


def training_key(config: dict, inputs: dict[str, Artifact], compute: dict, code_version: str) -> str:
    """The config hash: inputs' versions, training config, where it ran and the training code."""
    payload = {"config": config, "inputs": {k: a.version for k, a in sorted(inputs.items())}, "compute": compute,
               "code": code_version}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def compute_fingerprint(training_compute: TrainingCompute) -> dict:
    """What about where training runs changes its result, and so belongs in the config hash."""
    return training_compute.fingerprint()


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


def plot_md(png: bytes, alt: str = "loss curve") -> MetadataValue:
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def not_trained_output(context: AssetExecutionContext, artifact_store: ArtifactStore, asset_name: str,
                       inputs: dict[str, Artifact], settings: dict, reason: str) -> Output:
    """An adapter stage that had nothing to train on publishes that fact (no weights, ``trained: false`` and why)
    instead of yielding nothing: Dagster would skip every step downstream, and the lineage would not say why."""
    context.log.info(f"{asset_name} not trained: {reason}")
    with artifact_store.stage(asset_name) as staging:
        # The inputs' versions are part of the content, so the version (a content hash) is this run's own: with
        # the reason alone, every later "not trained" artifact would reuse the first one's card and lineage.
        inputs_of = {name: a.version for name, a in sorted(inputs.items())}
        (staging / "NOT_TRAINED").write_text(json.dumps({"reason": reason, "inputs": inputs_of}, indent=2) + "\n")
        artifact = artifact_store.publish(staging, card(context, inputs, settings, trained=False, reason=reason))
    return artifact_output(artifact, inputs, trained=False, reason=reason)
