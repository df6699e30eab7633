"""Evaluate causal LMs on the eval split: greedy generation, the task's scorers, perplexity."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from ft_assets.evaluation.shared_prefix import SharedPrefix


@dataclass
class GenerationSettings:
    max_new_tokens: int = 64
    batch_size: int = 32
    share_prefix: bool = True  # the prompts' common prefix runs once (``SharedPrefix``)


def load_variant(kind: str, model_dir: Path, base_dir: Path | None = None):
    """Load (model, tokenizer) for a variant: base, adapter (base + LoRA), merged or quantized."""
    import torch
    from transformers import AutoModelForCausalLM

    if kind == "adapter":
        from ft_assets.models.merge import load_trained

        model = load_trained(base_dir, model_dir)
    elif kind == "quantized":
        device_map = "auto" if torch.cuda.is_available() else "cpu"
        model = AutoModelForCausalLM.from_pretrained(model_dir, device_map=device_map)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    return model, load_tokenizer(model_dir)


def load_tokenizer(model_dir: Path):
    """A variant's tokenizer, left-padded for batched generation."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _prompt_texts(tokenizer, rows: list[dict]) -> list[str]:
    return [tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]


def _token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def _prefix(model, sequences: list[list[int]], share: bool) -> SharedPrefix:
    return SharedPrefix.prefill(model, sequences) if share else SharedPrefix()


def generate(model, tokenizer, rows: list[dict], settings: GenerationSettings) -> list[str]:
    """Greedy completions of the rows' prompts, in batches; the prompts' shared prefix runs once."""
    import torch

    outputs: list[str] = []
    prompts = _token_ids(tokenizer, _prompt_texts(tokenizer, rows))
    prefix = _prefix(model, prompts, settings.share_prefix)
    for start in range(0, len(prompts), settings.batch_size):
        batch = prefix.batch(prompts[start:start + settings.batch_size], tokenizer.pad_token_id, model.device)
        cache = {"cache": batch["cache"]} if batch["cache"] is not None else {}
        with torch.inference_mode():
            out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **cache,
                                 max_new_tokens=settings.max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        new_tokens = out[:, batch["input_ids"].shape[1]:]
        outputs.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return outputs


def completion_perplexity(model, tokenizer, rows: list[dict], batch_size: int = 16,
                          share_prefix: bool = True) -> float:
    """exp(mean NLL) of the gold completion tokens (the end-of-turn token included), prompt masked.

    Rows are padded before their own tokens, so every completion sits at the end of its row and only the last
    positions need logits (``logits_to_keep``): the vocabulary projection over prompt tokens was most of this
    function's time. The prompts' shared prefix runs once (``SharedPrefix``).
    """
    import torch

    fulls = _token_ids(tokenizer, [tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False)
                                   for r in rows])
    prompt_lens = [len(ids) for ids in _token_ids(tokenizer, _prompt_texts(tokenizer, rows))]
    # The prefix stops before each prompt's last token, whose logit predicts the completion's first.
    prefix = _prefix(model, [f[:n] for f, n in zip(fulls, prompt_lens, strict=True)], share_prefix)
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        chunk, lens = fulls[start:start + batch_size], prompt_lens[start:start + batch_size]
        batch = prefix.batch(chunk, tokenizer.pad_token_id, model.device)
        tails = batch["input_ids"][:, batch["prefix_length"]:]
        completion_lens = [len(f) - n for f, n in zip(chunk, lens, strict=True)]
        keep = max(completion_lens) + 1
        with torch.inference_mode():
            logits = model(input_ids=tails, attention_mask=batch["attention_mask"],
                           position_ids=batch["suffix_position_ids"], cache=batch["cache"],
                           use_cache=batch["cache"] is not None, logits_to_keep=keep).logits.float()[:, :-1]
        targets = tails[:, tails.shape[1] - keep + 1:].clone()
        for i, n in enumerate(completion_lens):
            targets[i, : keep - 1 - n] = -100  # positions before this row's completion
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                                ignore_index=-100, reduction="sum")
        total_nll += float(nll)
        total_tokens += int((targets != -100).sum())
    return math.exp(total_nll / max(total_tokens, 1))


EXTRA_KEYS = ("perplexity", "n", "generation_seconds", "generations_reused_from")


def score_generations(generations: list[str], rows: list[dict], metric_specs: dict[str, dict],
                      primary_metric: str) -> dict:
    """The task's metrics on ``generations`` plus per-example records (``correct``: the primary metric is 1)."""
    from ft_assets.evaluation.scorers import score

    references = [r["completion"][-1]["content"] for r in rows]
    scores = {name: score(spec, generations, references, rows) for name, spec in metric_specs.items()}
    examples = []
    for i, (row, generated) in enumerate(zip(rows, generations, strict=True)):
        per = {name: round(s.per_example[i], 4) for name, s in scores.items() if len(s.per_example) == len(rows)}
        primary = scores[primary_metric]
        extracted = primary.extracted[i] if len(primary.extracted) == len(rows) else generated
        examples.append({"record_id": row.get("record_id"), "question": row["prompt"][-1]["content"],
                         "gold": references[i], "generated": generated, "predicted": extracted,
                         "correct": per.get(primary_metric, 0.0) >= 1.0, **per})
    return {"metrics": {name: s.value for name, s in scores.items()}, "examples": examples}


def evaluate_model(model, tokenizer, rows: list[dict], metric_specs: dict[str, dict], primary_metric: str,
                   settings: GenerationSettings, generations: list[str] | None = None) -> dict:
    """The task's metrics, perplexity and per-example predictions for one model on ``rows``.

    ``generations`` given (a logit-identical model already generated them): they are scored, not regenerated.
    """
    started = time.perf_counter()
    reused = generations is not None
    generations = generations if reused else generate(model, tokenizer, rows, settings)
    gen_seconds = time.perf_counter() - started
    result = score_generations(generations, rows, metric_specs, primary_metric)
    result["metrics"].update(perplexity=completion_perplexity(model, tokenizer, rows,
                                                                     share_prefix=settings.share_prefix), n=len(rows),
                             generation_seconds=0.0 if reused else round(gen_seconds, 3))
    result["generations"] = generations
    return result


def rescored(generations: list[str], perplexity: float, rows: list[dict], metric_specs: dict[str, dict],
             primary_metric: str) -> dict:
    """``evaluate_model``'s result from generations and a perplexity computed earlier for the same model, rows and
    settings (a cache hit, the policy asset's ranking): scored now, nothing loaded or generated."""
    result = score_generations(generations, rows, metric_specs, primary_metric)
    result["metrics"].update(perplexity=perplexity, n=len(rows), generation_seconds=0.0)
    result["generations"] = generations
    return result


def task_identity(task) -> dict:
    """What of a task changes its generations' scores or prompts: part of the base-eval cache key."""
    return {"name": task.name, "metrics": task.metrics, "system_prompt": task.system_prompt}


def reference_token_budget(tokenizer, rows: list[dict], margin: int = 16) -> int:
    """Generation length: the longest reference in tokens plus a margin (room for an end-of-turn and chatter)."""
    lengths = [len(tokenizer(r["completion"][-1]["content"], add_special_tokens=False)["input_ids"]) for r in rows]
    return max(lengths, default=0) + margin


def markdown_table(models: dict[str, dict], metric_names: list[str] | None = None) -> str:
    names = metric_names or [k for k in next(iter(models.values()), {}) if k not in EXTRA_KEYS]
    lines = ["| model | " + " | ".join(names) + " | perplexity | n |", "|---" * (len(names) + 3) + "|"]
    for name, m in models.items():
        cells = [f"{m[k]:.3f}" if isinstance(m.get(k), (int, float)) else "–" for k in names]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {m.get('perplexity', float('nan')):.3f} | "
                     f"{m.get('n', '')} |")
    return "\n".join(lines)
