"""Model cards for every merged and quantized model, once the eval report and its gates exist."""

import json

from dagster import AssetExecutionContext, MetadataValue, Output, asset

from ft_assets.artifact_output import artifact_output, card
from ft_assets.lineage.artifacts import Artifact
from ft_assets.models.card import build_card, card_markdown, write_card
from resources import ArtifactStore


@asset(group_name="evaluation", kinds={"markdown", "json"})
def model_cards(context: AssetExecutionContext, eval_report: Artifact, merged_model: Artifact,
                quantized_model: Artifact, artifact_store: ArtifactStore) -> Output:
    """Markdown + JSON cards: provenance, training config, metrics and gate results per model variant."""
    report = json.loads((eval_report.path / "report.json").read_text())
    inputs = {"eval_report": eval_report, "merged_model": merged_model, "quantized_model": quantized_model}
    provisional = json.loads((merged_model.path / "model_card.json").read_text())
    common = {k: provisional[k] for k in ("base_model", "data_versions", "training")}
    targets = {"merged": ("merged_model", merged_model.path, merged_model.version, provisional["method"])}
    for name, variant in report["variants"].items():
        if variant["kind"] == "quantized":
            targets[name] = ("quantized_model", variant["path"], quantized_model.version, variant["method"])
    with artifact_store.stage("model_cards") as staging:
        for name, (asset_name, path, version, method) in targets.items():
            gates = [g for g in report["gates"] if g["name"].startswith(name + "_") or g["name"] in (
                "adapter_beats_base", "merged_matches_adapter")]
            model_card = build_card(name=asset_name, variant=name, method=method, metrics=report["models"][name],
                                    gates=gates, artifacts={asset_name: version, "path": path,
                                                            "eval_report": eval_report.version}, **common)
            write_card(staging / name, model_card)
        artifact = artifact_store.publish(staging, card(context, inputs))
    merged_card = json.loads((artifact.path / "merged" / "model_card.json").read_text())
    return artifact_output(artifact, inputs, cards=len(targets),
                           merged_card=MetadataValue.md(card_markdown(merged_card)))
