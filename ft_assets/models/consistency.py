"""Checks that a derived model still is the trained model, and serves like it was trained."""

from __future__ import annotations

from pathlib import Path

# The probes are the task's (``Task.probes``): its questions in the training format plus an off-task turn.
Conversations = list[list[dict]] | tuple[tuple[dict, ...], ...]


def _encode(tokenizer, conversations: list[list[dict]], device):
    texts = [tokenizer.apply_chat_template(list(c), add_generation_prompt=True, tokenize=False)
             for c in conversations]
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)


def logit_agreement(reference, candidate, tokenizer, conversations: Conversations) -> dict:
    """Compare next-token logits of two models over every real (non-pad) probe position."""
    import torch

    batch = _encode(tokenizer, conversations, reference.device)
    with torch.inference_mode():
        ref = reference(**batch).logits.float()
        cand = candidate(**batch.to(candidate.device)).logits.float().to(ref.device)
    mask = batch["attention_mask"].bool()
    diff = (ref - cand).abs()[mask]
    return {
        "max_abs_logit_diff": round(float(diff.max()), 6),
        "mean_abs_logit_diff": round(float(diff.mean()), 6),
        "top1_agreement": round(float((ref.argmax(-1) == cand.argmax(-1))[mask].float().mean()), 4),
        "probe_tokens": int(mask.sum()),
    }


def serving_check(model, tokenizer, training_chat_template: str | None, conversations: Conversations,
                  max_new_tokens: int = 64) -> dict:
    """Generate greedily on the probes: does every answer end on EOS, and is the chat template the training one?"""
    import torch

    batch = _encode(tokenizer, conversations, model.device)
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    new_tokens = out[:, batch["input_ids"].shape[1]:]
    stopped = [bool((row == tokenizer.eos_token_id).any()) for row in new_tokens]
    runaway = [tokenizer.decode(row, skip_special_tokens=True)[:200]
               for row, ok in zip(new_tokens, stopped, strict=True) if not ok]
    return {
        "probes": len(conversations),
        "stopped_on_eos": sum(stopped),
        "runaway_rate": round(1 - sum(stopped) / len(conversations), 4),
        "runaway_examples": runaway[:3],
        "eos_token": tokenizer.eos_token,
        "chat_template_matches_training": tokenizer.chat_template == training_chat_template,
        "max_new_tokens": max_new_tokens,
    }


def chat_template_of(model_dir: Path) -> str | None:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir).chat_template
