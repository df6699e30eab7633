"""The eval report: base vs adapter vs merged vs quantized on the held-out split."""


import gc
import json
import tempfile
from pathlib import Path

from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset

from ft_assets.artifact_output import artifact_output, card
from ft_assets.data.text_to_sql import build_database
from ft_assets.evaluation.evaluate import GenerationSettings, evaluate_model, load_variant, markdown_table
from ft_assets.lineage.artifacts import Artifact
from ft_assets.training.sft import read_jsonl
from resources import ArtifactStore


class EvalConfig(Config):
    max_examples: int = 0  # 0: the whole eval split
    max_new_tokens: int = 64
    batch_size: int = 16


@asset(group_name="evaluation", kinds={"python", "json"})
def eval_report(context: AssetExecutionContext, config: EvalConfig, sft_dataset: Artifact, base_model: Artifact,
                sft_adapter: Artifact, merged_model: Artifact, quantized_model: Artifact,
                artifact_store: ArtifactStore) -> Output:
    """Exact match, SQL execution accuracy and perplexity for every model variant, as JSON and a table."""
    rows = read_jsonl(sft_dataset.path / "eval.jsonl")
    if config.max_examples:
        rows = rows[: config.max_examples]
    if not rows:
        raise ValueError("the eval split is empty: add data or raise sft_dataset's eval_fraction")
    settings = GenerationSettings(config.max_new_tokens, config.batch_size)
    variants = {"base": ("base", base_model.path), "adapter": ("adapter", sft_adapter.path),
                "merged": ("merged", merged_model.path), "quantized": ("quantized", quantized_model.path)}
    inputs = {"sft_dataset": sft_dataset, "base_model": base_model, "sft_adapter": sft_adapter,
              "merged_model": merged_model, "quantized_model": quantized_model}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        db_path = build_database(Path(tmp) / "company.sqlite")
        for name, (kind, path) in variants.items():
            context.log.info(f"evaluating {name} on {len(rows)} examples")
            model, tokenizer = load_variant(kind, path, base_dir=base_model.path)
            results[name] = evaluate_model(model, tokenizer, rows, db_path, settings)
            context.log.info(f"{name}: {results[name]['metrics']}")
            del model
            gc.collect()
    models = {name: r["metrics"] for name, r in results.items()}
    table = markdown_table(models)
    with artifact_store.stage("eval_report") as staging:
        report = {"models": models, "generation": {"do_sample": False, **settings.__dict__},
                  "eval_rows": len(rows), "inputs": {k: a.version for k, a in inputs.items()}}
        (staging / "report.json").write_text(json.dumps(report, indent=2))
        (staging / "report.md").write_text(table + "\n")
        with (staging / "predictions.jsonl").open("w") as handle:
            for name, r in results.items():
                handle.writelines(json.dumps({"model": name, **e}) + "\n" for e in r["examples"])
        artifact = artifact_store.publish(staging, card(context, inputs, config.model_dump(), metrics=models))
    context.log.info("\n" + table)
    return artifact_output(
        artifact, inputs,
        report_json=MetadataValue.path(str(artifact.path / "report.json")),
        eval_table=MetadataValue.md(table),
        **{f"{name}_exact_match": m["exact_match"] for name, m in models.items()},
        **{f"{name}_execution_accuracy": m["execution_accuracy"] for name, m in models.items()},
    )
