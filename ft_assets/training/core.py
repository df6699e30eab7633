"""The training core every trainer (SFT, DPO, GRPO, ...) is a short recipe over. A plain module, no Dagster.

What lives here, once: the run plumbing every trainer takes (``RunParams``), the precision choice (bf16 only on
a GPU or CPU that has it natively), the peak-memory probe, the main-rank test, ZeRO-stage parsing, the peft and
4-bit quantization configs, the base-model loader, the step-metrics callback that streams each logged step (and
each evaluation), the MLflow tracker, the trainer arguments shared by every trl config, the summary written next
to the artifact, and the hash of the training code. Heavy libraries are imported inside the functions, so the
Dagster process that imports this module to build a config never loads torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import time
import typing
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from ft_assets.secrets import redact_url, scrub

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
METHODS = ("lora", "qlora", "dora", "full")
# /proc/cpuinfo flags meaning the CPU computes bf16 natively (x86 AVX-512 BF16 / AMX, Arm's BF16 extension);
# without one, torch emulates bf16 and autocast is slower than fp32.
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
PACKAGE_DIR = Path(__file__).parent


class TrainingConfigError(ValueError):
    """The training config cannot work; the message says what to change."""


@dataclass(kw_only=True)
class RunParams:
    """What every trainer gets besides its recipe's settings: where things are and how the compute runs."""

    base_model_dir: str
    train_path: str
    output_dir: str
    eval_path: str = ""  # held-out rows; "" : no evaluation
    checkpoint_dir: str = ""  # "" : no checkpoints, no resume
    precision: str = "auto"  # auto | bf16 | fp16 | fp32; auto is resolved by choose_precision
    num_threads: int = 0  # 0: leave torch's default
    deepspeed: dict | str | None = None  # a DeepSpeed config dict or JSON path; set by the launcher
    fsdp: dict | None = None  # {"sharding": "full_shard", "cpu_offload": False, ...}; set by the fsdp launcher
    hpo_trial: dict | None = None  # {"study_name", "trial_number", "pruner"}: a study trial (hpo.trial_callbacks)
    mlflow_tracking_uri: str = ""
    mlflow_experiment: str = "ftops"
    run_name: str = ""
    logging_steps: int = 1
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict):
        known = {k: v for k, v in data.items() if k in {f.name for f in fields(cls)}}
        return cls(**known)


def settings_fields(settings_cls: type) -> dict[str, tuple[type, dict]]:
    """``name -> (type, {default | default_factory, description})`` of a settings dataclass, so an asset's
    Config is derived from the recipe's one declaration (``pydantic.create_model``) instead of copying it."""
    hints = typing.get_type_hints(settings_cls)
    out = {}
    for f in fields(settings_cls):
        spec: dict = {"description": f.metadata.get("description")}
        if f.default_factory is not MISSING:
            spec["default_factory"] = f.default_factory
        else:
            spec["default"] = f.default
        out[f.name] = (hints[f.name], spec)
    return out


def setting(default, description: str = ""):
    """A recipe setting with the description the launchpad shows."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"description": description})
    return field(default=default, metadata={"description": description})


def read_jsonl(path: str | Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# --- precision ---------------------------------------------------------------------------------------------

def cpu_native_bf16_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """The native-bf16 flags this CPU reports (empty where it has none or the file is unreadable)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return []
    words: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            words.update(value.split())
    return sorted(flag for flag in NATIVE_BF16_CPU_FLAGS if flag in words)


def choose_precision(requested: str = "auto", cuda: bool | None = None,
                     cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, str]:
    """``(precision, why)``: ``auto`` is bf16 on a CUDA GPU that supports it or a CPU with native bf16
    instructions, fp32 otherwise; anything else is taken as asked."""
    if requested not in PRECISIONS:
        raise TrainingConfigError(f"unknown precision {requested!r}: use one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested, "set in the config"
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda:
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: the GPU supports bf16"
        return "fp32", "auto: the GPU has no bf16"
    flags = cpu_native_bf16_flags(cpuinfo)
    if flags:
        return "bf16", f"auto: the CPU has native bf16 ({', '.join(flags)})"
    return "fp32", "auto: the CPU has no native bf16 (torch would emulate it, slower than fp32)"


def resolve_precision(precision: str) -> str:
    return choose_precision(precision)[0]


def torch_dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


# --- process facts -----------------------------------------------------------------------------------------

def peak_memory_mb() -> float:
    """Peak GPU memory allocated by this process, or its peak resident set size on CPU."""
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def is_main_process() -> bool:
    """Rank 0 of a distributed launch (or the only process): the one that writes and reports."""
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def set_threads(num_threads: int) -> None:
    if num_threads:
        import torch

        torch.set_num_threads(num_threads)


def score_labelled_positions_only() -> bool:
    """Make trl's fused LM head project only the positions that carry a label on CPU too; whether it applies.

    trl scores only labelled positions on Triton devices and every position elsewhere, to keep tile shapes fixed
    for compilers (Neuron). Eager CPU compiles nothing, and with the loss on completions only (a quarter of the
    demo's tokens) the vocabulary projection of every prompt position was wasted, in the forward and again in
    the backward. The per-token results at labelled positions are the same either way.
    """
    try:
        from trl.trainer import utils
    except ImportError:
        return False
    original = getattr(utils, "_use_triton", None)
    if original is None:  # trl moved its internals: keep its behaviour
        return False
    if getattr(original, "cpu_compact", False):
        return True

    def compact_on_cpu(device) -> bool:
        return device.type == "cpu" or original(device)

    compact_on_cpu.cpu_compact = True
    utils._use_triton = compact_on_cpu
    return True


def zero_stage(deepspeed: dict | str | None) -> int | None:
    """The ZeRO stage of a DeepSpeed config (dict or JSON path); ``None`` without DeepSpeed."""
    if not deepspeed:
        return None
    config = deepspeed if isinstance(deepspeed, dict) else json.loads(Path(deepspeed).read_text())
    return int(config.get("zero_optimization", {}).get("stage", 0))


def last_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The newest complete ``checkpoint-N`` folder (transformers writes ``trainer_state.json`` last)."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(done, key=checkpoint_step, default=None)


def checkpoint_step(path: str | Path | None) -> int:
    return int(Path(path).name.split("-")[-1]) if path else 0


# --- models and adapters -----------------------------------------------------------------------------------

def lora_config(r: int = 16, alpha: int = 32, dropout: float = 0.0, target_modules: list[str] | str = "all-linear",
                use_dora: bool = False):
    """A causal-LM LoRA (or DoRA) config; empty ``target_modules`` means every linear layer but the head."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules or "all-linear",
                      use_dora=use_dora, task_type="CAUSAL_LM")


def quantization_config(precision: str):
    """4-bit NF4 with double quantization, computing in ``precision`` (QLoRA's set-up)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch_dtype(precision))


def load_causal_lm(model_dir: str | Path, precision: str, quantize_4bit: bool = False,
                   gradient_checkpointing: bool = False):
    """The model to train: 4-bit NF4 for QLoRA, fp32 weights otherwise (mixed precision keeps fp32 masters)."""
    import torch
    from transformers import AutoModelForCausalLM

    if quantize_4bit:
        from peft import prepare_model_for_kbit_training

        model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quantization_config(precision),
                                                     dtype=torch_dtype(precision))
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


def load_tokenizer(model_dir: str | Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def trainable_parameters(model) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


# --- trainer arguments -------------------------------------------------------------------------------------

def warmup_steps(requested: int, max_steps: int) -> int:
    """-1: a tenth of the run, at most 5 steps."""
    return requested if requested >= 0 else min(5, max_steps // 10)


def fsdp_arguments(fsdp: dict | None, gradient_checkpointing: bool = False) -> dict:
    """TrainingArguments' FSDP2 fields for ``fsdp`` (the fsdp launcher's dict); ``{}`` without FSDP. Weights are
    saved as one full state dict, so the artifact loads like any other."""
    if not fsdp:
        return {}
    return {"fsdp": True,
            "fsdp_config": {"version": 2, "reshard_after_forward": fsdp.get("sharding", "full_shard") == "full_shard",
                            "cpu_offload": bool(fsdp.get("cpu_offload")), "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                            "state_dict_type": "FULL_STATE_DICT", "cpu_ram_efficient_loading": False,
                            "activation_checkpointing": gradient_checkpointing}}


def with_fsdp_on_cpu(trainer_cls: type) -> type:
    """``trainer_cls`` that also shards with FSDP2 on CPU ranks (gloo). accelerate enables its FSDP plugin only
    for GPU-like devices and would silently run plain DDP on CPU; torch's ``fully_shard`` itself runs on CPU,
    so the plugin is switched on there by hand. On a GPU this changes nothing."""

    class CpuFsdpTrainer(trainer_cls):
        def create_accelerator_and_postprocess(self):
            super().create_accelerator_and_postprocess()
            from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

            state = self.accelerator.state
            if (self.args.fsdp_plugin_args is not None and getattr(state, "fsdp_plugin", None) is None
                    and state.distributed_type == DistributedType.MULTI_CPU):
                state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
                state.distributed_type = DistributedType.FSDP
                self.is_fsdp_enabled = True
                self.fsdp_on_cpu = True

        def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
            if not getattr(self, "fsdp_on_cpu", False):
                return super().save_model(output_dir, _internal_call)
            # accelerate's full-state-dict gather hands back views of freed gloo buffers on CPU: gather each
            # sharded tensor on every rank (same order), keep owned copies, write on rank 0.
            from torch.distributed.tensor import DTensor

            state = {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone()
                     for k, v in self.model.state_dict().items()}
            if self.args.should_save:
                self._save(output_dir or self.args.output_dir, state_dict=state)

    CpuFsdpTrainer.__name__ = f"CpuFsdp{trainer_cls.__name__}"
    return CpuFsdpTrainer


def common_arguments(run: RunParams, *, output_dir: str, precision: str, max_steps: int, batch_size: int,
                     gradient_accumulation_steps: int, learning_rate: float, seed: int, warmup: int = -1,
                     lr_scheduler_type: str = "linear", gradient_checkpointing: bool = False, save_steps: int = 0,
                     eval_steps: int = 0, save_total_limit: int | None = 2) -> dict:
    """The keyword arguments every trl config (SFTConfig, DPOConfig, GRPOConfig) takes the same way."""
    import torch

    fsdp = fsdp_arguments(run.fsdp, gradient_checkpointing)
    return {
        "output_dir": output_dir, "max_steps": max_steps, "per_device_train_batch_size": batch_size,
        "per_device_eval_batch_size": batch_size, "gradient_accumulation_steps": gradient_accumulation_steps,
        "learning_rate": learning_rate, "lr_scheduler_type": lr_scheduler_type,
        "warmup_steps": warmup_steps(warmup, max_steps), "logging_steps": run.logging_steps,
        "save_strategy": "steps" if save_steps else "no", "save_steps": save_steps or 500,
        "save_total_limit": save_total_limit,
        "eval_strategy": "steps" if eval_steps else "no", "eval_steps": eval_steps or None,
        "report_to": [], "seed": seed,
        # FSDP does activation checkpointing itself (fsdp_config); the trainer's would wrap twice.
        "gradient_checkpointing": gradient_checkpointing and not fsdp,
        "bf16": precision == "bf16", "fp16": precision == "fp16",
        "deepspeed": run.deepspeed, **fsdp,
        "dataloader_num_workers": 0, "disable_tqdm": True, "use_cpu": not torch.cuda.is_available(),
    }


# --- streaming and tracking --------------------------------------------------------------------------------

class MlflowTracker:
    """Per-step curves into MLflow (rank 0 only); a resumed run continues the same MLflow run."""

    def __init__(self, run: RunParams, logged_params: dict, run_id_file: Path | None = None) -> None:
        self.run = None
        if not run.mlflow_tracking_uri or not is_main_process():
            return
        import mlflow

        mlflow.set_tracking_uri(run.mlflow_tracking_uri)
        mlflow.set_experiment(run.mlflow_experiment)
        previous = run_id_file.read_text().strip() if run_id_file and run_id_file.is_file() else None
        self.run = mlflow.start_run(run_id=previous) if previous else mlflow.start_run(run_name=run.run_name or None)
        if run_id_file:
            run_id_file.parent.mkdir(parents=True, exist_ok=True)
            run_id_file.write_text(self.run.info.run_id)
        if not previous:
            mlflow.log_params(scrub({k: (json.dumps(v) if isinstance(v, (dict, list)) else v)
                                     for k, v in logged_params.items() if k not in ("extra", "deepspeed", "fsdp")}))

    def step(self, record: dict) -> None:
        if self.run:
            import mlflow

            mlflow.log_metrics({k: float(v) for k, v in record.items() if k != "step" and _is_number(v)},
                               step=record["step"])

    def finish(self, summary: dict) -> dict:
        if not self.run:
            return {}
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in summary.items() if _is_number(v)})
        info = self.run.info
        mlflow.end_run()
        return {"mlflow_run_id": info.run_id, "mlflow_experiment_id": info.experiment_id,
                "mlflow_tracking_uri": redact_url(mlflow.get_tracking_uri())}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def step_metrics_callback(sink: Callable[[dict], None], tracker: MlflowTracker | None = None,
                          extra_keys: tuple[str, ...] = ()):
    """A TrainerCallback that turns each logged training step into a record (step, loss, learning rate, grad
    norm, tokens, tokens/s since training began, peak memory, plus ``extra_keys`` when logged) and each
    evaluation during training into ``{"step", "eval_loss", ...}``; both go to ``sink`` and the tracker, rank 0
    only. The callback keeps them in ``.history`` / ``.eval_history``; ``.elapsed()`` is the training time so far."""
    from transformers import TrainerCallback

    class StepMetrics(TrainerCallback):
        def __init__(self) -> None:
            self.history: list[dict] = []
            self.eval_history: list[dict] = []
            self.started = time.perf_counter()
            self.training = False

        def elapsed(self) -> float:
            return time.perf_counter() - self.started

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()  # tokens/s counts training, not dataset tokenization
            self.training = True

        def on_train_end(self, args, state, control, **kwargs):
            self.training = False  # a final trainer.evaluate() is the caller's to report

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or not state.is_world_process_zero:
                return
            if "eval_loss" in logs:
                if not self.training:
                    return
                record = {"step": state.global_step, "eval_loss": float(logs["eval_loss"]),
                          **{k: float(v) for k, v in logs.items() if k.startswith("eval_") and _is_number(v)}}
                self.eval_history.append(record)
            elif "loss" in logs:
                elapsed = self.elapsed()
                tokens = int(float(logs.get("num_tokens", 0)))  # trl counts from this process's start
                record = {"step": state.global_step, "loss": float(logs["loss"]),
                          "learning_rate": float(logs.get("learning_rate", 0.0)),
                          "grad_norm": float(logs.get("grad_norm", 0.0) or 0.0),
                          "num_tokens": tokens, "elapsed_s": round(elapsed, 2),
                          "tokens_per_s": round(tokens / elapsed, 1) if elapsed else 0.0,
                          "peak_memory_mb": peak_memory_mb(),
                          **{k: float(logs[k]) for k in extra_keys if k in logs}}
                self.history.append(record)
            else:
                return
            if tracker:
                tracker.step(record)
            sink(record)

    return StepMetrics()


def history_with_earlier_steps(log_history: list[dict], history: list[dict], resumed_from_step: int,
                               key: str = "loss") -> list[dict]:
    """A resumed run logged only its own steps; the checkpoint's trainer state holds the earlier ones."""
    earlier = [{"step": e["step"], key: float(e[key]),
                **({"learning_rate": float(e.get("learning_rate", 0.0)),
                    "grad_norm": float(e.get("grad_norm", 0.0) or 0.0)} if key == "loss" else {})}
               for e in log_history if key in e and e.get("step", 0) <= resumed_from_step]
    return earlier + [h for h in history if h["step"] > resumed_from_step]


# --- summary -----------------------------------------------------------------------------------------------

def base_summary(trainer, result, callback, history: list[dict], precision: tuple[str, str], run: RunParams) -> dict:
    """The summary fields every trainer reports the same way."""
    elapsed = callback.elapsed()
    tokens = callback.history[-1]["num_tokens"] if callback.history else 0
    return {
        "precision": precision[0],
        "precision_reason": precision[1],
        "train_loss": float(result.training_loss),
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": history[-1]["loss"] if history else None,
        "steps": int(result.global_step),
        "train_tokens": tokens,
        "train_seconds": round(elapsed, 1),
        "tokens_per_s": round(tokens / elapsed, 1) if elapsed else 0.0,
        "peak_memory_mb": peak_memory_mb(),
        "trainable_parameters": trainable_parameters(trainer.model),
        "world_size": int(trainer.args.world_size),
        "num_threads": _torch_threads(),
        "deepspeed_zero_stage": zero_stage(run.deepspeed),
        "fsdp": fsdp_facts(trainer, run),
    }


def fsdp_facts(trainer, run: RunParams) -> dict | None:
    """How the trainer really sharded the model (from accelerate's plugin), ``None`` without FSDP."""
    if not getattr(trainer, "is_fsdp_enabled", False):
        return None
    plugin = trainer.accelerator.state.fsdp_plugin
    from torch.distributed.fsdp import FSDPModule

    sharded = sum(isinstance(m, FSDPModule) for m in trainer.model_wrapped.modules())
    return {"version": int(plugin.fsdp_version), "reshard_after_forward": bool(plugin.reshard_after_forward),
            "cpu_offload": bool((run.fsdp or {}).get("cpu_offload")), "sharded_modules": sharded}


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def write_summary(out: str | Path, history: list[dict], summary: dict, eval_history: list[dict] | None = None) -> None:
    out = Path(out)
    (out / "train_history.json").write_text(json.dumps(history))
    if eval_history is not None:
        (out / "eval_history.json").write_text(json.dumps(eval_history))
    # The summary also travels to Dagster (Pipes) and into cards: no credential from the configuration in it.
    (out / "train_summary.json").write_text(json.dumps(scrub(summary), indent=2, default=str))


def params_for_summary(params) -> dict:
    return scrub({k: v for k, v in asdict(params).items() if k not in ("deepspeed",)})


# --- code version ------------------------------------------------------------------------------------------

def training_code_version(package_dir: Path = PACKAGE_DIR) -> str:
    """A hash of every Python file of the training package, so any change to how training runs retrains while
    an unrelated commit does not."""
    digest = hashlib.sha256()
    for file in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in file.parts:
            continue
        digest.update(file.relative_to(package_dir).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]
