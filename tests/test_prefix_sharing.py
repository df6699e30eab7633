"""A training batch's shared prefix runs once, and the loss and every gradient stay what they were."""

from __future__ import annotations

import torch

from ft_assets.evaluation.evaluate import load_variant
from ft_assets.tasks.text_to_sql import SCHEMA_SUMMARY, generate_clean_pairs
from ft_assets.training.prefix_sharing import backbone_of, share_batch_prefix, shared_prefix_length


def test_shared_prefix_length_stops_at_the_first_difference_or_pad():
    ids = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 3, 9, 9], [1, 2, 3, 4, 0]])
    assert shared_prefix_length(ids, torch.ones_like(ids)) == 3
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    assert shared_prefix_length(ids, mask) == 2  # a pad is never part of the prefix
    same = torch.tensor([[1, 2, 3], [1, 2, 3]])
    assert shared_prefix_length(same, None) == 2  # every row keeps a token of its own


def _batch(tokenizer, n: int) -> dict:
    """Right-padded chat rows with the loss on the reply only, as trl's collator builds them."""
    rows, labels = [], []
    for question, sql in generate_clean_pairs(n, seed=5):
        prompt = [{"role": "system", "content": SCHEMA_SUMMARY}, {"role": "user", "content": question}]
        head = tokenizer(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False),
                         add_special_tokens=False)["input_ids"]
        full = tokenizer(tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": sql}],
                                                       tokenize=False), add_special_tokens=False)["input_ids"]
        rows.append(full)
        labels.append([-100] * len(head) + full[len(head):])
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    return {"input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
            "labels": torch.tensor([label + [-100] * (width - len(label)) for label in labels])}


def _loss_and_grads(model, batch) -> tuple[float, dict]:
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return float(loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_sharing_the_prefix_keeps_loss_and_gradients(scratch_model_dir):
    from peft import LoraConfig, get_peft_model

    base, tokenizer = load_variant("base", scratch_model_dir)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    model.train()
    batch = _batch(tokenizer, 5)
    assert len({int(m.sum()) for m in batch["attention_mask"]}) > 1  # rows of different lengths
    prefix = shared_prefix_length(batch["input_ids"], batch["attention_mask"])
    assert prefix >= 8
    plain_loss, plain_grads = _loss_and_grads(model, batch)

    stats = share_batch_prefix(model)
    assert share_batch_prefix(model) is stats  # idempotent: one wrapper
    seen = []
    embed = backbone_of(model).get_input_embeddings()
    hook = embed.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))
    shared_loss, shared_grads = _loss_and_grads(model, batch)
    hook.remove()
    rows, width = batch["input_ids"].shape
    assert seen == [(1, prefix), (rows, width - prefix)]  # the prefix ran once, then each row's own tokens
    assert stats == {"forward_passes": 1, "shared": 1, "prefix_tokens": prefix}
    assert abs(shared_loss - plain_loss) < 1e-5 * abs(plain_loss)
    assert plain_grads.keys() == shared_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        assert torch.allclose(shared_grads[name], grad, rtol=1e-4, atol=1e-6), name
