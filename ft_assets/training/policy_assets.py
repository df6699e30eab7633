"""The policy: which trained adapter (SFT, DPO or GRPO) is merged, evaluated, registered and served."""

import gc
import json
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset
from pydantic import Field

from ft_assets.artifact_output import artifact_output, card
from ft_assets.data import artifact_files as files
from ft_assets.evaluation.base_cache import base_eval
from ft_assets.evaluation.evaluate import (
    GenerationSettings,
    evaluate_model,
    load_tokenizer,
    load_variant,
    reference_token_budget,
    task_identity,
)
from ft_assets.evaluation.policy import choose_policy, preference_metrics
from ft_assets.lineage.artifacts import CARD_NAME, Artifact
from ft_assets.training.sft import read_jsonl
from resources import ArtifactStore, ModelGates, TaskResource

POLICY_FILE = "policy.json"


class PolicyConfig(Config):
    policy: Literal["sft", "dpo", "grpo", "best"] = Field(
        "best", description="the adapter to ship; best: the better primary metric among those passing their gates")
    max_examples: int = Field(0, ge=0, description="eval rows that rank the candidates (0: the whole split, the "
                                                   "same rows eval_report scores, so it reuses these generations)")
    token_margin: int = Field(8, ge=0, description="generation tokens beyond the longest reference")
    batch_size: int = Field(32, gt=0)
    cache_base: bool = Field(True, description="the base model's generations from the shared base-eval cache (the "
                                               "eval report's) when the base model, rows and settings are unchanged")


def _rank(context, config: PolicyConfig, task, base_model: Artifact, sft_dataset: Artifact,
          trained: dict[str, Artifact], min_gain: float, artifact_store: ArtifactStore) -> dict:
    """Base and every trained adapter on the eval split by the task's metrics: what ``best`` decides on."""
    the_task = task.task()
    rows = read_jsonl(sft_dataset.path / "eval.jsonl")
    rows = rows[: config.max_examples] if config.max_examples else rows
    out: dict = {"record_ids": [r.get("record_id") for r in rows], "results": {},
                 "max_new_tokens": reference_token_budget(load_tokenizer(base_model.path), rows, config.token_margin)}
    settings = GenerationSettings(out["max_new_tokens"], config.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        specs = the_task.prepare(Path(tmp))
        for name, kind, path in [("base", "base", base_model.path),
                                 *((n, "adapter", a.path) for n, a in trained.items())]:
            if name == "base":
                result, out["base_cache"] = base_eval(
                    context, artifact_store, base_model, {"sft_dataset": sft_dataset}, rows, specs,
                    the_task.primary_metric, settings, task_identity(the_task),
                    lambda: load_variant("base", base_model.path), enabled=config.cache_base)
            else:
                model, tokenizer = load_variant(kind, path, base_dir=base_model.path)
                result = evaluate_model(model, tokenizer, rows, specs, the_task.primary_metric, settings)
                del model
                gc.collect()
            out["results"][name] = {"metrics": result["metrics"], "generations": result["generations"]}
            context.log.info(f"policy candidate {name}: {the_task.primary_metric} "
                             f"{result['metrics'][the_task.primary_metric]:.3f}")
    base_metric = out["results"]["base"]["metrics"][the_task.primary_metric]
    for name in trained:
        metric = out["results"][name]["metrics"][the_task.primary_metric]
        out["results"][name]["gates_passed"] = metric - base_metric >= min_gain
    return out


@asset(group_name="training", kinds={"peft"})
def policy(context: AssetExecutionContext, config: PolicyConfig, base_model: Artifact, sft_dataset: Artifact,
           preference_dataset: Artifact, sft_adapter: Artifact, dpo_adapter: Artifact, grpo_adapter: Artifact,
           artifact_store: ArtifactStore, model_gates: ModelGates, task: TaskResource) -> Output:
    """The chosen adapter's files and why it was chosen; SFT, DPO and GRPO side by side when ``best`` ranks them."""
    adapters = {"sft": sft_adapter, "dpo": dpo_adapter, "grpo": grpo_adapter}
    trained = {n: a for n, a in adapters.items() if a.card().get("trained", True)}
    not_trained = {n: a.card().get("reason", "not trained") for n, a in adapters.items() if n not in trained}
    primary = task.task().primary_metric
    ranking = (_rank(context, config, task, base_model, sft_dataset, trained, model_gates.min_exact_match_gain,
                     artifact_store)
               if config.policy == "best" and len(trained) > 1 else {"results": {}})
    candidates = {n: {"metric": ranking["results"].get(n, {}).get("metrics", {}).get(primary),
                      "gates_passed": ranking["results"].get(n, {}).get("gates_passed", True)} for n in trained}
    chosen, reason = choose_policy(config.policy, candidates, not_trained)
    context.log.info(f"policy: {chosen} ({reason})")
    pairs = files.read_examples(preference_dataset.path, "eval") if (preference_dataset.path / "eval.jsonl").is_file() \
        else []
    preference = {}
    for name, adapter in trained.items():
        if pairs:
            model, tokenizer = load_variant("adapter", adapter.path, base_dir=base_model.path)
            preference[name] = preference_metrics(model, tokenizer, pairs)
            del model
    summary = {"chosen": chosen, "reason": reason, "requested": config.policy, "primary_metric": primary,
               "adapter": {"asset": f"{chosen}_adapter", "version": trained[chosen].version,
                           "path": str(trained[chosen].path)},
               "candidates": {n: {"version": a.version, "trained": n in trained, "reason": not_trained.get(n),
                                  **({"metrics": {k: v for k, v in ranking["results"][n]["metrics"].items()}}
                                     if n in ranking["results"] else {}),
                                  "gates_passed": candidates.get(n, {}).get("gates_passed"),
                                  "preference": preference.get(n)} for n, a in adapters.items()},
               "ranking": ranking}
    inputs = {"sft_adapter": sft_adapter, "dpo_adapter": dpo_adapter, "grpo_adapter": grpo_adapter,
              "base_model": base_model, "sft_dataset": sft_dataset, "preference_dataset": preference_dataset}
    with artifact_store.stage("policy") as staging:
        for item in trained[chosen].path.iterdir():
            if item.name != CARD_NAME:
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, staging / item.name)
        (staging / "adapter_card.json").write_text(json.dumps(trained[chosen].card(), indent=2))
        (staging / POLICY_FILE).write_text(json.dumps(summary, indent=2))
        artifact = artifact_store.publish(staging, card(
            context, inputs, config.model_dump(), policy=chosen, reason=reason, adapter=summary["adapter"],
            base_model=base_model.card().get("base_model"), training=trained[chosen].card().get("training"),
            base_cache=ranking.get("base_cache")))
    table = [f"| adapter | trained | {primary} | gates | prefers chosen | mean margin |", "|---|---|---|---|---|---|"]
    for n, c in summary["candidates"].items():
        metric, pref = (c.get("metrics") or {}).get(primary), c.get("preference") or {}
        cells = [n + (" (chosen)" if n == chosen else ""), "yes" if c["trained"] else f"no: {c['reason']}",
                 "" if metric is None else f"{metric:.3f}", "" if c["gates_passed"] is None else str(c["gates_passed"]),
                 str(pref.get("prefers_chosen", "")), str(pref.get("mean_margin", ""))]
        table.append("| " + " | ".join(cells) + " |")
    return artifact_output(artifact, inputs, policy=chosen, reason=reason, adapter_version=trained[chosen].version,
                           candidates=MetadataValue.md("\n".join(table)))
