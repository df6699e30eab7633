"""Model gates judge measured numbers against thresholds the same way in checks and in the report."""

from ft_assets.evaluation.gates import all_gates, beats_base, quantized_within_tolerance, serving_consistent

MODELS = {
    "base": {"exact_match": 0.0}, "adapter": {"exact_match": 0.9}, "merged": {"exact_match": 0.9},
    "quantized": {"exact_match": 0.8}, "quantized_int8": {"exact_match": 0.5},
}


def test_beats_base_uses_the_margin():
    assert beats_base(MODELS, 0.5).passed
    assert not beats_base(MODELS, 0.95).passed


def test_quantized_tolerance_is_per_variant():
    assert quantized_within_tolerance(MODELS, "quantized", 0.15).passed
    failed = quantized_within_tolerance(MODELS, "quantized_int8", 0.15)
    assert not failed.passed and failed.value == 0.4


def test_serving_gate_needs_eos_and_the_training_template():
    ok = {"runaway_rate": 0.0, "chat_template_matches_training": True, "stopped_on_eos": 7, "probes": 7}
    assert serving_consistent("merged", ok, 0.0).passed
    assert not serving_consistent("merged", {**ok, "chat_template_matches_training": False}, 0.0).passed
    assert not serving_consistent("merged", {**ok, "runaway_rate": 0.3, "stopped_on_eos": 5}, 0.0).passed


def test_all_gates_lists_every_variant():
    merge_check = {"max_abs_logit_diff": 1e-5, "top1_agreement": 1.0, "probe_tokens": 300}
    serving = {"merged": {"runaway_rate": 0.0, "chat_template_matches_training": True, "stopped_on_eos": 7,
                          "probes": 7}}
    results = all_gates(MODELS, merge_check, serving, min_gain=0.2, merge_tolerance=0.01, quantized_tolerance=0.15,
                        max_runaway_rate=0.0)
    assert [r.name for r in results] == ["adapter_beats_base", "merged_matches_adapter", "merged_serving_consistent",
                                         "quantized_within_tolerance", "quantized_int8_within_tolerance"]
    assert [r.passed for r in results] == [True, True, True, True, False]
