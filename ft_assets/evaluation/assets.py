"""The eval report: base vs adapter vs merged vs each quantized variant on the held-out split, by the task."""

import gc
import json
import tempfile
import time
from pathlib import Path

from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset
from pydantic import Field

from ft_assets.artifact_output import artifact_output, card
from ft_assets.evaluation.base_cache import base_eval
from ft_assets.evaluation.evaluate import (
    GenerationSettings,
    evaluate_model,
    load_tokenizer,
    load_variant,
    markdown_table,
    reference_token_budget,
    rescored,
    task_identity,
)
from ft_assets.evaluation.forgetting import load_forgetting_rows, perplexity_drift
from ft_assets.evaluation.gates import VARIANT_NAMES, all_gates, merged_matches_adapter
from ft_assets.evaluation.report import markdown_report, render_html
from ft_assets.lineage.artifacts import Artifact
from ft_assets.models.quantize import dir_size_bytes
from ft_assets.training.sft import read_jsonl
from resources import ArtifactStore, ModelGates, TaskResource


class EvalConfig(Config):
    max_examples: int = Field(0, ge=0, description="eval rows scored; 0: the whole eval split")
    max_new_tokens: int = Field(0, ge=0, description="generation length; 0: the longest reference in tokens + margin")
    token_margin: int = Field(8, ge=0, description="tokens beyond the longest reference when max_new_tokens is 0")
    batch_size: int = Field(32, ge=1)
    failures_per_variant: int = Field(5, ge=0)
    reuse_merged_generations: bool = Field(True, description="when merged_matches_adapter holds (same logits), "
                                                             "generate once for adapter and merged (with the "
                                                             "merged model unless the policy ranking already did "
                                                             "the adapter's)")
    cache_base: bool = Field(True, description="reuse the base model's generations for the same base model, eval "
                                               "split, eval config and task")
    share_prompt_prefix: bool = Field(True, description="run the tokens every prompt starts with (system prompt, "
                                                        "chat header) once and reuse their KV cache per batch; off: "
                                                        "every row runs whole (models whose cache cannot be copied)")


def _variants(base_model: Artifact, policy: Artifact, merged_model: Artifact,
              quantized_model: Artifact) -> dict[str, dict]:
    """Every model variant to evaluate: how to load it and what it weighs."""
    variants = {
        "base": {"kind": "base", "method": "base model", "path": base_model.path},
        "adapter": {"kind": "adapter", "method": f"base + {policy.card().get('policy', 'sft')} adapter (the policy)",
                    "path": policy.path},
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


def _forgetting(context, task, base_model: Artifact, tuned: tuple[str, Path], settings: GenerationSettings,
                artifact_store: ArtifactStore, use_cache: bool) -> dict:
    """Base vs tuned on the task's general-ability set, scored by its own scorer; the base side from the shared
    base-eval cache (same base model, rows, length and scorer: same generations). ``tuned``: (kind, path) of the
    tuned model to load, the merged one where it is proven logit-identical to the adapter (no LoRA overhead in
    every generated token), else base + adapter."""
    spec = task.forgetting
    if not Path(spec["path"]).is_file():  # e.g. the shared datasets folder is not mounted on this machine
        context.log.warning(f"forgetting set {spec['path']} is missing: forgetting gate skipped")
        return {"path": str(spec["path"]), "skipped": f"file {spec['path']} is missing"}
    rows = load_forgetting_rows(spec["path"], int(spec.get("max_examples", 50)), spec.get("system_prompt", ""))
    metric = {"scorer": spec.get("scorer", "exact_match"), **(spec.get("options") or {})}
    out = {"path": str(spec["path"]), "scorer": metric["scorer"], "n": len(rows),
           "tolerance": float(spec.get("tolerance", 0.05))}
    out["tuned_model"] = tuned[0]
    if metric["scorer"] == "perplexity":  # teacher-forced: nothing generated, so nothing to cache
        out.update(perplexity_drift(lambda: load_variant("base", base_model.path),
                                    lambda: load_variant(tuned[0], tuned[1], base_dir=base_model.path), rows))
        context.log.info(f"forgetting set perplexity on {len(rows)} rows: base {out['base']:.3f}, "
                         f"tuned {out['tuned']:.3f}")
        return out
    length = int(spec.get("max_new_tokens") or min(256, reference_token_budget(load_tokenizer(base_model.path),
                                                                               rows)))
    forgetting_settings = GenerationSettings(length, settings.batch_size, settings.share_prefix)
    base, out["base_cache"] = base_eval(
        context, artifact_store, base_model, {}, rows, {"forgetting": metric}, "forgetting", forgetting_settings,
        {"forgetting": metric, "path": str(spec["path"])},
        lambda: load_variant("base", base_model.path), enabled=use_cache)
    model, tokenizer = load_variant(tuned[0], tuned[1], base_dir=base_model.path)
    tuned_result = evaluate_model(model, tokenizer, rows, {"forgetting": metric}, "forgetting", forgetting_settings)
    del model
    gc.collect()
    for name, result in (("base", base), ("tuned", tuned_result)):
        out[name] = result["metrics"]["forgetting"]
        context.log.info(f"forgetting set, {name}: {out[name]:.3f} on {len(rows)} rows")
    return out


def _policy_generations(policy: Artifact, rows: list[dict], config: EvalConfig) -> dict:
    """The generations (and perplexities) the policy asset already computed on these same rows for the base and
    each candidate adapter, so they are scored here instead of computed twice; empty when its rows or length
    differ."""
    ranking = json.loads((policy.path / "policy.json").read_text()).get("ranking") or {}
    if not ranking.get("results") or ranking.get("record_ids") != [r.get("record_id") for r in rows] \
            or (config.max_new_tokens and config.max_new_tokens != ranking.get("max_new_tokens")):
        return {}
    return {"max_new_tokens": ranking["max_new_tokens"], "base_cache": ranking.get("base_cache") or {},
            "generations": {name: r["generations"] for name, r in ranking["results"].items()},
            "perplexity": {name: r["metrics"].get("perplexity") for name, r in ranking["results"].items()}}


@asset(group_name="evaluation", kinds={"python", "html"})
def eval_report(context: AssetExecutionContext, config: EvalConfig, sft_dataset: Artifact, base_model: Artifact,
                policy: Artifact, merged_model: Artifact, quantized_model: Artifact,
                artifact_store: ArtifactStore, model_gates: ModelGates, task: TaskResource) -> Output:
    """The task's metrics and perplexity per variant, the forgetting set, and the gates, as JSON/MD/HTML."""
    the_task = task.task()
    primary = the_task.primary_metric
    rows = read_jsonl(sft_dataset.path / "eval.jsonl")
    if config.max_examples:
        rows = rows[: config.max_examples]
    if not rows:
        raise ValueError("the eval split is empty: add data or raise sft_dataset's eval_fraction")
    variants = _variants(base_model, policy, merged_model, quantized_model)
    ranked = _policy_generations(policy, rows, config)
    inputs = {"sft_dataset": sft_dataset, "base_model": base_model, "policy": policy,
              "merged_model": merged_model, "quantized_model": quantized_model}
    merge_check = json.loads((merged_model.path / "merge_check.json").read_text())
    merge_identical = merged_matches_adapter(merge_check, model_gates.merge_logit_tolerance).passed
    results, reused, base_cache = {}, {}, {}
    length = config.max_new_tokens or reference_token_budget(load_tokenizer(base_model.path), rows,
                                                             config.token_margin)
    # Every variant shares the base model's tokenizer.
    settings = GenerationSettings(length, config.batch_size, config.share_prompt_prefix)
    sources = {"base": "base", "adapter": policy.card().get("policy", "sft")}
    ranked_ok = {name: source in ranked.get("generations", {}) and ranked["max_new_tokens"] == length
                 and ranked["perplexity"].get(source) is not None for name, source in sources.items()}
    # merged_matches_adapter holds: the same logits, so one pass serves both. Unless the policy's ranking already
    # generated the adapter's, the merged model runs it (no LoRA matmuls in every token) and the adapter reuses it.
    share = config.reuse_merged_generations and merge_identical
    order = list(variants)
    if share and not ranked_ok["adapter"]:
        order.remove("adapter")
        order.insert(order.index("merged") + 1, "adapter")
    with tempfile.TemporaryDirectory() as tmp:
        specs = the_task.prepare(Path(tmp))  # e.g. the demo builds its database here
        for name in order:
            variant = variants[name]
            if ranked_ok.get(name):
                # Same model, same rows, same settings: the policy's generations and perplexity, nothing loaded.
                source = sources[name]
                results[name] = rescored(ranked["generations"][source], ranked["perplexity"][source], rows,
                                         specs, primary)
                reused[name] = f"policy ({source})"
                if name == "base":
                    base_cache = ranked["base_cache"]
                continue
            other = {"merged": "adapter", "adapter": "merged"}.get(name)
            if share and other in results:  # same logits: the same generations and perplexity
                results[name] = rescored(results[other]["generations"], results[other]["metrics"]["perplexity"],
                                         rows, specs, primary)
                reused[name] = other
                continue
            if name == "base":  # the policy did not rank: the shared base cache
                results[name], base_cache = base_eval(
                    context, artifact_store, base_model, {"sft_dataset": sft_dataset}, rows, specs, primary, settings,
                    task_identity(the_task), lambda: load_variant("base", base_model.path), enabled=config.cache_base)
                continue
            started = time.perf_counter()
            model, tokenizer = load_variant(variant["kind"], variant["path"], base_dir=base_model.path)
            variant["load_seconds"] = round(time.perf_counter() - started, 3)
            context.log.info(f"evaluating {name} on {len(rows)} examples")
            results[name] = evaluate_model(model, tokenizer, rows, specs, primary, settings)
            context.log.info(f"{name}: {results[name]['metrics']}")
            del model
            gc.collect()
    results = {name: results[name] for name in variants}  # the report lists variants in their own order
    models = {name: {k: v for k, v in r["metrics"].items()} for name, r in results.items()}
    for name, source in reused.items():
        models[name]["generations_reused_from"] = source
    tuned = ("merged", merged_model.path) if merge_identical else ("adapter", policy.path)
    forgetting = (_forgetting(context, the_task, base_model, tuned, settings, artifact_store, config.cache_base)
                  if the_task.forgetting else None)
    serving = {"merged": json.loads((merged_model.path / "serving_check.json").read_text()),
               **{name: v["serving_check"] for name, v in variants.items() if "serving_check" in v}}
    gates = all_gates(models, merge_check, serving,
                      min_gain=model_gates.min_exact_match_gain, merge_tolerance=model_gates.merge_logit_tolerance,
                      quantized_tolerance=model_gates.quantized_exact_match_tolerance,
                      max_runaway_rate=model_gates.max_runaway_rate, metric=primary, forgetting=forgetting)
    report = {
        "task": the_task.name,
        "primary_metric": primary,
        "metric_names": list(specs),
        "models": models,
        "variants": {name: {k: (str(v) if k == "path" else v) for k, v in info.items() if k != "serving_check"}
                     for name, info in variants.items()},
        "gates": [g.as_dict() for g in gates],
        "generation": {"do_sample": False, **settings.__dict__,
                       "length_from": "config" if config.max_new_tokens else "longest reference + margin"},
        "failures": {name: [e for e in r["examples"] if not e["correct"]][: config.failures_per_variant]
                     for name, r in results.items()},
        "reused_generations": reused,
        "base_cache": base_cache,
        "forgetting": forgetting,
        "policy": {k: v for k, v in json.loads((policy.path / "policy.json").read_text()).items() if k != "ranking"},
        "eval_rows": len(rows),
        "inputs": {k: a.version for k, a in inputs.items()},
    }
    history = policy.path / "train_history.json"
    loss_history = json.loads(history.read_text()) if history.is_file() else []
    with artifact_store.stage("eval_report") as staging:
        (staging / "report.json").write_text(json.dumps(report, indent=2))
        (staging / "report.md").write_text(markdown_report(report) + "\n")
        render_html(report, loss_history, staging / "report.html")
        with (staging / "predictions.jsonl").open("w") as handle:
            for name, r in results.items():
                handle.writelines(json.dumps({"model": name, **e}) + "\n" for e in r["examples"])
        artifact = artifact_store.publish(staging, card(context, inputs, config.model_dump(), metrics=models,
                                                        gates=report["gates"], task=the_task.name,
                                                        primary_metric=primary, base_cache=base_cache,
                                                        reused_generations=reused))
    table = markdown_table(models, list(specs))
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
        eval_rows=len(rows), task=the_task.name, primary_metric=primary,
        base_cache_hit=bool(base_cache.get("hit")), merged_generations_reused=bool(reused),
        **{f"{name}_{metric}": m[metric] for name, m in models.items() for metric in specs},
    )
