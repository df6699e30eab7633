"""LoRA and QLoRA with DeepSpeed on a GPU, on a ~0.5B model built from a real architecture's config.

Usage: python bench/gpu_train.py [--steps N] [--batch N] [--methods lora qlora] [--arch qwen2-0.5b|llama-0.5b]
Needs CUDA (exits with a reason otherwise). The model is Qwen2.5-0.5B's published architecture (hidden 896,
24 layers, 14 query / 2 key-value heads, MLP 4864, vocab 151936) with random weights: nothing is downloaded, and
throughput does not depend on the weights' values. Each method runs the platform's own worker under the
``deepspeed`` launcher (ZeRO-2, one rank per GPU, precision picked by the platform: bf16 where supported).
Reports tokens/s, peak GPU memory and model FLOPs utilization (MFU = 6 x parameters x tokens/s over the GPU's
dense bf16 peak; the 6N rule counts a full backward, so for LoRA it is the usual upper-bound convention).
The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Dense bf16 tensor-core peaks (TFLOPS) by device name fragment; unknown devices report MFU as null.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100": 989.0,
                    "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0, "RTX 4090": 165.0}

ARCHS = {
    "qwen2-0.5b": {"model_type": "qwen2", "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
                   "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936,
                   "tie_word_embeddings": True, "max_position_embeddings": 32768, "rope_theta": 1000000.0},
    "llama-0.5b": {"model_type": "llama", "hidden_size": 1280, "num_hidden_layers": 24, "num_attention_heads": 20,
                   "num_key_value_heads": 4, "intermediate_size": 3456, "vocab_size": 32000,
                   "tie_word_embeddings": False, "max_position_embeddings": 4096},
}


def peak_tflops(device_name: str) -> float | None:
    for fragment, peak in PEAK_BF16_TFLOPS.items():
        if fragment in device_name:
            return peak
    return None


def build_model(out_dir: Path, arch: str) -> int:
    """Random weights in ``arch``'s shape plus a small ChatML tokenizer; returns the parameter count."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from ft_assets.data.text_to_sql import SCHEMA_SUMMARY, generate_clean_pairs
    from ft_assets.models.base import build_scratch_tokenizer

    tokenizer = build_scratch_tokenizer([SCHEMA_SUMMARY] + [f"{q} {s}" for q, s in generate_clean_pairs(2000)], 4000)
    spec = dict(ARCHS[arch])
    config = AutoConfig.for_model(spec.pop("model_type"), **spec, pad_token_id=tokenizer.pad_token_id,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model.num_parameters()


def write_dataset(path: Path, n: int = 2048) -> None:
    from ft_assets.data.split import to_chat_example
    from ft_assets.data.text_to_sql import generate_clean_pairs

    rows = [to_chat_example({"record_id": f"r{i}", "db_id": "company", "prompt": q, "completion": s})
            for i, (q, s) in enumerate(generate_clean_pairs(n, seed=3))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_method(method: str, model_dir: Path, train: Path, work: Path, steps: int, batch: int) -> dict:
    from ft_assets.training.launch import deepspeed_config, launch_command
    from ft_assets.training.sft import resolve_precision

    params = {"task": "sft", "method": method, "base_model_dir": str(model_dir), "train_path": str(train),
              "output_dir": str(work / method), "max_steps": steps, "per_device_train_batch_size": batch,
              "learning_rate": 2e-4, "max_length": 512, "precision": resolve_precision("auto"),
              "gradient_checkpointing": True, "deepspeed": deepspeed_config(2), "logging_steps": 1}
    params_file = work / f"{method}.json"
    params_file.write_text(json.dumps(params))
    command = launch_command("deepspeed", sys.executable, str(params_file), processes_per_node=1, master_port=29620)
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if done.returncode:
        raise RuntimeError(f"{method} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{\"method\"")]
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--methods", nargs="+", default=["lora", "qlora"])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="qwen2-0.5b")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA GPU on this machine"}))
        return
    device = torch.cuda.get_device_name(0)
    work = Path(tempfile.mkdtemp(prefix="ftops-gpu-train-"))
    parameters = build_model(work / "model", args.arch)
    write_dataset(work / "train.jsonl")
    peak = peak_tflops(device)
    results = {}
    for method in args.methods:
        summary = run_method(method, work / "model", work / "train.jsonl", work, args.steps, args.batch)
        tps = summary["tokens_per_s"]
        results[method] = {"tokens_per_s": tps, "peak_memory_mb": summary["peak_memory_mb"],
                           "mfu": round(6 * parameters * tps / (peak * 1e12), 4) if peak else None,
                           "final_loss": summary["final_loss"], "precision": summary["precision"],
                           "trainable_parameters": summary["trainable_parameters"]}
        print(f"{method}: {tps:.0f} tokens/s, peak {summary['peak_memory_mb']:.0f} MB, MFU {results[method]['mfu']}",
              file=sys.stderr)
    print(json.dumps({"device": device, "arch": args.arch, "parameters": parameters, "steps": args.steps,
                      "batch": args.batch, "zero_stage": 2, "results": results}))


if __name__ == "__main__":
    main()
