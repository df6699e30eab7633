"""Merged model vs each quantized variant: size, load time, generation tokens/s and metric deltas.

Usage: python bench/quantize.py [--merged DIR] [--eval-jsonl FILE] [--examples N]
Defaults to the latest demo artifacts (run `make demo` first). Everything is
measured side by side in one run; the last line is a JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ft_assets.data.text_to_sql import build_database  # noqa: E402
from ft_assets.evaluation.evaluate import GenerationSettings, evaluate_model  # noqa: E402
from ft_assets.lineage.artifacts import latest  # noqa: E402
from ft_assets.models.quantize import METHODS, dir_size_bytes, quantize, unavailable_reason  # noqa: E402
from ft_assets.training.sft import read_jsonl  # noqa: E402
from resources.paths import default_artifact_root  # noqa: E402


def load(path: Path, quantized: bool):
    if quantized:
        return AutoModelForCausalLM.from_pretrained(path, device_map="auto" if torch.cuda.is_available() else "cpu")
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def median_load_seconds(path: Path, quantized: bool, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model = load(path, quantized)
        times.append(time.perf_counter() - started)
        del model
        gc.collect()
    return round(statistics.median(times), 3)


def generation_tokens_per_s(model, tokenizer, rows: list[dict], new_tokens: int = 32) -> float:
    """Greedy decoding of exactly ``new_tokens`` tokens for a batch of eval prompts (EOS ignored)."""
    texts = [tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    with torch.inference_mode():
        started = time.perf_counter()
        model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                       pad_token_id=tokenizer.pad_token_id)
        elapsed = time.perf_counter() - started
    return round(len(rows) * new_tokens / elapsed, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--merged", type=Path)
    parser.add_argument("--eval-jsonl", type=Path)
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    args = parser.parse_args()
    root = Path(default_artifact_root())
    merged_dir = args.merged or getattr(latest(root, "merged_model"), "path", None)
    eval_path = args.eval_jsonl or (getattr(latest(root, "sft_dataset"), "path", Path("/nonexistent")) / "eval.jsonl")
    if merged_dir is None or not Path(merged_dir).is_dir() or not eval_path.is_file():
        sys.exit("no merged model / eval split: run `make demo` first or pass --merged and --eval-jsonl")
    rows = read_jsonl(eval_path)[: args.examples]
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db_path = build_database(Path(tmp) / "company.sqlite")
        variants = {"merged": (Path(merged_dir), False, None)}
        for method in args.methods:
            reason = unavailable_reason(method)
            if reason:
                results[method] = {"skipped": reason}
                continue
            out = Path(tmp) / method
            info = quantize(method, Path(merged_dir), out, [" ".join(m["content"] for m in r["prompt"]) for r in rows])
            variants[method] = (out, True, info["quantize_seconds"])
        for name, (path, quantized, quantize_seconds) in variants.items():
            print(f"measuring {name} ...", file=sys.stderr)
            load_s = median_load_seconds(path, quantized)
            model = load(path, quantized)
            tps = generation_tokens_per_s(model, tokenizer, rows[:16])
            metrics = evaluate_model(model, tokenizer, rows, db_path, GenerationSettings(48, 16))["metrics"]
            results[name] = {"size_mb": round(dir_size_bytes(path) / 1e6, 1), "load_s": load_s,
                             "generate_tokens_per_s": tps, "quantize_s": quantize_seconds,
                             **{k: round(metrics[k], 4) for k in ("exact_match", "execution_accuracy", "perplexity")}}
            del model
            gc.collect()
    merged = results["merged"]
    for name, r in results.items():
        if name != "merged" and "skipped" not in r:
            r["size_ratio"] = round(r["size_mb"] / merged["size_mb"], 3)
            r["tokens_per_s_ratio"] = round(r["generate_tokens_per_s"] / merged["generate_tokens_per_s"], 3)
            r["exact_match_delta"] = round(r["exact_match"] - merged["exact_match"], 4)
            r["perplexity_delta"] = round(r["perplexity"] - merged["perplexity"], 4)
    for name, r in results.items():
        print(f"{name:10s} {r}")
    print(json.dumps({"device": "cuda" if torch.cuda.is_available() else "cpu", "examples": len(rows),
                      "variants": results}))


if __name__ == "__main__":
    main()
