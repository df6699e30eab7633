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
import resource
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

# DPO's own per-step metrics streamed with the loss when present.
DPO_METRICS = ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "logps/chosen",
               "logps/rejected")


@dataclass
class DPOParams:
    base_model_dir: str
    train_path: str
    output_dir: str
    sft_adapter_dir: str = ""  # the SFT adapter (or fully fine-tuned model); "" trains a fresh LoRA on the base
    eval_path: str = ""  # "" skips the final evaluation
    max_steps: int = 8
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-4
    beta: float = 0.1
    loss_type: str = "sigmoid"
    max_length: int = 512
    seed: int = 0
    logging_steps: int = 1
    gradient_checkpointing: bool = False
    precision: str = "auto"  # auto: bf16 on a GPU that has it, fp32 otherwise; or bf16, fp16, fp32
    deepspeed: dict | None = None  # a DeepSpeed config (the compute resource's), when launched under deepspeed
    # Only for a fresh LoRA (no SFT adapter); with one, its own config is kept.
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"
    num_threads: int = 0  # 0: leave torch's default
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> DPOParams:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


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


# trl 1.16's DPO losses (DPOConfig.loss_type).
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


def validate_dpo(params: DPOParams) -> dict:
    """Fail before any compute when the run cannot work, saying what to change; returns what it found."""
    from ft_assets.training.validate import TrainingConfigError

    if params.loss_type not in LOSS_TYPES:
        raise TrainingConfigError(f"unknown DPO loss_type {params.loss_type!r}; use one of {', '.join(LOSS_TYPES)}")
    if params.beta <= 0:
        raise TrainingConfigError(f"beta must be > 0 (the pull towards the reference), got {params.beta}")
    if params.precision not in ("auto", "bf16", "fp16", "fp32"):
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


def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def _load_policy(params: DPOParams):
    """(model, peft_config or None, what the reference is).

    An SFT adapter is loaded trainable on the base (trl makes the frozen reference copy); a fully
    fine-tuned SFT model, or no SFT at all, gets a fresh LoRA whose reference is that model itself.
    """
    import torch
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM

    sft = Path(params.sft_adapter_dir) if params.sft_adapter_dir else None
    full_sft = sft is not None and not (sft / "adapter_config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(sft if full_sft else params.base_model_dir, dtype=torch.float32)
    if sft and not full_sft:
        return PeftModel.from_pretrained(model, str(sft), is_trainable=True), None, "sft_adapter"
    lora = LoraConfig(r=params.lora_r, lora_alpha=params.lora_alpha, lora_dropout=params.lora_dropout,
                      target_modules=params.target_modules, task_type="CAUSAL_LM")
    return model, lora, "sft_model" if full_sft else "base_model"


def train_dpo(params: DPOParams, on_log: Callable[[dict], None] = lambda _: None) -> dict:
    """Train with DPO; save the adapter + tokenizer to ``output_dir``; return a summary."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    if params.num_threads:
        torch.set_num_threads(params.num_threads)
    validate_dpo(params)
    train_rows = read_pairs(params.train_path)
    eval_rows = read_pairs(params.eval_path) if params.eval_path else []
    tokenizer = AutoTokenizer.from_pretrained(params.base_model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model, peft_config, reference = _load_policy(params)
    cuda = torch.cuda.is_available()
    bf16 = params.precision == "bf16" or (params.precision == "auto" and cuda and torch.cuda.is_bf16_supported())

    started = time.perf_counter()
    history: list[dict] = []

    class StreamMetrics(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            nonlocal started
            started = time.perf_counter()  # tokens/s counts training, not dataset tokenization

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            elapsed = time.perf_counter() - started
            tokens = int(float(logs.get("num_tokens", 0)))
            record = {"step": state.global_step, "loss": float(logs["loss"]),
                      "learning_rate": float(logs.get("learning_rate", 0.0)),
                      "grad_norm": float(logs.get("grad_norm", 0.0)),
                      "num_tokens": tokens, "elapsed_s": round(elapsed, 2),
                      "tokens_per_s": round(tokens / elapsed, 1) if elapsed else 0.0,
                      "peak_memory_mb": _peak_memory_mb()}
            record.update({k: float(logs[k]) for k in DPO_METRICS if k in logs})
            history.append(record)
            on_log(record)

    args = DPOConfig(
        output_dir=str(Path(params.output_dir) / "trainer"),
        max_steps=params.max_steps,
        per_device_train_batch_size=params.per_device_train_batch_size,
        per_device_eval_batch_size=params.per_device_train_batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        learning_rate=params.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=min(5, params.max_steps // 10),
        logging_steps=params.logging_steps,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        seed=params.seed,
        beta=params.beta,
        loss_type=[params.loss_type],
        max_length=params.max_length,
        gradient_checkpointing=params.gradient_checkpointing,
        bf16=bf16,
        fp16=params.precision == "fp16",
        deepspeed=params.deepspeed,
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_cpu=not cuda,
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                         eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                         processing_class=tokenizer, peft_config=peft_config, callbacks=[StreamMetrics()])
    # DPOTrainer drops pairs whose prompt alone fills max_length: say how many instead of losing them silently.
    dropped_too_long = len(train_rows) - len(trainer.train_dataset)
    result = trainer.train()
    train_seconds = time.perf_counter() - started
    eval_metrics = {}
    if eval_rows:
        eval_metrics = {k: float(v) for k, v in trainer.evaluate().items() if isinstance(v, (int, float))}
    out = Path(params.output_dir)
    if trainer.is_world_process_zero():  # under a multi-rank launch, one writer
        # Only the trained adapter: the frozen "ref" copy trl added is the SFT adapter, already an artifact.
        trainer.model.save_pretrained(out, selected_adapters=["default"])
        tokenizer.save_pretrained(out)
        shutil.rmtree(out / "trainer", ignore_errors=True)
    tokens = history[-1]["num_tokens"] if history else 0
    last = history[-1] if history else {}
    summary = {
        "train_loss": float(result.training_loss),
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": last.get("loss"),
        "final_reward_accuracy": last.get("rewards/accuracies"),
        "final_reward_margin": last.get("rewards/margins"),
        "eval_loss": eval_metrics.get("eval_loss"),
        "eval_reward_accuracy": eval_metrics.get("eval_rewards/accuracies"),
        "eval_reward_margin": eval_metrics.get("eval_rewards/margins"),
        "steps": int(result.global_step),
        "pairs": len(train_rows),
        "eval_pairs": len(eval_rows),
        "pairs_dropped_too_long": dropped_too_long,
        "train_tokens": tokens,
        "train_seconds": round(train_seconds, 1),
        "tokens_per_s": round(tokens / train_seconds, 1) if train_seconds else 0.0,
        "peak_memory_mb": _peak_memory_mb(),
        "trainable_parameters": int(sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)),
        "reference": reference,
        "bf16": bool(args.bf16),
        "params": asdict(params),
    }
    if trainer.is_world_process_zero():
        (out / "train_history.json").write_text(json.dumps(history))
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def run_task(params: dict, on_log: Callable[[dict], None]) -> dict:
    """The worker's entry point for ``task="dpo"``."""
    return train_dpo(DPOParams.from_dict(params), on_log=on_log)
