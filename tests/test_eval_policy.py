"""Which policy ships, and the preference metrics on held-out pairs, on a real (scratch) model."""

from __future__ import annotations

import pytest

from ft_assets.evaluation.evaluate import load_variant
from ft_assets.evaluation.policy import choose_policy, completion_logprob, preference_metrics

SFT, DPO = {"metric": 0.6, "gates_passed": True}, {"metric": 0.7, "gates_passed": True}


def test_best_takes_the_better_primary_metric_among_passing_adapters():
    assert choose_policy("best", {"sft": SFT, "dpo": DPO})[0] == "dpo"
    assert choose_policy("best", {"sft": SFT, "dpo": {**DPO, "gates_passed": False}})[0] == "sft"
    assert choose_policy("best", {"sft": SFT, "dpo": {**DPO, "metric": 0.6}})[0] == "sft"  # a tie keeps SFT


def test_without_preference_pairs_the_policy_is_sft():
    name, reason = choose_policy("best", {"sft": SFT}, {"dpo": "no preference pairs"})
    assert name == "sft" and "only the SFT adapter trained (dpo: no preference pairs)" in reason
    assert choose_policy("sft", {"sft": SFT, "dpo": DPO})[0] == "sft"
    with pytest.raises(ValueError, match="policy 'dpo' was requested but dpo_adapter did not train "
                                         r"\(no preference pairs\)"):
        choose_policy("dpo", {"sft": SFT}, {"dpo": "no preference pairs"})
    with pytest.raises(ValueError, match="none of"):
        choose_policy("newest", {"sft": SFT})


def test_preference_metrics_are_log_prob_margins(scratch_model_dir):
    model, tokenizer = load_variant("base", scratch_model_dir)
    prompt = [{"role": "user", "content": "How many employees work in Oslo?"}]
    good = [{"role": "assistant", "content": "SELECT COUNT(*) FROM employees WHERE city = 'Oslo';"}]
    bad = [{"role": "assistant", "content": "Oslo Oslo Oslo"}]
    forward = preference_metrics(model, tokenizer, [{"prompt": prompt, "chosen": good, "rejected": bad}])
    backward = preference_metrics(model, tokenizer, [{"prompt": prompt, "chosen": bad, "rejected": good}])
    assert forward["pairs"] == 1
    assert forward["mean_margin"] == pytest.approx(-backward["mean_margin"], abs=1e-4)
    assert forward["prefers_chosen"] + backward["prefers_chosen"] == 1.0
    assert completion_logprob(model, tokenizer, prompt, good) < 0
    assert preference_metrics(model, tokenizer, [])["prefers_chosen"] is None
