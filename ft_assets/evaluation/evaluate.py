"""Evaluate causal LMs on the eval split: greedy generation, SQL metrics, perplexity."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from ft_assets.evaluation.report import rouge_l
from ft_assets.evaluation.sql_metrics import exact_match, execution_match, extract_sql


@dataclass
class GenerationSettings:
    max_new_tokens: int = 64
    batch_size: int = 32


def load_variant(kind: str, model_dir: Path, base_dir: Path | None = None):
    """Load (model, tokenizer) for a variant: base, adapter (base + LoRA), merged or quantized."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if kind == "adapter":
        from ft_assets.models.merge import load_trained

        model = load_trained(base_dir, model_dir)
    elif kind == "quantized":
        device_map = "auto" if torch.cuda.is_available() else "cpu"
        model = AutoModelForCausalLM.from_pretrained(model_dir, device_map=device_map)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _prompt_texts(tokenizer, rows: list[dict]) -> list[str]:
    return [tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]


def generate(model, tokenizer, rows: list[dict], settings: GenerationSettings) -> list[str]:
    import torch

    outputs: list[str] = []
    texts = _prompt_texts(tokenizer, rows)
    for start in range(0, len(texts), settings.batch_size):
        batch = tokenizer(texts[start:start + settings.batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=settings.max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        new_tokens = out[:, batch["input_ids"].shape[1]:]
        outputs.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return outputs


def completion_perplexity(model, tokenizer, rows: list[dict], batch_size: int = 16) -> float:
    """exp(mean NLL) of the gold completion tokens (the end-of-turn token included), prompt masked.

    Rows are left-padded, so every completion sits at the end of its row and
    only the last positions need logits (``logits_to_keep``): the vocabulary
    projection over prompt tokens was most of this function's time.
    """
    import torch

    tokenizer.padding_side = "left"
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        fulls = [tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False) for r in chunk]
        prompts = _prompt_texts(tokenizer, chunk)
        prompt_lens = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        enc = tokenizer(fulls, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        width = enc["input_ids"].shape[1]
        completion_lens = [int(n) - p for n, p in zip(enc["attention_mask"].sum(1).tolist(), prompt_lens, strict=True)]
        keep = max(completion_lens) + 1
        with torch.inference_mode():
            logits = model(**enc, logits_to_keep=keep).logits.float()[:, :-1]
        targets = enc["input_ids"][:, width - keep + 1:].clone()
        for i, n in enumerate(completion_lens):
            targets[i, : keep - 1 - n] = -100  # positions before this row's completion
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                                ignore_index=-100, reduction="sum")
        total_nll += float(nll)
        total_tokens += int((targets != -100).sum())
    return math.exp(total_nll / max(total_tokens, 1))


def evaluate_model(model, tokenizer, rows: list[dict], db_path: Path, settings: GenerationSettings) -> dict:
    """Metrics plus per-example predictions for one model on ``rows``."""
    started = time.perf_counter()
    generations = generate(model, tokenizer, rows, settings)
    gen_seconds = time.perf_counter() - started
    examples, em, ex, rouge = [], 0, 0, 0.0
    for row, generated in zip(rows, generations, strict=True):
        gold = row["completion"][0]["content"]
        predicted = extract_sql(generated)
        is_em, is_ex = exact_match(predicted, gold), execution_match(db_path, predicted, gold)
        score = rouge_l(predicted, gold)
        em, ex, rouge = em + is_em, ex + is_ex, rouge + score
        examples.append({"record_id": row["record_id"], "question": row["prompt"][-1]["content"],
                         "gold": gold, "generated": generated, "predicted": predicted,
                         "exact_match": is_em, "execution_match": is_ex, "rouge_l": round(score, 4)})
    n = max(len(rows), 1)
    metrics = {"exact_match": em / n, "execution_accuracy": ex / n, "rouge_l": rouge / n,
               "perplexity": completion_perplexity(model, tokenizer, rows),
               "n": len(rows), "generation_seconds": round(gen_seconds, 1)}
    return {"metrics": metrics, "examples": examples}


def markdown_table(models: dict[str, dict]) -> str:
    lines = ["| model | exact match | execution accuracy | ROUGE-L | perplexity | n |", "|---|---|---|---|---|---|"]
    for name, m in models.items():
        lines.append(f"| {name} | {m['exact_match']:.3f} | {m['execution_accuracy']:.3f} | "
                     f"{m.get('rouge_l', float('nan')):.3f} | {m['perplexity']:.3f} | {m['n']} |")
    return "\n".join(lines)
