"""Supervised fine-tuning with trl's SFTTrainer: LoRA, QLoRA, DoRA or full. A plain function, no Dagster.

Runs inside the worker process (see ``worker.py``), alone or as one rank under the ``deepspeed`` /
``torchrun`` launcher. ``on_log`` receives each logging step's metrics (rank 0 only) so the caller can stream
them wherever it likes; the same curves go to MLflow when a tracking URI is given. Checkpoints land in
``checkpoint_dir`` every ``save_steps`` steps, and a call that finds one there resumes from it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

METHODS = ("lora", "qlora", "dora", "full")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass
class SFTParams:
    base_model_dir: str
    train_path: str
    output_dir: str
    method: str = "lora"  # lora | qlora (4-bit NF4 base) | dora | full
    max_steps: int = 40
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    lr_scheduler_type: str = "linear"
    warmup_steps: int = -1  # -1: a tenth of max_steps, at most 5
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"  # peft's "all-linear": every Linear but the output head
    max_length: int = 256
    packing: bool = False
    gradient_checkpointing: bool = False
    precision: str = "auto"  # auto: bf16 on a GPU that has it, fp32 otherwise
    seed: int = 0
    logging_steps: int = 1
    num_threads: int = 0  # 0: leave torch's default
    checkpoint_dir: str = ""  # "" : no checkpoints, no resume
    save_steps: int = 0
    deepspeed: dict | str | None = None  # a DeepSpeed config dict or JSON path; set by the launcher
    check_label_mask: bool = True
    mlflow_tracking_uri: str = ""
    mlflow_experiment: str = "ftops"
    run_name: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> SFTParams:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def read_jsonl(path: str | Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def resolve_precision(precision: str) -> str:
    """``auto`` becomes bf16 on a CUDA GPU that supports it, else fp32 (CPU autocast is opt-in)."""
    import torch

    if precision != "auto":
        return precision
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def peak_memory_mb() -> float:
    """Peak GPU memory allocated by this process, or its peak resident set size on CPU."""
    import resource

    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def last_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The newest complete ``checkpoint-N`` folder (transformers writes ``trainer_state.json`` last)."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def load_model(params: SFTParams, precision: str):
    """The base model for ``params.method``: 4-bit NF4 for QLoRA, full precision otherwise."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    compute_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    if params.method == "qlora":
        from peft import prepare_model_for_kbit_training

        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=compute_dtype)
        model = AutoModelForCausalLM.from_pretrained(params.base_model_dir, quantization_config=quant,
                                                     dtype=compute_dtype)
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=params.gradient_checkpointing)
    # Weights stay fp32 under mixed precision: the optimizer keeps full-precision masters.
    return AutoModelForCausalLM.from_pretrained(params.base_model_dir, dtype=torch.float32)


def peft_config(params: SFTParams):
    """The adapter for LoRA / QLoRA / DoRA; ``None`` for a full fine-tune."""
    if params.method == "full":
        return None
    from peft import LoraConfig

    return LoraConfig(r=params.lora_r, lora_alpha=params.lora_alpha, lora_dropout=params.lora_dropout,
                      target_modules=params.target_modules, use_dora=params.method == "dora", task_type="CAUSAL_LM")


class _Tracker:
    """Per-step curves into MLflow (rank 0 only); a resumed run continues the same MLflow run."""

    def __init__(self, params: SFTParams, run_id_file: Path | None) -> None:
        self.run = None
        if not params.mlflow_tracking_uri or not is_main_process():
            return
        import mlflow

        mlflow.set_tracking_uri(params.mlflow_tracking_uri)
        mlflow.set_experiment(params.mlflow_experiment)
        previous = run_id_file.read_text().strip() if run_id_file and run_id_file.is_file() else None
        self.run = mlflow.start_run(run_id=previous) if previous else mlflow.start_run(
            run_name=params.run_name or None)
        if run_id_file:
            run_id_file.parent.mkdir(parents=True, exist_ok=True)
            run_id_file.write_text(self.run.info.run_id)
        if not previous:
            flat = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in asdict(params).items()
                    if k not in ("extra", "deepspeed")}
            mlflow.log_params(flat)

    def step(self, record: dict) -> None:
        if self.run:
            import mlflow

            mlflow.log_metrics({k: float(v) for k, v in record.items() if k not in ("step",)}, step=record["step"])

    def finish(self, summary: dict) -> dict:
        if not self.run:
            return {}
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in summary.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None})
        info = self.run.info
        mlflow.end_run()
        return {"mlflow_run_id": info.run_id, "mlflow_experiment_id": info.experiment_id,
                "mlflow_tracking_uri": mlflow.get_tracking_uri()}


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


def train_sft(params: SFTParams, on_log: Callable[[dict], None] = lambda _: None) -> dict:
    """Train; save the adapter (or full model) + tokenizer to ``output_dir``; return a summary."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    if params.method not in METHODS:
        raise ValueError(f"unknown method {params.method!r}; choose one of {', '.join(METHODS)}")
    if params.num_threads:
        torch.set_num_threads(params.num_threads)
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in read_jsonl(params.train_path)]
    if not rows:
        raise ValueError(f"no training examples in {params.train_path}")
    precision = resolve_precision(params.precision)
    tokenizer = AutoTokenizer.from_pretrained(params.base_model_dir)
    model = load_model(params, precision)

    checkpoint_dir = Path(params.checkpoint_dir) if params.checkpoint_dir else None
    resume_from = last_checkpoint(checkpoint_dir) if checkpoint_dir else None
    resumed_from_step = int(resume_from.name.split("-")[-1]) if resume_from else 0
    tracker = _Tracker(params, checkpoint_dir / "mlflow_run_id" if checkpoint_dir else None)
    if checkpoint_dir and is_main_process():
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        (checkpoint_dir / "worker.pid").write_text(str(os.getpid()))  # who is training this, for operators
    history: list[dict] = []
    clock = {"started": time.perf_counter()}

    class StreamMetrics(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock["started"] = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs or not state.is_world_process_zero:
                return
            elapsed = time.perf_counter() - clock["started"]
            # trl counts tokens from this process's start, so a resumed run's rate is its own.
            tokens = int(float(logs.get("num_tokens", 0)))
            record = {"step": state.global_step, "loss": float(logs["loss"]),
                      "learning_rate": float(logs.get("learning_rate", 0.0)),
                      "grad_norm": float(logs.get("grad_norm", 0.0) or 0.0),
                      "num_tokens": tokens, "elapsed_s": round(elapsed, 2),
                      "tokens_per_s": round(tokens / elapsed, 1) if elapsed else 0.0,
                      "peak_memory_mb": peak_memory_mb()}
            history.append(record)
            tracker.step(record)
            on_log(record)

    save = bool(checkpoint_dir and params.save_steps)
    args = SFTConfig(
        output_dir=str(checkpoint_dir or Path(params.output_dir) / "trainer"),
        max_steps=params.max_steps,
        per_device_train_batch_size=params.per_device_train_batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        learning_rate=params.learning_rate,
        lr_scheduler_type=params.lr_scheduler_type,
        warmup_steps=params.warmup_steps if params.warmup_steps >= 0 else min(5, params.max_steps // 10),
        logging_steps=params.logging_steps,
        save_strategy="steps" if save else "no",
        save_steps=params.save_steps or 500,
        save_total_limit=2,
        report_to=[],
        seed=params.seed,
        max_length=params.max_length,
        packing=params.packing,
        completion_only_loss=True,  # loss on the reply, not on the prompt
        gradient_checkpointing=params.gradient_checkpointing,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        deepspeed=params.deepspeed,
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=peft_config(params), callbacks=[StreamMetrics()])
    mask = _gate_label_mask(trainer, tokenizer, rows, params) if params.check_label_mask else {}
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    out = Path(params.output_dir)
    trainer.save_model(str(out))  # ZeRO-3 aware: gathers sharded weights before saving
    if not trainer.is_world_process_zero():
        return {}
    tokenizer.save_pretrained(out)
    shutil.rmtree(out / "trainer", ignore_errors=True)
    for leftover in ("training_args.bin", "README.md"):
        (out / leftover).unlink(missing_ok=True)
    elapsed = time.perf_counter() - clock["started"]
    tokens = history[-1]["num_tokens"] if history else 0
    # A resumed run logged only its own steps; the checkpoint's trainer state holds the earlier ones.
    earlier = [{"step": e["step"], "loss": float(e["loss"]), "learning_rate": float(e.get("learning_rate", 0.0)),
                "grad_norm": float(e.get("grad_norm", 0.0) or 0.0)}
               for e in trainer.state.log_history if "loss" in e and e.get("step", 0) <= resumed_from_step]
    history = earlier + [h for h in history if h["step"] > resumed_from_step]
    summary = {
        "method": params.method,
        "precision": precision,
        "train_loss": float(result.training_loss),
        "final_loss": history[-1]["loss"] if history else None,
        "first_loss": history[0]["loss"] if history else None,
        "steps": int(result.global_step),
        "resumed": bool(resume_from),
        "resumed_from_step": resumed_from_step,
        "examples": len(rows),
        "train_tokens": tokens,
        "train_seconds": round(elapsed, 1),
        "tokens_per_s": round(tokens / elapsed, 1) if elapsed else 0.0,
        "peak_memory_mb": peak_memory_mb(),
        "trainable_parameters": int(sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)),
        "world_size": int(args.world_size),
        "deepspeed_zero_stage": _zero_stage(params.deepspeed),
        "label_mask": mask,
        "params": {k: v for k, v in asdict(params).items() if k != "deepspeed"},
    }
    summary.update(tracker.finish(summary))
    (out / "train_history.json").write_text(json.dumps(history))
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _zero_stage(deepspeed: dict | str | None) -> int | None:
    if not deepspeed:
        return None
    config = deepspeed if isinstance(deepspeed, dict) else json.loads(Path(deepspeed).read_text())
    return int(config.get("zero_optimization", {}).get("stage", 0))


def run_task(params: dict, on_log: Callable[[dict], None]) -> dict:
    """The worker's entry point for ``task="sft"``."""
    return train_sft(SFTParams.from_dict(params), on_log=on_log)
