"""The forgetting set: general-ability rows (prompt + reference) a tuned model must not get worse at. No Dagster."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from pathlib import Path


def _prompt(raw: dict, system_prompt: str) -> list[dict]:
    prompt = raw.get("prompt", raw.get("question", raw.get("input")))
    if isinstance(prompt, list):
        messages = list(prompt)
    elif isinstance(prompt, str) and prompt.strip():
        messages = [{"role": "user", "content": prompt}]
    else:
        raise ValueError("needs a 'prompt' (text or chat messages) or a 'question'")
    if system_prompt and messages[0].get("role") != "system":
        messages = [{"role": "system", "content": system_prompt}, *messages]
    return messages


def load_forgetting_rows(path: str | Path, max_examples: int = 50, system_prompt: str = "") -> list[dict]:
    """Eval rows from a JSONL of {prompt|question, reference|answer|completion} (GSM8K's test file as it is)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"forgetting set {path} does not exist: fix task.forgetting.path")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        raw = json.loads(line)
        reference = raw.get("reference", raw.get("answer", raw.get("completion")))
        if isinstance(reference, list):  # chat messages: the last reply
            reference = reference[-1]["content"]
        if not isinstance(reference, str) or not reference.strip():
            raise ValueError(f"{path}:{number}: needs a 'reference' (or 'answer') text")
        try:
            prompt = _prompt(raw, system_prompt)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
        rows.append({"record_id": f"{path.stem}:{number}", "prompt": prompt,
                     "completion": [{"role": "assistant", "content": reference}]})
        if max_examples and len(rows) >= max_examples:
            break
    if not rows:
        raise ValueError(f"forgetting set {path} holds no rows")
    return rows


def perplexity_drift(load_base: Callable[[], tuple], load_tuned: Callable[[], tuple], rows: list[dict]) -> dict:
    """Base and tuned perplexity of the set's references, teacher-forced: a drift measure that needs no
    generation, so it still moves where a small model scores 0 on the set's own metric (GSM8K answers, say).
    ``load_*`` return ``(model, tokenizer)``; one model is held at a time."""
    from ft_assets.evaluation.evaluate import completion_perplexity

    out = {}
    for name, load in (("base", load_base), ("tuned", load_tuned)):
        model, tokenizer = load()
        out[name] = completion_perplexity(model, tokenizer, rows)
        del model
        gc.collect()
    return out
