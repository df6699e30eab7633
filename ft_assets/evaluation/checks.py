"""Blocking model gates: the merged model is the trained model, serves like it, and beats the base."""

import json

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from ft_assets.evaluation import gates
from ft_assets.lineage.artifacts import Artifact
from resources import ModelGates


def _result(results: list[gates.GateResult], severity: AssetCheckSeverity = AssetCheckSeverity.ERROR
            ) -> AssetCheckResult:
    failed = [r for r in results if not r.passed]
    return AssetCheckResult(
        passed=not failed,
        severity=severity,
        description="; ".join(f"{r.name}: {r.value} vs threshold {r.threshold} ({r.detail})" for r in failed)
        or "; ".join(r.detail for r in results),
        metadata={"results": MetadataValue.json([r.as_dict() for r in results])},
    )


def _read(artifact: Artifact, name: str) -> dict:
    return json.loads((artifact.path / name).read_text())


@asset_check(asset="merged_model", blocking=True,
             description="merged logits match base + adapter logits on the fixed probe set, within tolerance")
def merged_matches_adapter(merged_model: Artifact, model_gates: ModelGates) -> AssetCheckResult:
    return _result([gates.merged_matches_adapter(_read(merged_model, "merge_check.json"),
                                                 model_gates.merge_logit_tolerance)])


@asset_check(asset="merged_model", blocking=True,
             description="the merged model stops on EOS and carries the training chat template")
def merged_serving_consistent(merged_model: Artifact, model_gates: ModelGates) -> AssetCheckResult:
    return _result([gates.serving_consistent("merged", _read(merged_model, "serving_check.json"),
                                             model_gates.max_runaway_rate)])


@asset_check(asset="quantized_model", blocking=True,
             description="every quantized variant stops on EOS and carries the training chat template")
def quantized_serving_consistent(quantized_model: Artifact, model_gates: ModelGates) -> AssetCheckResult:
    variants = _read(quantized_model, "variants.json")
    return _result([gates.serving_consistent(gates.VARIANT_NAMES[m], v["serving_check"], model_gates.max_runaway_rate)
                    for m, v in variants.items() if "skipped" not in v])


def _primary(report: dict) -> str:
    return report.get("primary_metric", "exact_match")


@asset_check(asset="eval_report", blocking=True,
             description="the fine-tuned model beats the base on the task's primary metric by the configured margin")
def adapter_beats_base(eval_report: Artifact, model_gates: ModelGates) -> AssetCheckResult:
    report = _read(eval_report, "report.json")
    return _result([gates.beats_base(report["models"], model_gates.min_exact_match_gain, _primary(report))])


@asset_check(asset="eval_report", blocking=True,
             description="the tuned model keeps its general ability: the forgetting set's score drops by no more "
                         "than the task's tolerance (passes with a note when the task names no forgetting set)")
def forgetting_within_tolerance(eval_report: Artifact) -> AssetCheckResult:
    forgetting = _read(eval_report, "report.json").get("forgetting")
    if not forgetting:
        return AssetCheckResult(passed=True, description="the task names no forgetting set: nothing to compare")
    if "skipped" in forgetting:
        return AssetCheckResult(passed=True, description=f"forgetting set skipped: {forgetting['skipped']}")
    return _result([gates.forgetting_within_tolerance(forgetting, forgetting["tolerance"])])


# Not blocking: a variant that falls behind fails its own gate (its model card says so), but it must not
# withhold the merged model's card.
@asset_check(asset="eval_report",
             description="each quantized variant is within the configured tolerance of the merged model on the "
                         "task's primary metric")
def quantized_within_tolerance(eval_report: Artifact, model_gates: ModelGates) -> AssetCheckResult:
    report = _read(eval_report, "report.json")
    models = report["models"]
    return _result([gates.quantized_within_tolerance(models, name, model_gates.quantized_exact_match_tolerance,
                                                     _primary(report))
                    for name in models if name.startswith("quantized")], AssetCheckSeverity.WARN)
