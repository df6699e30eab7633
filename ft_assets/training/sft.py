"""Supervised fine-tuning with trl's SFTTrainer (LoRA, QLoRA, DoRA or full): a recipe over ``core``, no Dagster.

Runs inside the worker process (``worker.py``), alone or as one rank under the ``deepspeed`` / ``torchrun``
launcher (DDP or FSDP2). ``on_log`` receives each logged step and each evaluation (rank 0 only); checkpoints
land in ``checkpoint_dir`` every ``save_steps`` steps and a call that finds one resumes from it. With
``eval_steps`` the held-out split is scored every N steps, the kept weights are the best by eval loss (or the
last, ``keep="last"``) and ``early_stopping_patience`` evaluations without improvement end the run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ft_assets.training import core
from ft_assets.training.core import METHODS, PRECISIONS, read_jsonl, resolve_precision, setting  # noqa: F401
from ft_assets.training.selection import kept_checkpoint, selection_arguments, selection_callbacks

KEEP = ("best", "last")


@dataclass(kw_only=True)
class SFTSettings:
    """The SFT recipe's settings, declared once: ``sft_adapter``'s config is derived from these fields."""

    method: Literal["lora", "qlora", "dora", "full"] = setting(
        "lora", "lora, qlora (4-bit NF4 base), dora (weight-decomposed LoRA) or full fine-tuning")
    max_steps: int = 40
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    lr_scheduler_type: str = "linear"
    warmup_steps: int = setting(-1, "-1: a tenth of max_steps, at most 5")
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: list[str] = setting([], "module names to adapt; empty: every linear layer but the head")
    max_length: int = setting(256, "tokens per example; the label-mask check reads this too")
    packing: bool = False
    gradient_checkpointing: bool = False
    share_prompt_prefix: bool = setting(True, "run the tokens every row of a batch starts with (system prompt, chat "
                                              "header) once per batch; same loss and gradients, less compute")
    seed: int = 0
    save_steps: int = setting(10, "checkpoint every N steps; a failed run resumes from the last one")
    eval_steps: int = setting(0, "eval loss on the held-out split every N steps; 0: no evaluation")
    eval_max_examples: int = setting(64, "held-out examples scored at each evaluation (the first N)")
    keep: Literal["best", "last"] = setting("best", "with eval_steps: keep the best checkpoint by eval loss, "
                                                    "or the last")
    early_stopping_patience: int = setting(0, "with eval_steps: stop after N evaluations without a better eval "
                                              "loss; 0: never")
    check_label_mask: bool = True


@dataclass(kw_only=True)
class SFTParams(core.RunParams, SFTSettings):
    """Settings plus the run's plumbing: what the worker receives (without a checkpoint_dir nothing is saved)."""


def _gate_label_mask(trainer, tokenizer, rows: list[dict], params: SFTParams) -> dict:
    """Refuse to train when the labels the trainer built would train the wrong tokens."""
    from ft_assets.training.masking import LabelMaskError, check_chat_examples, check_label_mask

    sample = min(len(rows), 64)
    if params.packing:  # packed rows mix examples; check the same tokenization before packing
        report = check_chat_examples(tokenizer, rows, params.max_length, limit=sample)
    else:
        prepared = trainer.train_dataset.select(range(min(sample, len(trainer.train_dataset))))
        replies = [r["completion"][-1]["content"] for r in rows[:len(prepared)]]
        report = check_label_mask(tokenizer, prepared["input_ids"], prepared["labels"], replies, params.max_length)
        if len(trainer.train_dataset) < len(rows):
            raise LabelMaskError(f"the trainer dropped {len(rows) - len(trainer.train_dataset)} examples whose "
                                 "every token was masked: raise max_length or shorten the prompts")
    if not report.passed:
        raise LabelMaskError("label mask gate failed, training refused: " + report.summary())
    return {"examples_checked": report.examples, "mean_trained_share": round(report.mean_trained_share, 4),
            "min_trained_share": round(report.min_trained_share, 4),
            "max_trained_share": round(report.max_trained_share, 4)}


def _share_prompt_prefix(trainer, params: SFTParams) -> dict | str:
    """Wrap the model so each batch's shared prefix runs once (``prefix_sharing``): its live counters, or why
    not."""
    from ft_assets.training.prefix_sharing import share_batch_prefix

    off = [reason for reason, applies in (
        ("share_prompt_prefix is false", not params.share_prompt_prefix),
        ("gradient checkpointing keeps no cache", params.gradient_checkpointing),
        ("packed rows hold several examples", params.packing),
        ("sharded engines (DeepSpeed, FSDP) run the model themselves", bool(params.deepspeed or params.fsdp)),
    ) if applies]
    return "run whole per row: " + off[0] if off else share_batch_prefix(trainer.model)


def _prefix_summary(sharing: dict | str) -> dict | str:
    if isinstance(sharing, str):
        return sharing
    shared = sharing["shared"]
    return {"forward_passes": sharing["forward_passes"], "shared_prefix": shared,
            "mean_prefix_tokens": round(sharing["prefix_tokens"] / shared, 1) if shared else 0.0}


def _chat_rows(path: str, limit: int | None = None) -> list[dict]:
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in read_jsonl(path)]
    return rows[:limit] if limit else rows


def train_sft(params: SFTParams, on_log: Callable[[dict], None] = lambda _: None) -> dict:
    """Train; save the adapter (or full model) + tokenizer to ``output_dir``; return a summary."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    if params.method not in METHODS:
        raise ValueError(f"unknown method {params.method!r}; choose one of {', '.join(METHODS)}")
    core.set_threads(params.num_threads)
    compact_head = core.score_labelled_positions_only()
    rows = _chat_rows(params.train_path)
    if not rows:
        raise ValueError(f"no training examples in {params.train_path}")
    evaluating = bool(params.eval_steps and params.eval_path)
    eval_rows = _chat_rows(params.eval_path, params.eval_max_examples) if evaluating else []
    precision = core.choose_precision(params.precision)
    tokenizer = core.load_tokenizer(params.base_model_dir)
    model = core.load_causal_lm(params.base_model_dir, precision[0], quantize_4bit=params.method == "qlora",
                                gradient_checkpointing=params.gradient_checkpointing)

    checkpoint_dir = Path(params.checkpoint_dir) if params.checkpoint_dir else None
    resume_from = core.last_checkpoint(checkpoint_dir) if checkpoint_dir else None
    resumed_from_step = core.checkpoint_step(resume_from)
    tracker = core.MlflowTracker(params, core.params_for_summary(params),
                                 checkpoint_dir / "mlflow_run_id" if checkpoint_dir else None)
    if checkpoint_dir and core.is_main_process():
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        (checkpoint_dir / "worker.pid").write_text(str(os.getpid()))  # who is training this, for operators
    callback = core.step_metrics_callback(on_log, tracker)

    out = Path(params.output_dir)
    save_steps = params.save_steps if checkpoint_dir else 0
    common = core.common_arguments(
        params, output_dir=str(checkpoint_dir or out / "trainer"), precision=precision[0],
        max_steps=params.max_steps, batch_size=params.per_device_train_batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps, learning_rate=params.learning_rate,
        seed=params.seed, warmup=params.warmup_steps, lr_scheduler_type=params.lr_scheduler_type,
        gradient_checkpointing=params.gradient_checkpointing, save_steps=save_steps)
    args = SFTConfig(
        **{**common, **selection_arguments(params.eval_steps if evaluating else 0, params.keep)},
        max_length=params.max_length,
        packing=params.packing,
        completion_only_loss=True,  # loss on the reply, not on the prompt
    )
    peft = None if params.method == "full" else core.lora_config(
        params.lora_r, params.lora_alpha, params.lora_dropout, params.target_modules, params.method == "dora")
    stopping = selection_callbacks(params.early_stopping_patience if evaluating else 0)
    from ft_assets.training.hpo import trial_callbacks  # optuna only in a study's trials

    reporting = trial_callbacks(params.hpo_trial if evaluating else None)
    trainer_cls = core.with_fsdp_on_cpu(SFTTrainer) if params.fsdp else SFTTrainer
    trainer = trainer_cls(model=model, args=args, train_dataset=Dataset.from_list(rows),
                          eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                          processing_class=tokenizer, peft_config=peft, callbacks=[callback, *stopping, *reporting])
    mask = _gate_label_mask(trainer, tokenizer, rows, params) if params.check_label_mask else {}
    prefix_sharing = _share_prompt_prefix(trainer, params)
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    trainer.save_model(str(out))  # ZeRO-3 / FSDP aware: gathers sharded weights before saving
    if not trainer.is_world_process_zero():
        return {}
    tokenizer.save_pretrained(out)
    shutil.rmtree(out / "trainer", ignore_errors=True)
    for leftover in ("training_args.bin", "README.md"):
        (out / leftover).unlink(missing_ok=True)
    log = trainer.state.log_history
    history = core.history_with_earlier_steps(log, callback.history, resumed_from_step)
    eval_history = core.history_with_earlier_steps(log, callback.eval_history, resumed_from_step, key="eval_loss")
    summary = {
        "method": params.method,
        **core.base_summary(trainer, result, callback, history, precision, params),
        "resumed": bool(resume_from),
        "resumed_from_step": resumed_from_step,
        "examples": len(rows),
        "eval_examples": len(eval_rows),
        "label_mask": mask,
        "lm_head_positions": "labelled only" if compact_head else "all",
        "prompt_prefix": _prefix_summary(prefix_sharing),
        "kept": kept_checkpoint(trainer, params.keep, evaluating, params.early_stopping_patience),
        "params": core.params_for_summary(params),
        **({"hpo_trial": reporting[0].outcome} if reporting else {}),
    }
    summary.update(tracker.finish(summary))
    core.write_summary(out, history, summary, eval_history if evaluating else None)
    return summary


def run_task(params: dict, on_log: Callable[[dict], None]) -> dict:
    """The worker's entry point for ``task="sft"``."""
    return train_sft(SFTParams.from_dict(params), on_log=on_log)
