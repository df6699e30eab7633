"""Training batches whose rows start with the same tokens run those tokens once.

A task's examples share their system prompt and chat header: in the demo 42 of ~80 tokens a row, so half of
every training step was the same prefix computed eight times. ``share_batch_prefix`` wraps the model's backbone
(the transformer under the LM head, which trl's fused head calls): when every row of a batch starts with the same
P unpadded tokens it runs them once (batch 1, keeping their KV cache), repeats that cache for the batch, runs
the rest of each row against it, and returns the full ``[batch, length, hidden]`` states. The math is the same
per row, so the loss and gradients are too (tested); gradients reach the prefix through the repeated cache.

It steps aside (runs the original forward) for anything else: a cache or embeddings passed in, no prefix worth
sharing, gradient checkpointing (which turns the cache off), and sharded or distributed engines, which the
caller does not wrap.
"""

from __future__ import annotations

import functools

MIN_PREFIX_TOKENS = 8
# Set by this module for its two calls (a caller's cache, past_key_values or cache_position sends the call to the
# original forward instead; its mask and position ids are used).
OWN_ARGUMENTS = ("input_ids", "attention_mask", "position_ids", "use_cache", "cache", "past_key_values",
                 "cache_position")


def shared_prefix_length(input_ids, attention_mask) -> int:
    """Leading positions where every row holds the same unpadded token, leaving each row at least one more."""
    import torch

    same = (input_ids == input_ids[:1]).all(0)
    if attention_mask is not None:
        same &= attention_mask.bool().all(0)
    length = int(torch.cumprod(same.int(), 0).sum())
    return min(length, input_ids.shape[1] - 1)


def backbone_of(model):
    """The transformer under the LM head (what trl's fused head runs), through a PEFT wrapper."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner, "base_model", inner)


def share_batch_prefix(model) -> dict:
    """Wrap ``model``'s backbone so a batch's shared prefix runs once (idempotent). Returns the wrapper's counters,
    updated as it runs: ``forward_passes``, ``shared`` (those that ran a shared prefix) and ``prefix_tokens``
    (summed over the shared ones), so a summary can say what happened, not what was intended."""
    backbone = backbone_of(model)
    if getattr(backbone.forward, "shares_batch_prefix", False):
        return backbone.forward.stats
    original = backbone.forward
    stats = {"forward_passes": 0, "shared": 0, "prefix_tokens": 0}

    @functools.wraps(original)
    def forward(*args, **kwargs):
        stats["forward_passes"] += 1
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if (args or input_ids is None or input_ids.shape[0] < 2 or kwargs.get("inputs_embeds") is not None
                or any(kwargs.get(k) is not None for k in ("cache", "past_key_values", "cache_position"))
                or getattr(backbone, "gradient_checkpointing", False)
                or any(kwargs.get(k) for k in ("output_hidden_states", "output_attentions", "output_router_logits"))):
            return original(*args, **kwargs)
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() != 2:  # a prepared 4D mask: the caller owns the layout
            return original(**kwargs)
        prefix = shared_prefix_length(input_ids, mask)
        if prefix < MIN_PREFIX_TOKENS:
            return original(**kwargs)
        stats["shared"] += 1
        stats["prefix_tokens"] += prefix
        return _forward_with_shared_prefix(original, input_ids, mask, prefix, kwargs)

    forward.shares_batch_prefix = True
    forward.stats = stats
    backbone.forward = forward
    return stats


def _forward_with_shared_prefix(original, input_ids, mask, prefix: int, kwargs: dict):
    import torch
    from transformers.modeling_outputs import BaseModelOutputWithPast

    rest = {k: v for k, v in kwargs.items() if k not in OWN_ARGUMENTS}
    positions = kwargs.get("position_ids")
    head = original(input_ids=input_ids[:1, :prefix], use_cache=True, **rest,
                    **({"position_ids": positions[:1, :prefix]} if positions is not None else {}))
    cache = head.cache
    cache.batch_repeat_interleave(input_ids.shape[0])
    if positions is None:  # what the plain forward would use: 0..length-1 on every row (right padding)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand(input_ids.shape[0], -1)
    tail = original(input_ids=input_ids[:, prefix:], attention_mask=mask, position_ids=positions[:, prefix:],
                    cache=cache, use_cache=True, **rest)
    states = torch.cat([head.last_hidden_state.expand(input_ids.shape[0], -1, -1), tail.last_hidden_state], 1)
    return BaseModelOutputWithPast(last_hidden_state=states)
