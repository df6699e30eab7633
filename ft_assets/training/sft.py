"""LoRA supervised fine-tuning with trl's SFTTrainer: a plain function, no Dagster.

Runs inside the worker process (see ``worker.py``); ``on_log`` receives each
logging step's metrics so the caller can stream them wherever it likes.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class SFTParams:
    base_model_dir: str
    train_path: str
    output_dir: str
    max_steps: int = 40
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"
    max_length: int = 256
    seed: int = 0
    logging_steps: int = 1
    num_threads: int = 0  # 0: leave torch's default
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> SFTParams:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def read_jsonl(path: str | Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def train_sft(params: SFTParams, on_log: Callable[[dict], None] = lambda _: None) -> dict:
    """Train a LoRA adapter; save adapter + tokenizer to ``output_dir``; return a summary."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    if params.num_threads:
        torch.set_num_threads(params.num_threads)
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in read_jsonl(params.train_path)]
    if not rows:
        raise ValueError(f"no training examples in {params.train_path}")
    tokenizer = AutoTokenizer.from_pretrained(params.base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(params.base_model_dir, dtype=torch.float32)

    started = time.perf_counter()
    history: list[dict] = []

    class StreamMetrics(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            elapsed = time.perf_counter() - started
            record = {"step": state.global_step, "loss": float(logs["loss"]),
                      "learning_rate": float(logs.get("learning_rate", 0.0)),
                      "grad_norm": float(logs.get("grad_norm", 0.0)),
                      "num_tokens": int(float(logs.get("num_tokens", 0))),
                      "elapsed_s": round(elapsed, 2)}
            record["tokens_per_s"] = round(record["num_tokens"] / elapsed, 1) if elapsed else 0.0
            history.append(record)
            on_log(record)

    args = SFTConfig(
        output_dir=str(Path(params.output_dir) / "trainer"),
        max_steps=params.max_steps,
        per_device_train_batch_size=params.per_device_train_batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        learning_rate=params.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=min(5, params.max_steps // 10),
        logging_steps=params.logging_steps,
        save_strategy="no",
        report_to=[],
        seed=params.seed,
        max_length=params.max_length,
        completion_only_loss=True,  # loss on the SQL, not on the question
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    lora = LoraConfig(r=params.lora_r, lora_alpha=params.lora_alpha, lora_dropout=params.lora_dropout,
                      target_modules=params.target_modules, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=lora, callbacks=[StreamMetrics()])
    result = trainer.train()
    out = Path(params.output_dir)
    trainer.model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    shutil.rmtree(out / "trainer", ignore_errors=True)
    elapsed = time.perf_counter() - started
    tokens = history[-1]["num_tokens"] if history else 0
    summary = {
        "train_loss": float(result.training_loss),
        "final_loss": history[-1]["loss"] if history else None,
        "first_loss": history[0]["loss"] if history else None,
        "steps": int(result.global_step),
        "examples": len(rows),
        "train_tokens": tokens,
        "train_seconds": round(elapsed, 1),
        "tokens_per_s": round(tokens / elapsed, 1) if elapsed else 0.0,
        "trainable_parameters": int(sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)),
        "bf16": bool(args.bf16),
        "params": asdict(params),
    }
    (out / "train_history.json").write_text(json.dumps(history))
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def run_task(params: dict, on_log: Callable[[dict], None]) -> dict:
    """The worker's entry point for ``task="sft"``."""
    return train_sft(SFTParams.from_dict(params), on_log=on_log)
