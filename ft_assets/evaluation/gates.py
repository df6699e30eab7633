"""Model gates: measured numbers against thresholds, as plain data.

Assets measure (logit agreement, EOS behaviour, eval metrics) and record the
numbers in their artifacts; the asset checks and the eval report both judge
them with these functions, so a gate means the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Report name of each quantization method's model variant.
VARIANT_NAMES = {"bnb-nf4": "quantized", "bnb-int8": "quantized_int8", "gptq": "quantized_gptq",
                 "awq": "quantized_awq"}


@dataclass
class GateResult:
    name: str
    passed: bool
    value: float | None
    threshold: float | None
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


def beats_base(models: dict[str, dict], min_gain: float, metric: str = "exact_match",
               candidate: str = "adapter") -> GateResult:
    """The fine-tuned model's primary metric minus the base's, at least ``min_gain``."""
    gain = models[candidate][metric] - models["base"][metric]
    return GateResult("adapter_beats_base", gain >= min_gain, round(gain, 4), min_gain,
                      f"{metric} base {models['base'][metric]:.3f} -> {candidate} {models[candidate][metric]:.3f}")


def forgetting_loss(forgetting: dict) -> float:
    """How much general ability the tuned model lost: base minus tuned score, or, scored by perplexity (lower is
    better), the tuned model's relative rise over the base's (0.10: 10% more perplexed by the same references)."""
    base, tuned = forgetting["base"], forgetting["tuned"]
    if forgetting.get("scorer") == "perplexity":
        return tuned / base - 1.0 if base > 0 else float("inf")
    return base - tuned


def forgetting_within_tolerance(forgetting: dict, tolerance: float) -> GateResult:
    """General ability kept: the forgetting set's loss (``forgetting_loss``) at most ``tolerance``."""
    loss = forgetting_loss(forgetting)
    return GateResult("forgetting_within_tolerance", loss <= tolerance, round(loss, 4), tolerance,
                      f"{forgetting.get('scorer', '?')} on {forgetting.get('n', '?')} general-ability rows: "
                      f"base {forgetting['base']:.3f} -> tuned {forgetting['tuned']:.3f}")


def merged_matches_adapter(merge_check: dict, tolerance: float) -> GateResult:
    diff = merge_check["max_abs_logit_diff"]
    return GateResult("merged_matches_adapter", diff <= tolerance, diff, tolerance,
                      f"max |logit diff| over {merge_check['probe_tokens']} probe tokens, "
                      f"top-1 agreement {merge_check['top1_agreement']:.3f}")


def quantized_within_tolerance(models: dict[str, dict], variant: str, tolerance: float,
                               metric: str = "exact_match") -> GateResult:
    drop = models["merged"][metric] - models[variant][metric]
    return GateResult(f"{variant}_within_tolerance", drop <= tolerance, round(drop, 4), tolerance,
                      f"{metric} merged {models['merged'][metric]:.3f} vs {variant} {models[variant][metric]:.3f}")


def serving_consistent(name: str, serving_check: dict, max_runaway_rate: float) -> GateResult:
    rate = serving_check["runaway_rate"]
    template_ok = serving_check["chat_template_matches_training"]
    return GateResult(f"{name}_serving_consistent", template_ok and rate <= max_runaway_rate, rate, max_runaway_rate,
                      f"{serving_check['stopped_on_eos']}/{serving_check['probes']} probes stopped on EOS; "
                      f"chat template {'matches' if template_ok else 'DIFFERS FROM'} training")


def all_gates(models: dict[str, dict], merge_check: dict, serving_checks: dict[str, dict], *,
              min_gain: float, merge_tolerance: float, quantized_tolerance: float,
              max_runaway_rate: float, metric: str = "exact_match", forgetting: dict | None = None
              ) -> list[GateResult]:
    """Every model gate, in the order the report shows them; ``metric`` is the task's primary metric."""
    results = [beats_base(models, min_gain, metric), merged_matches_adapter(merge_check, merge_tolerance)]
    if forgetting and "skipped" not in forgetting:
        results.append(forgetting_within_tolerance(forgetting, forgetting["tolerance"]))
    results += [serving_consistent(name, check, max_runaway_rate) for name, check in serving_checks.items()]
    results += [quantized_within_tolerance(models, name, quantized_tolerance, metric)
                for name in models if name.startswith("quantized")]
    return results
