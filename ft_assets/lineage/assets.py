"""Model cards for every merged and quantized model, once the eval report and its gates exist."""

import json

from dagster import AssetExecutionContext, AssetKey, MetadataValue, Output, asset

from ft_assets.artifact_output import artifact_output, card
from ft_assets.lineage.artifacts import Artifact
from ft_assets.lineage.registry import CANDIDATE, PromotionRefused, gates_for_variant
from ft_assets.models.card import build_card, card_markdown, write_card
from resources import ArtifactStore, ModelRegistry, TaskResource


@asset(group_name="evaluation", kinds={"markdown", "json"})
def model_cards(context: AssetExecutionContext, eval_report: Artifact, merged_model: Artifact,
                quantized_model: Artifact, artifact_store: ArtifactStore, task: TaskResource) -> Output:
    """Markdown + JSON cards: provenance, training config, metrics and gate results per model variant."""
    report = json.loads((eval_report.path / "report.json").read_text())
    inputs = {"eval_report": eval_report, "merged_model": merged_model, "quantized_model": quantized_model}
    provisional = json.loads((merged_model.path / "model_card.json").read_text())
    the_task = task.task()
    common = {k: provisional[k] for k in ("base_model", "data_versions", "training")}
    common.update(task=report.get("task", the_task.name), primary_metric=report.get("primary_metric", ""),
                  intended_use=the_task.intended_use, limitations=the_task.limitations,
                  adapter=provisional.get("adapter") or "sft_adapter")
    targets = {"merged": ("merged_model", merged_model.path, merged_model.version, provisional["method"])}
    for name, variant in report["variants"].items():
        if variant["kind"] == "quantized":
            targets[name] = ("quantized_model", variant["path"], quantized_model.version, variant["method"])
    with artifact_store.stage("model_cards") as staging:
        for name, (asset_name, path, version, method) in targets.items():
            # By owner, not by prefix: "quantized_" would also claim quantized_int8's gates.
            gates = gates_for_variant(report["gates"], name, list(report["variants"]))
            model_card = build_card(name=asset_name, variant=name, method=method, metrics=report["models"][name],
                                    gates=gates, artifacts={asset_name: version, "path": path,
                                                            "eval_report": eval_report.version}, **common)
            write_card(staging / name, model_card)
        artifact = artifact_store.publish(staging, card(context, inputs))
    merged_card = json.loads((artifact.path / "merged" / "model_card.json").read_text())
    return artifact_output(artifact, inputs, cards=len(targets),
                           merged_card=MetadataValue.md(card_markdown(merged_card)))


@asset(group_name="evaluation", kinds={"sqlite"})
def registered_models(context: AssetExecutionContext, eval_report: Artifact, model_cards: Artifact,
                      model_registry: ModelRegistry, artifact_store: ArtifactStore) -> Output:
    """Registers the evaluated merged + quantized versions, moves 'candidate', and promotes when configured."""
    from ft_assets.lineage.audit import Records, register_evaluation

    # The eval_report event this step read (the IO manager loads the latest one): its provenance pointers
    # name the exact merged and quantized events that were judged.
    record = context.instance.fetch_materializations(AssetKey("eval_report"), limit=1).records[0]
    recorded = record.asset_materialization.metadata["version"].value
    if recorded != eval_report.version:
        raise RuntimeError(f"eval_report moved on while registering: read {eval_report.version}, latest {recorded}")
    actor, moves = f"dagster run {context.run.run_id}", []
    with model_registry.open() as registry:
        models = register_evaluation(registry, Records(context.instance), record, cards_dir=model_cards.path)
        chosen = next((m for m in models if m.variant == model_registry.promote_variant), None)
        if chosen is None:
            raise ValueError(f"model_registry.promote_variant={model_registry.promote_variant!r} is not one of "
                             f"{[m.variant for m in models]}")
        if chosen.gates_passed:
            moves.append(registry.set_alias(CANDIDATE, chosen.id, actor=actor, source="run",
                                            reason=f"gates passed in eval_report {eval_report.version}"))
            if model_registry.auto_promote:
                try:
                    moves.append(registry.promote(chosen.id, actor=actor, source="run",
                                                  reason="auto_promote: gates passed"))
                except PromotionRefused as exc:  # e.g. the artifact vanished; the run still registers
                    context.log.warning(str(exc))
        else:
            context.log.warning(f"{chosen.id} failed {[g['name'] for g in chosen.failed_gates]}: candidate stays")
        moves = [m.as_dict() for m in moves if m is not None]
        models = [registry.get(m.id) for m in models]
        aliases = registry.aliases()
    inputs = {"eval_report": eval_report, "model_cards": model_cards}
    with artifact_store.stage("registered_models") as staging:
        (staging / "registered.json").write_text(json.dumps(
            {"models": [m.as_dict() for m in models], "alias_moves": moves}, indent=2, default=str))
        artifact = artifact_store.publish(staging, card(context, inputs, model_registry.model_dump(),
                                                        registered=[m.id for m in models], alias_moves=moves))
    primary = json.loads((eval_report.path / "report.json").read_text()).get("primary_metric", "exact_match")
    table = [f"| id | variant | {primary} | gates | aliases |", "|---|---|---|---|---|"] + [
        f"| {m.id} | {m.variant} | {m.metrics.get(primary)} | "
        f"{'passed' if m.gates_passed else 'FAILED: ' + ', '.join(g['name'] for g in m.failed_gates)} | "
        f"{', '.join(m.aliases) or '-'} |" for m in models]
    return artifact_output(artifact, inputs, registered=MetadataValue.md("\n".join(table)),
                           model_ids=MetadataValue.json([m.id for m in models]),
                           alias_moves=MetadataValue.json(moves), aliases=MetadataValue.json(aliases),
                           candidate=aliases.get(CANDIDATE, ""), production=aliases.get("production", ""),
                           registry=MetadataValue.path(model_registry.path))
