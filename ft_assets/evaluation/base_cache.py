"""The base model's evaluations, cached: the one place the policy asset and the eval report get them from.

An unchanged base model on unchanged rows with the same generation settings and task gives the same greedy
generations, so they are generated once and kept as an ``eval_base_cache`` artifact (its card names the base
model and the dataset it came from, so the cache shows in lineage). The key hashes the base model's version, the
rows themselves (prompts and references), the generation settings and the task's name, metrics and system
prompt; any change to one of them misses. The model is loaded only on a miss.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Callable

from dagster import AssetExecutionContext

from ft_assets.artifact_output import card
from ft_assets.evaluation.evaluate import GenerationSettings, evaluate_model, rescored
from ft_assets.lineage.artifacts import Artifact
from resources import ArtifactStore

BASE_CACHE = "eval_base_cache"  # artifact-store name of the cached base-model evaluations
CACHE_FILE = "base_eval.json"


def cache_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def rows_digest(rows: list[dict]) -> str:
    """What the rows ask and expect: the prompts and references, in order."""
    return cache_key([[r.get("prompt"), r.get("completion")] for r in rows])


def base_eval(context: AssetExecutionContext, artifact_store: ArtifactStore, base_model: Artifact,
              inputs: dict[str, Artifact], rows: list[dict], specs: dict[str, dict], primary: str,
              settings: GenerationSettings, task_identity: dict, load: Callable[[], tuple],
              enabled: bool = True) -> tuple[dict, dict]:
    """``(result, cache)``: the base model's ``evaluate_model`` result on ``rows`` (scored now, generations from
    the cache when the key hits) and ``{"key", "hit", "artifact"}``. ``load`` returns ``(model, tokenizer)``;
    ``inputs`` are the artifacts the rows came from, for the cache's card."""
    key = cache_key(base_model.version, rows_digest(rows), settings.__dict__, task_identity)
    cached = artifact_store.lookup(BASE_CACHE, key) if enabled else None
    if cached is not None:
        hit = json.loads((cached.path / CACHE_FILE).read_text())
        result = rescored(hit["generations"], hit["perplexity"], rows, specs, primary)
        context.log.info(f"base model eval: cache hit {cached.version} (key {key}), no generation")
        return result, {"key": key, "hit": True, "artifact": cached.version}
    model, tokenizer = load()
    result = evaluate_model(model, tokenizer, rows, specs, primary, settings)
    del model
    gc.collect()
    if not enabled:
        return result, {}
    with artifact_store.stage(BASE_CACHE) as staging:
        (staging / CACHE_FILE).write_text(json.dumps({"generations": result["generations"],
                                                      "perplexity": result["metrics"]["perplexity"]}))
        stored = artifact_store.publish(staging, card(context, {"base_model": base_model, **inputs},
                                                      {"cache_key": key, "generation": settings.__dict__,
                                                       "task": task_identity, "rows": len(rows)}))
    artifact_store.remember(BASE_CACHE, key, stored)
    return result, {"key": key, "hit": False, "artifact": stored.version}
