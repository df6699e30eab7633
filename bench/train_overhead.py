"""The platform's training overhead: the same small SFT config run by a plain trl script and through the
``sft_adapter`` asset (Dagster run, config validation, label-mask gate, Pipes streaming, MLflow, checkpoints), side
by side in one run, alternating, each in a fresh process.

Usage: python bench/train_overhead.py [--model scratch|smollm2] [--steps N] [--repeats N] [--threads N]
The last line is a JSON object with ``plain_tokens_per_s`` (stock trl), ``plain_same_head_tokens_per_s`` (stock trl
plus the one compute change the platform makes: the LM head projects only labelled positions, see
``core.score_labelled_positions_only``), ``platform_tokens_per_s``, ``ratio`` = platform over plain with the same
head, the overhead (target: ratio >= 0.95), and ``ratio_vs_stock_trl``; those platform runs have
``share_prompt_prefix`` off, so both sides do the same work. A fourth side runs the platform's default (each
batch's shared prompt prefix once: ``platform_shared_prefix_tokens_per_s``, ``shared_prefix_speedup`` over the
same platform without it, counting the same tokens). All sides run the same precision (the
platform's ``auto`` choice, resolved once here and passed to all), batch, sequence length, steps and torch thread
count; the JSON records them with the CPU's native-bf16 flags. The same run measures this machine's fp32 (and, when
training in bf16, bf16) matmul FLOP/s and prints the training's model FLOPs utilization: 6 x parameters x tokens/s
(the usual dense-training count; LoRA skips the frozen weights' gradients, so its real work is nearer 4 x) over the
measured matmul rate, and the same for eval generation (greedy, batched as ``eval_report`` does it; 2 x parameters
per processed token, prompt and generated, over the fp32 rate: decoding one token at a time is memory-bound, so
expect it low). Both figures are the tokens trl counted over the seconds from the trainer's ``on_train_begin`` to
the saved adapter, so the platform's per-step costs (Pipes messages, MLflow logging, checkpoints) count against it.
Wall seconds from launch to saved adapter (process start, model load, the platform's validation and label-mask
gate, Dagster's run) are printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PLAIN_SCRIPT = r'''
import json, sys, time
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import SFTConfig, SFTTrainer


class Clock(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()


cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["num_threads"])
if cfg.get("labelled_positions_head"):
    # The one compute change the platform makes to stock trl (core.score_labelled_positions_only): the LM head
    # projects only the positions that carry a label on CPU too, as trl does on Triton devices.
    from trl.trainer import utils as trl_utils
    stock = trl_utils._use_triton
    trl_utils._use_triton = lambda device: device.type == "cpu" or stock(device)
rows = [json.loads(line) for line in open(cfg["train_path"])]
rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
tokenizer = AutoTokenizer.from_pretrained(cfg["base_model_dir"])
model = AutoModelForCausalLM.from_pretrained(cfg["base_model_dir"], dtype=torch.float32)
args = SFTConfig(output_dir=cfg["output_dir"], max_steps=cfg["max_steps"],
                 per_device_train_batch_size=cfg["per_device_train_batch_size"], learning_rate=cfg["learning_rate"],
                 lr_scheduler_type="linear", warmup_steps=min(5, cfg["max_steps"] // 10), logging_steps=1,
                 save_strategy="no", report_to=[], seed=0, max_length=cfg["max_length"], completion_only_loss=True,
                 gradient_checkpointing=False, dataloader_num_workers=0, disable_tqdm=True, use_cpu=True,
                 bf16=cfg["precision"] == "bf16")
lora = LoraConfig(r=cfg["lora_r"], lora_alpha=cfg["lora_alpha"], target_modules="all-linear", task_type="CAUSAL_LM")
trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                     peft_config=lora, callbacks=[clock := Clock()])
trainer.train()
trainer.save_model(cfg["output_dir"])
seconds = time.perf_counter() - clock.started
tokens = trainer._total_train_tokens
print(json.dumps({"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}))
'''


def build_inputs(work: Path, model: str) -> tuple[Path, Path]:
    from ft_assets.data.split import to_chat_example
    from ft_assets.data.text_to_sql import SCHEMA_SUMMARY, generate_clean_pairs
    from ft_assets.models.base import ScratchSpec, from_gguf, from_scratch
    from resources.paths import default_gguf_path

    model_dir = work / "model"
    if model == "smollm2":
        from_gguf(default_gguf_path(), model_dir)
    else:
        corpus = [SCHEMA_SUMMARY] + [f"{q} {s}" for q, s in generate_clean_pairs(2000, seed=1)]
        from_scratch(ScratchSpec(hidden_size=256, num_hidden_layers=4, vocab_size=2000, corpus=corpus), model_dir)
    dataset = work / "sft_dataset"
    dataset.mkdir()
    rows = [to_chat_example({"record_id": f"r{i}", "db_id": "company", "prompt": q, "completion": s})
            for i, (q, s) in enumerate(generate_clean_pairs(512, seed=3))]
    (dataset / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model_dir, dataset


def run_plain(cfg: dict) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PLAIN_SCRIPT, json.dumps(cfg)], capture_output=True, text=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - started}


def run_platform(cfg: dict, model_dir: Path, dataset: Path, root: Path, share_prompt_prefix: bool) -> dict:
    from dagster import AssetKey, AssetMaterialization, AssetSpec, DagsterInstance, materialize

    from ft_assets.training.assets import sft_adapter
    from resources import ArtifactIOManager, ArtifactStore, TrainingCompute

    started = time.perf_counter()
    instance = DagsterInstance.ephemeral()
    for name, path in (("base_model", model_dir), ("sft_dataset", dataset)):
        instance.report_runless_asset_event(AssetMaterialization(
            asset_key=name, metadata={"path": str(path), "version": f"{name}-bench"}))
    settings = {k: cfg[k] for k in ("max_steps", "per_device_train_batch_size", "learning_rate", "max_length",
                                    "lora_r", "lora_alpha")}
    result = materialize(
        [sft_adapter, AssetSpec("base_model"), AssetSpec("sft_dataset")], instance=instance,
        resources={"artifact_store": ArtifactStore(root=str(root)), "io_manager": ArtifactIOManager(),
                   "training_compute": TrainingCompute(mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db",
                                                       precision=cfg["precision"], num_threads=cfg["num_threads"])},
        run_config={"ops": {"sft_adapter": {"config": {**settings, "reuse_identical": False,
                                                       "share_prompt_prefix": share_prompt_prefix}}}})
    assert result.success
    metadata = instance.get_latest_materialization_event(AssetKey("sft_adapter")).asset_materialization.metadata
    return {"tokens": metadata["train_tokens"].value, "seconds": metadata["train_seconds"].value,
            "tokens_per_s": metadata["tokens_per_s"].value, "wall_s": time.perf_counter() - started}


def matmul_flops_per_s(dtype_name: str, threads: int, size: int = 1024, seconds: float = 2.0) -> float:
    """This machine's dense matmul rate at ``threads`` torch threads (the best of repeated size^3 products)."""
    import torch

    torch.set_num_threads(threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - started))
    return best


def generation_rate(model_dir: Path, train_path: Path, threads: int, rows: int = 64) -> dict:
    """Eval generation as ``eval_report`` runs it (``evaluate.generate``: greedy, batch 32, the prompts' shared
    prefix run once, the longest reference + 8 new tokens) on ``rows`` examples: the positions the model ran per
    second (the prefix once, then each batch's width past it x rows, padding and rows already finished included:
    that is the work done) and their forward FLOPs (2 x parameters per position)."""
    import torch

    from ft_assets.evaluation.evaluate import GenerationSettings, generate, load_variant, reference_token_budget

    torch.set_num_threads(threads)
    examples = [json.loads(line) for line in train_path.read_text().splitlines()[:rows]]
    model, tokenizer = load_variant("base", model_dir)
    settings = GenerationSettings(reference_token_budget(tokenizer, examples, margin=8), 32)  # eval's defaults
    shapes, original = [], model.generate

    def counted(**kwargs):  # the batch's prompt width and the generated width, as the model ran them
        cached = kwargs["cache"].get_seq_length() if kwargs.get("cache") is not None else 0  # the shared prefix
        out = original(**kwargs)
        width = kwargs["input_ids"].shape[1]
        shapes.append((out.shape[0], width - cached, out.shape[1] - width, cached))
        return out

    model.generate = counted
    started = time.perf_counter()
    generate(model, tokenizer, examples, settings)
    seconds = time.perf_counter() - started
    # Each batch's own prompt positions, plus the shared prefix, which ran once (batch 1) before them.
    prompt_positions = sum(b * w for b, w, _, _ in shapes) + max((c for *_, c in shapes), default=0)
    decoded_positions = sum(b * n for b, _, n, _ in shapes)
    positions = prompt_positions + decoded_positions
    return {"rows": len(examples), "max_new_tokens": settings.max_new_tokens, "prompt_positions": prompt_positions,
            "decoded_positions": decoded_positions, "seconds": round(seconds, 2),
            "positions_per_s": round(positions / seconds, 1),
            "flops_per_s": 2 * model.num_parameters() * positions / seconds}


def parameter_count(model_dir: Path) -> int:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir).num_parameters()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["scratch", "smollm2"], default="scratch")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads on both sides; 0: all cores")
    args = parser.parse_args()
    from ft_assets.training.core import choose_precision, cpu_native_bf16_flags

    precision, why = choose_precision("auto")
    threads = args.threads or os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="ftops-train-overhead-"))
    model_dir, dataset = build_inputs(work, args.model)
    cfg = {"base_model_dir": str(model_dir), "train_path": str(dataset / "train.jsonl"), "max_steps": args.steps,
           "per_device_train_batch_size": 8, "learning_rate": 1e-3, "max_length": 256, "lora_r": 16,
           "lora_alpha": 32, "precision": precision, "num_threads": threads}
    plain, same_head, platform, shared = [], [], [], []
    for i in range(args.repeats):  # alternate, so drift in machine load hits every side alike
        plain.append(run_plain({**cfg, "output_dir": str(work / f"plain{i}")}))
        same_head.append(run_plain({**cfg, "output_dir": str(work / f"same_head{i}"), "labelled_positions_head": True}))
        platform.append(run_platform(cfg, model_dir, dataset, work / f"platform{i}", share_prompt_prefix=False))
        shared.append(run_platform(cfg, model_dir, dataset, work / f"shared{i}", share_prompt_prefix=True))
        print(f"repeat {i + 1}: " + "; ".join(
            f"{name} {runs[-1]['tokens_per_s']:.1f} tok/s ({runs[-1]['tokens']} tokens), {runs[-1]['wall_s']:.0f}s wall"
            for name, runs in (("plain", plain), ("plain + labelled-positions head", same_head),
                               ("platform", platform), ("platform, shared prefix", shared))), file=sys.stderr)
    plain_tps = statistics.median(r["tokens_per_s"] for r in plain)
    same_head_tps = statistics.median(r["tokens_per_s"] for r in same_head)
    platform_tps = statistics.median(r["tokens_per_s"] for r in platform)
    shared_tps = statistics.median(r["tokens_per_s"] for r in shared)
    fp32_rate = matmul_flops_per_s("fp32", threads)
    peak = matmul_flops_per_s("bf16", threads) if precision == "bf16" else fp32_rate
    params = parameter_count(model_dir)
    gen = generation_rate(model_dir, dataset / "train.jsonl", threads)
    print(json.dumps({"model": args.model, "parameters": params, "steps": args.steps, "repeats": args.repeats,
                      "precision": precision, "precision_reason": why, "cpu_native_bf16": cpu_native_bf16_flags(),
                      "num_threads": threads, "batch": cfg["per_device_train_batch_size"],
                      "max_length": cfg["max_length"],
                      "fp32_matmul_gflops": round(fp32_rate / 1e9, 1),
                      "peak_matmul_gflops": round(peak / 1e9, 1),
                      "platform_mfu": round(6 * params * platform_tps / peak, 4),
                      "plain_mfu": round(6 * params * plain_tps / peak, 4),
                      "generation": {k: v for k, v in gen.items() if k != "flops_per_s"},
                      "generation_mfu": round(gen["flops_per_s"] / fp32_rate, 4),
                      "plain_tokens_per_s": round(plain_tps, 1),
                      "plain_same_head_tokens_per_s": round(same_head_tps, 1),
                      "platform_tokens_per_s": round(platform_tps, 1),
                      # The overhead: the platform against plain trl doing the same compute.
                      "ratio": round(platform_tps / same_head_tps, 3),
                      "ratio_vs_stock_trl": round(platform_tps / plain_tps, 3),
                      # The default config: each batch's shared prompt prefix runs once (same loss, less work).
                      "platform_shared_prefix_tokens_per_s": round(shared_tps, 1),
                      "shared_prefix_speedup": round(shared_tps / platform_tps, 3),
                      "shared_prefix_vs_stock_trl": round(shared_tps / plain_tps, 3),
                      "plain_wall_s": round(statistics.median(r["wall_s"] for r in plain), 1),
                      "platform_wall_s": round(statistics.median(r["wall_s"] for r in platform), 1)}))


if __name__ == "__main__":
    main()
