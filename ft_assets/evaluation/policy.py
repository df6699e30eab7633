"""Which aligned policy ships (sft, dpo or the best that passes its gates) and how it ranks preference pairs.

No Dagster here: the policy asset and the eval report call these.
"""

from __future__ import annotations

POLICIES = ("sft", "dpo", "grpo", "best")
ALIGNED = ("dpo", "grpo")  # adapters trained on top of the SFT adapter


def choose_policy(requested: str, candidates: dict[str, dict], not_trained: dict[str, str] | None = None
                  ) -> tuple[str, str]:
    """The adapter to merge and ship, and why.

    ``candidates``: trained adapter name ("sft", "dpo", "grpo") -> {"metric": primary metric value,
    "gates_passed": bool} (the metric only needed for "best"); ``not_trained``: adapter name -> why it did not train
    (no preference pairs, no grpo section).
    """
    not_trained = not_trained or {}
    if requested not in POLICIES:
        raise ValueError(f"policy {requested!r} is none of {POLICIES}")
    if "sft" not in candidates:
        raise ValueError("no SFT adapter to choose from")
    if requested != "best":
        if requested not in candidates:
            why = not_trained.get(requested, "it is not in the graph")
            raise ValueError(f"policy {requested!r} was requested but {requested}_adapter did not train ({why}): "
                             f"fix that or set policy: sft")
        return requested, f"the recipe asks for the {requested.upper()} adapter"
    if len(candidates) == 1:
        skipped = "; ".join(f"{k}: {v}" for k, v in not_trained.items())
        return "sft", "best: only the SFT adapter trained" + (f" ({skipped})" if skipped else "")
    passing = {k: v for k, v in candidates.items() if v.get("gates_passed", True)}
    scores = ", ".join(f"{k} {v['metric']:.3f}{'' if v.get('gates_passed', True) else ' (gates failed)'}"
                       for k, v in candidates.items())
    if not passing:
        return "sft", f"best: no adapter passes every gate ({scores}); the SFT adapter stays (its gates will " \
                      "refuse promotion)"
    chosen = max(passing, key=lambda k: (passing[k]["metric"], k == "sft"))  # a tie keeps the simpler SFT
    return chosen, f"best primary metric among adapters passing their gates: {scores}"


def completion_logprob(model, tokenizer, prompt: list[dict], completion: list[dict]) -> float:
    """Sum of the log-probabilities of ``completion``'s tokens after ``prompt`` (chat template applied)."""
    import torch

    full = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
    head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(full, return_tensors="pt", add_special_tokens=False)["input_ids"].to(model.device)
    n_prompt = len(tokenizer(head, add_special_tokens=False)["input_ids"])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits.float()[0, :-1]
    targets = ids[0, 1:]
    logprobs = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]
    return float(logprobs[n_prompt - 1:].sum())


def preference_metrics(model, tokenizer, pairs: list[dict]) -> dict:
    """How often the model prefers chosen over rejected by log-prob margin, and the mean margin."""
    margins = [completion_logprob(model, tokenizer, p["prompt"], p["chosen"])
               - completion_logprob(model, tokenizer, p["prompt"], p["rejected"]) for p in pairs]
    if not margins:
        return {"pairs": 0, "prefers_chosen": None, "mean_margin": None}
    return {"pairs": len(margins), "prefers_chosen": sum(m > 0 for m in margins) / len(margins),
            "mean_margin": sum(margins) / len(margins)}
