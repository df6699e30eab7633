"""The eval is the task's: its scorers, its primary metric in the gates, its forgetting set; no SQL for math."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ft_assets.evaluation.evaluate import (
    GenerationSettings,
    evaluate_model,
    load_variant,
    reference_token_budget,
    score_generations,
)
from ft_assets.evaluation.forgetting import load_forgetting_rows
from ft_assets.evaluation.gates import all_gates, beats_base, forgetting_within_tolerance
from ft_assets.tasks.common import load_task

GSM8K_TEST = Path("/work/shared/datasets/gsm8k/test.jsonl")
MERGE_OK = {"max_abs_logit_diff": 0.0, "probe_tokens": 10, "top1_agreement": 1.0}


def _row(question: str, answer: str, i: int = 0) -> dict:
    return {"record_id": f"r{i}", "db_id": "", "prompt": [{"role": "user", "content": question}],
            "completion": [{"role": "assistant", "content": answer}]}


def test_math_task_scores_numbers_and_no_sql(tmp_path):
    task = load_task("math")
    specs = task.prepare(tmp_path)
    rows = [_row("2+2?", "2+2=4\n#### 4", 0), _row("10*100?", "#### 1,000", 1), _row("5-8?", "#### -3", 2)]
    result = score_generations(["It is 4.", "1000 apples", "3"], rows, specs, task.primary_metric)
    assert set(result["metrics"]) == {"numeric_match", "exact_match"}
    assert result["metrics"]["numeric_match"] == pytest.approx(2 / 3)
    assert [e["correct"] for e in result["examples"]] == [True, True, False]
    assert result["examples"][1]["predicted"] == "1000"


def test_gates_decide_on_the_primary_metric():
    models = {"base": {"accuracy": 0.2, "exact_match": 0.9}, "adapter": {"accuracy": 0.7, "exact_match": 0.0},
              "merged": {"accuracy": 0.7, "exact_match": 0.0}, "quantized": {"accuracy": 0.3, "exact_match": 0.0}}
    assert beats_base(models, 0.3, "accuracy").passed
    assert not beats_base(models, 0.3, "exact_match").passed
    gates = {g.name: g for g in all_gates(models, MERGE_OK, {}, min_gain=0.3, merge_tolerance=0.01,
                                          quantized_tolerance=0.2, max_runaway_rate=0.0, metric="accuracy")}
    assert gates["adapter_beats_base"].passed and "accuracy" in gates["adapter_beats_base"].detail
    assert not gates["quantized_within_tolerance"].passed  # 0.7 -> 0.3 on accuracy


def test_forgetting_gate_refuses_a_loss_beyond_tolerance():
    kept = forgetting_within_tolerance({"base": 0.40, "tuned": 0.38, "scorer": "numeric_match", "n": 50}, 0.05)
    lost = forgetting_within_tolerance({"base": 0.40, "tuned": 0.30, "scorer": "numeric_match", "n": 50}, 0.05)
    assert kept.passed and not lost.passed and lost.value == pytest.approx(0.10)
    gates = all_gates({"base": {"m": 0.0}, "adapter": {"m": 1.0}, "merged": {"m": 1.0}}, MERGE_OK, {},
                      min_gain=0.1, merge_tolerance=0.01, quantized_tolerance=0.1, max_runaway_rate=0.0, metric="m",
                      forgetting={"base": 0.5, "tuned": 0.1, "tolerance": 0.05})
    assert [g.name for g in gates if not g.passed] == ["forgetting_within_tolerance"]


def test_forgetting_by_perplexity_judges_the_relative_rise():
    """Lower is better for perplexity: the loss is the tuned model's relative rise over the base's."""
    risen = {"base": 4.0, "tuned": 5.0, "scorer": "perplexity", "n": 16}
    assert forgetting_within_tolerance(risen, 0.30).passed
    refused = forgetting_within_tolerance(risen, 0.20)
    assert not refused.passed and refused.value == pytest.approx(0.25)
    assert forgetting_within_tolerance({**risen, "tuned": 3.0}, 0.0).passed  # less perplexed: nothing lost


def test_forgetting_rows_from_gsm8k():
    if not GSM8K_TEST.is_file():
        pytest.skip(f"{GSM8K_TEST} is missing (shared datasets folder not mounted)")
    rows = load_forgetting_rows(GSM8K_TEST, max_examples=8, system_prompt="Solve it.")
    assert len(rows) == 8
    assert rows[0]["prompt"][0] == {"role": "system", "content": "Solve it."}
    assert "####" in rows[0]["completion"][0]["content"]
    gold = [r["completion"][0]["content"] for r in rows]
    perfect = score_generations(gold, rows, {"m": {"scorer": "numeric_match"}}, "m")
    assert perfect["metrics"]["m"] == 1.0


def test_forgetting_rows_refuse_bad_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_forgetting_rows(tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "hi"}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: needs a 'reference'"):
        load_forgetting_rows(bad)


def test_a_real_model_is_scored_by_a_label_task(scratch_model_dir, tmp_path):
    """Generation, scoring and perplexity on a real (scratch) model; reusing generations skips generating."""
    task = load_task("classification", metrics={"accuracy": {"scorer": "label_accuracy",
                                                             "labels": ["yes", "no"]},
                                                "macro_f1": {"scorer": "macro_f1", "labels": ["yes", "no"]}})
    rows = [_row(f"Is {i} even?", "yes" if i % 2 == 0 else "no", i) for i in range(6)]
    model, tokenizer = load_variant("base", scratch_model_dir)
    length = reference_token_budget(tokenizer, rows, margin=4)
    assert 4 < length <= 12  # the longest one-word label plus the margin, not a fixed 48
    specs = task.prepare(tmp_path)
    first = evaluate_model(model, tokenizer, rows, specs, "accuracy", GenerationSettings(length, 8))
    assert set(first["metrics"]) >= {"accuracy", "macro_f1", "perplexity", "n"}
    assert 0.0 <= first["metrics"]["accuracy"] <= 1.0 and first["metrics"]["perplexity"] > 1.0
    again = evaluate_model(model, tokenizer, rows, specs, "accuracy", GenerationSettings(length, 8),
                           generations=first["generations"])
    assert again["metrics"]["accuracy"] == first["metrics"]["accuracy"]
    assert again["metrics"]["generation_seconds"] == 0.0
    assert again["metrics"]["perplexity"] == pytest.approx(first["metrics"]["perplexity"])
