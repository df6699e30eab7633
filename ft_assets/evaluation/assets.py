"""The eval report: base vs adapter vs merged vs each quantized variant, on the held-out split."""

import gc
import json
import tempfile
import time
from pathlib import Path

from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset

from ft_assets.artifact_output import artifact_output, card
from ft_assets.data.text_to_sql import build_database
from ft_assets.evaluation.evaluate import GenerationSettings, evaluate_model, load_variant, markdown_table
from ft_assets.evaluation.gates import VARIANT_NAMES, all_gates
from ft_assets.evaluation.report import markdown_report, render_html
from ft_assets.lineage.artifacts import Artifact
from ft_assets.models.quantize import dir_size_bytes
from ft_assets.training.sft import read_jsonl
from resources import ArtifactStore, ModelGates


class EvalConfig(Config):
    max_examples: int = 0  # 0: the whole eval split
    max_new_tokens: int = 48
    batch_size: int = 32
    failures_per_variant: int = 5


def _variants(base_model: Artifact, sft_adapter: Artifact, merged_model: Artifact,
              quantized_model: Artifact) -> dict[str, dict]:
    """Every model variant to evaluate: how to load it and what it weighs."""
    variants = {
        "base": {"kind": "base", "method": "base model", "path": base_model.path},
        "adapter": {"kind": "adapter", "method": "base + LoRA adapter", "path": sft_adapter.path},
        "merged": {"kind": "merged", "method": "merge_and_unload", "path": merged_model.path},
    }
    for method, info in json.loads((quantized_model.path / "variants.json").read_text()).items():
        if "skipped" in info:
            continue
        variants[VARIANT_NAMES[method]] = {"kind": "quantized", "method": method,
                                           "path": quantized_model.path / method,
                                           "serving_check": info["serving_check"]}
    for v in variants.values():
        v["size_bytes"] = dir_size_bytes(v["path"])
    return variants


@asset(group_name="evaluation", kinds={"python", "html"})
def eval_report(context: AssetExecutionContext, config: EvalConfig, sft_dataset: Artifact, base_model: Artifact,
                sft_adapter: Artifact, merged_model: Artifact, quantized_model: Artifact,
                artifact_store: ArtifactStore, model_gates: ModelGates) -> Output:
    """Exact match, SQL execution accuracy, ROUGE-L and perplexity per variant, with the gates, as JSON/MD/HTML."""
    rows = read_jsonl(sft_dataset.path / "eval.jsonl")
    if config.max_examples:
        rows = rows[: config.max_examples]
    if not rows:
        raise ValueError("the eval split is empty: add data or raise sft_dataset's eval_fraction")
    settings = GenerationSettings(config.max_new_tokens, config.batch_size)
    variants = _variants(base_model, sft_adapter, merged_model, quantized_model)
    inputs = {"sft_dataset": sft_dataset, "base_model": base_model, "sft_adapter": sft_adapter,
              "merged_model": merged_model, "quantized_model": quantized_model}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        db_path = build_database(Path(tmp) / "company.sqlite")
        for name, variant in variants.items():
            context.log.info(f"evaluating {name} on {len(rows)} examples")
            started = time.perf_counter()
            model, tokenizer = load_variant(variant["kind"], variant["path"], base_dir=base_model.path)
            variant["load_seconds"] = round(time.perf_counter() - started, 3)
            results[name] = evaluate_model(model, tokenizer, rows, db_path, settings)
            context.log.info(f"{name}: {results[name]['metrics']}")
            del model
            gc.collect()
    models = {name: r["metrics"] for name, r in results.items()}
    serving = {"merged": json.loads((merged_model.path / "serving_check.json").read_text()),
               **{name: v["serving_check"] for name, v in variants.items() if "serving_check" in v}}
    gates = all_gates(models, json.loads((merged_model.path / "merge_check.json").read_text()), serving,
                      min_gain=model_gates.min_exact_match_gain, merge_tolerance=model_gates.merge_logit_tolerance,
                      quantized_tolerance=model_gates.quantized_exact_match_tolerance,
                      max_runaway_rate=model_gates.max_runaway_rate)
    report = {
        "models": models,
        "variants": {name: {k: (str(v) if k == "path" else v) for k, v in info.items() if k != "serving_check"}
                     for name, info in variants.items()},
        "gates": [g.as_dict() for g in gates],
        "generation": {"do_sample": False, **settings.__dict__},
        "failures": {name: [e for e in r["examples"] if not e["exact_match"]][: config.failures_per_variant]
                     for name, r in results.items()},
        "eval_rows": len(rows),
        "inputs": {k: a.version for k, a in inputs.items()},
    }
    loss_history = json.loads((sft_adapter.path / "train_history.json").read_text())
    with artifact_store.stage("eval_report") as staging:
        (staging / "report.json").write_text(json.dumps(report, indent=2))
        (staging / "report.md").write_text(markdown_report(report) + "\n")
        render_html(report, loss_history, staging / "report.html")
        with (staging / "predictions.jsonl").open("w") as handle:
            for name, r in results.items():
                handle.writelines(json.dumps({"model": name, **e}) + "\n" for e in r["examples"])
        artifact = artifact_store.publish(staging, card(context, inputs, config.model_dump(), metrics=models,
                                                        gates=report["gates"]))
    table = markdown_table(models)
    context.log.info("\n" + table)
    return artifact_output(
        artifact, inputs,
        report_json=MetadataValue.path(str(artifact.path / "report.json")),
        report_html=MetadataValue.path(str(artifact.path / "report.html")),
        eval_table=MetadataValue.md(table),
        report=MetadataValue.md(markdown_report(report)),
        gates=MetadataValue.md("\n".join(["| gate | passed | value | threshold |", "|---|---|---|---|"] + [
            f"| {g.name} | {'yes' if g.passed else 'NO'} | {g.value} | {g.threshold} |" for g in gates])),
        gates_passed=all(g.passed for g in gates),
        **{f"{name}_exact_match": m["exact_match"] for name, m in models.items()},
        **{f"{name}_execution_accuracy": m["execution_accuracy"] for name, m in models.items()},
    )
