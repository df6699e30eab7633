"""Preference alignment with trl's DPOTrainer, on top of the SFT adapter: a plain function, no Dagster.

Runs inside the worker process (``worker.py`` maps ``task="dpo"`` here).

How the SFT adapter is used: the base model is loaded with the SFT LoRA adapter
as a *trainable* ``PeftModel`` and handed to ``DPOTrainer`` without a
``ref_model`` or ``peft_config``. trl 1.16 then copies the adapter into a
frozen second adapter named ``ref`` and computes the reference log-probs with
it, so the reference is exactly the SFT policy (the standard DPO set-up) while
only one copy of the base weights sits in memory. The policy starts equal to
the reference, so the first step's loss is ln 2 (a check the tests make). The
result is a LoRA adapter of the same shape on the same base as the SFT one, so
merging, quantizing and evaluation take it exactly like ``sft_adapter``. (The
alternative, merging SFT into the base and training a fresh LoRA on the merged
weights, gives an adapter that only applies to that merged model.)

When SFT was a full fine-tune (``sft_adapter_dir`` holds a whole model), or
without SFT (``sft_adapter_dir=""``), a fresh LoRA is trained on that model and
the reference is the model itself (adapters disabled); the adapter then applies
to that model.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ft_assets.training import core
from ft_assets.training.core import TrainingConfigError, setting

# DPO's own per-step metrics streamed with the loss when present.
DPO_METRICS = ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "logps/chosen",
               "logps/rejected")
# trl 1.16's DPO losses (DPOConfig.loss_type).
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


@dataclass(kw_only=True)
class DPOSettings:
    """The DPO recipe's settings, declared once: ``dpo_adapter``'s config is derived from these fields. The
    defaults run a short demo pass (4 steps: about a minute for SmolLM2-135M on 2 CPU cores)."""

    max_steps: int = 4
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-4
    beta: float = setting(0.1, "strength of the pull towards the reference (the SFT adapter)")
    loss_type: str = setting("sigmoid", "trl DPO loss: sigmoid (DPO), ipo, hinge, robust, ...")
    max_length: int = 512
    gradient_checkpointing: bool = False
    seed: int = 0
    # Only for a fresh LoRA (no SFT adapter); with one, its own config is kept.
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: list[str] = setting([], "fresh LoRA only: module names; empty: every linear layer")


@dataclass(kw_only=True)
class DPOParams(core.RunParams, DPOSettings):
    """Settings plus plumbing; ``eval_path`` "" skips the final evaluation."""

    sft_adapter_dir: str = ""  # the SFT adapter (or fully fine-tuned model); "" trains a fresh LoRA on the base


def read_pairs(path: str | Path) -> list[dict]:
    """The prompt / chosen / rejected columns of a ``preference_dataset`` split (other columns dropped)."""
    rows = []
    with Path(path).open(encoding="utf-8") as handle:
        for n, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
            if missing:
                raise ValueError(f"{path}:{n}: not a preference pair, missing {', '.join(missing)}")
            rows.append({k: row[k] for k in ("prompt", "chosen", "rejected")})
    return rows


def validate_dpo(params: DPOParams) -> dict:
    """Fail before any compute when the run cannot work, saying what to change; returns what it found."""
    if params.loss_type not in LOSS_TYPES:
        raise TrainingConfigError(f"unknown DPO loss_type {params.loss_type!r}; use one of {', '.join(LOSS_TYPES)}")
    if params.beta <= 0:
        raise TrainingConfigError(f"beta must be > 0 (the pull towards the reference), got {params.beta}")
    if params.precision not in core.PRECISIONS:
        raise TrainingConfigError(f"precision must be auto, bf16, fp16 or fp32, got {params.precision!r}")
    if params.max_steps < 1 or params.per_device_train_batch_size < 1 or params.gradient_accumulation_steps < 1:
        raise TrainingConfigError("max_steps, per_device_train_batch_size and gradient_accumulation_steps must be >= 1")
    sft = Path(params.sft_adapter_dir) if params.sft_adapter_dir else None
    if sft and not ((sft / "adapter_config.json").is_file() or (sft / "config.json").is_file()):
        raise TrainingConfigError(f"no LoRA adapter (adapter_config.json) or model (config.json) in {sft}")
    if not (Path(params.base_model_dir) / "config.json").is_file():
        raise TrainingConfigError(f"no model (config.json) in base_model_dir {params.base_model_dir}")
    pairs = len(read_pairs(params.train_path))
    per_step = params.per_device_train_batch_size * params.gradient_accumulation_steps
    if pairs < per_step:
        raise TrainingConfigError(f"{pairs} preference pairs are too few for one step of {per_step} "
                                  f"(batch x accumulation): lower per_device_train_batch_size or add pairs")
    return {"train_pairs": pairs, "pairs_per_step": per_step}


def _load_policy(params: DPOParams):
    """(model, peft_config or None, what the reference is).

    An SFT adapter is loaded trainable on the base (trl makes the frozen reference copy); a fully
    fine-tuned SFT model, or no SFT at all, gets a fresh LoRA whose reference is that model itself.
    """
    from peft import PeftModel

    sft = Path(params.sft_adapter_dir) if params.sft_adapter_dir else None
    full_sft = sft is not None and not (sft / "adapter_config.json").is_file()
    model = core.load_causal_lm(sft if full_sft else params.base_model_dir, "fp32")
    if sft and not full_sft:
        return PeftModel.from_pretrained(model, str(sft), is_trainable=True), None, "sft_adapter"
    lora = core.lora_config(params.lora_r, params.lora_alpha, params.lora_dropout, params.target_modules)
    return model, lora, "sft_model" if full_sft else "base_model"


def train_dpo(params: DPOParams, on_log: Callable[[dict], None] = lambda _: None) -> dict:
    """Train with DPO; save the adapter + tokenizer to ``output_dir``; return a summary."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    core.set_threads(params.num_threads)
    validate_dpo(params)
    train_rows = read_pairs(params.train_path)
    eval_rows = read_pairs(params.eval_path) if params.eval_path else []
    tokenizer = core.load_tokenizer(params.base_model_dir)
    model, peft_config, reference = _load_policy(params)
    precision = core.choose_precision(params.precision)
    callback = core.step_metrics_callback(on_log, extra_keys=DPO_METRICS)
    out = Path(params.output_dir)
    args = DPOConfig(
        **core.common_arguments(
            params, output_dir=str(out / "trainer"), precision=precision[0], max_steps=params.max_steps,
            batch_size=params.per_device_train_batch_size,
            gradient_accumulation_steps=params.gradient_accumulation_steps, learning_rate=params.learning_rate,
            seed=params.seed, gradient_checkpointing=params.gradient_checkpointing),
        beta=params.beta,
        loss_type=[params.loss_type],
        max_length=params.max_length,
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                         eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                         processing_class=tokenizer, peft_config=peft_config, callbacks=[callback])
    # DPOTrainer drops pairs whose prompt alone fills max_length: say how many instead of losing them silently.
    dropped_too_long = len(train_rows) - len(trainer.train_dataset)
    result = trainer.train()
    summary = core.base_summary(trainer, result, callback, callback.history, precision, params)
    eval_metrics = {}
    if eval_rows:
        eval_metrics = {k: float(v) for k, v in trainer.evaluate().items() if isinstance(v, (int, float))}
    if not trainer.is_world_process_zero():  # under a multi-rank launch, one writer
        return {}
    # Only the trained adapter: the frozen "ref" copy trl added is the SFT adapter, already an artifact.
    trainer.model.save_pretrained(out, selected_adapters=["default"])
    tokenizer.save_pretrained(out)
    shutil.rmtree(out / "trainer", ignore_errors=True)
    last = callback.history[-1] if callback.history else {}
    summary.update({
        "final_reward_accuracy": last.get("rewards/accuracies"),
        "final_reward_margin": last.get("rewards/margins"),
        "eval_loss": eval_metrics.get("eval_loss"),
        "eval_reward_accuracy": eval_metrics.get("eval_rewards/accuracies"),
        "eval_reward_margin": eval_metrics.get("eval_rewards/margins"),
        "pairs": len(train_rows),
        "eval_pairs": len(eval_rows),
        "pairs_dropped_too_long": dropped_too_long,
        "reference": reference,
        "bf16": bool(args.bf16),
        "params": core.params_for_summary(params),
    })
    core.write_summary(out, callback.history, summary)
    return summary


def run_task(params: dict, on_log: Callable[[dict], None]) -> dict:
    """The worker's entry point for ``task="dpo"``."""
    return train_dpo(DPOParams.from_dict(params), on_log=on_log)
