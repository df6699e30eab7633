"""SFT's loss on CPU projects only labelled positions onto the vocabulary (core.score_labelled_positions_only):
the loss, per-token log-probs and gradients are those of trl's all-positions path."""

from __future__ import annotations

from pathlib import Path

import torch

from ft_assets.training.core import score_labelled_positions_only


def _loss_and_grads(model, ids, labels):
    model.zero_grad()
    out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), out.log_probs.detach(), grads


def test_labelled_positions_only_changes_no_number(scratch_model_dir: Path, monkeypatch):
    from transformers import AutoModelForCausalLM
    from trl.trainer import utils

    monkeypatch.setattr(utils, "_use_triton", utils._use_triton)  # restored after the test
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(scratch_model_dir, dtype=torch.float32)
    utils.add_fused_lm_head(model)
    ids = torch.randint(0, model.config.vocab_size, (3, 16))
    labels = ids.clone()
    labels[:, :11] = -100  # a prompt of 11 tokens, its completion after it (the demo's share is about a quarter)
    labels[2, 11:13] = -100

    assert not utils._use_triton(ids.device), "trl scores every position on CPU by itself now: drop the switch"
    reference = _loss_and_grads(model, ids, labels)
    assert score_labelled_positions_only() and utils._use_triton(ids.device)
    compact = _loss_and_grads(model, ids, labels)

    torch.testing.assert_close(compact[0], reference[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compact[1], reference[1], rtol=1e-5, atol=1e-5)
    assert reference[2].keys() == compact[2].keys() and reference[2]
    for name, grad in reference[2].items():
        torch.testing.assert_close(compact[2][name], grad, rtol=1e-4, atol=1e-6, msg=name)
