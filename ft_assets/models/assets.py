"""Model assets: the base model, the merged model and its quantized variant."""


import json
import time
from typing import Literal

from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset
from pydantic import Field, field_validator
from transformers import AutoTokenizer

from ft_assets.artifact_output import artifact_output, card
from ft_assets.data.text_to_sql import SCHEMA_SUMMARY, generate_clean_pairs
from ft_assets.evaluation.gates import VARIANT_NAMES
from ft_assets.lineage.artifacts import Artifact
from ft_assets.models.base import ScratchSpec, default_conversion_cache, from_gguf, from_pretrained_dir, from_scratch
from ft_assets.models.card import build_card, write_card
from ft_assets.models.consistency import chat_template_of, serving_check
from ft_assets.models.merge import merge_adapter, verify_merge
from ft_assets.models.quantize import (
    METHODS,
    QuantizationUnavailable,
    dir_size_bytes,
    load_quantized,
    quantize,
    unavailable_reason,
)
from ft_assets.training.sft import read_jsonl
from resources import ArtifactStore, TaskResource
from resources.paths import default_gguf_path

GROUP = "models"


class BaseModelConfig(Config):
    """Where the base model comes from. The default is SmolLM2-135M-Instruct from its GGUF file."""

    source: Literal["gguf", "pretrained", "scratch"] = "gguf"
    gguf_path: str = Field(default_factory=default_gguf_path)
    conversion_cache: str = Field(default_factory=default_conversion_cache,
                                  description="folder keeping dequantized GGUF checkpoints for every instance on "
                                              "this machine; '': convert every time")
    name_or_path: str = Field("", description="local directory or hub id (read from the local cache)")
    revision: str | None = None
    scratch_hidden_size: int = Field(64, ge=1)
    scratch_layers: int = Field(2, ge=1)
    scratch_vocab_size: int = Field(600, ge=1)
    seed: int = 0


def _scratch_corpus() -> list[str]:
    pairs = generate_clean_pairs(10_000, seed=1)
    return [SCHEMA_SUMMARY] + [f"{q} {s}" for q, s in pairs] + ["user assistant system"]


@asset(group_name=GROUP, kinds={"pytorch", "safetensors"})
def base_model(context: AssetExecutionContext, config: BaseModelConfig, artifact_store: ArtifactStore) -> Output:
    """The base model as a local safetensors directory with its tokenizer and chat template."""
    started = time.perf_counter()
    with artifact_store.stage("base_model") as staging:
        if config.source == "gguf":
            info = from_gguf(config.gguf_path, staging, config.conversion_cache or None)
        elif config.source == "pretrained":
            if not config.name_or_path:
                raise ValueError("base_model: source='pretrained' needs name_or_path (a directory or hub id)")
            info = from_pretrained_dir(config.name_or_path, staging, config.revision)
        else:
            spec = ScratchSpec(hidden_size=config.scratch_hidden_size, num_hidden_layers=config.scratch_layers,
                               vocab_size=config.scratch_vocab_size, seed=config.seed, corpus=_scratch_corpus())
            info = from_scratch(spec, staging)
        conversion = info.pop("conversion", None)  # how this run got the weights, not what they are
        artifact = artifact_store.publish(staging, card(context, {}, config.model_dump(), base_model=info,
                                                        **({"conversion": conversion} if conversion else {})))
    return artifact_output(artifact, {}, **{k: v for k, v in info.items() if v is not None},
                           **({"conversion": conversion} if conversion else {}),
                           resolve_seconds=round(time.perf_counter() - started, 1))


class MergeConfig(Config):
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


def _provenance(base_model: Artifact, policy: Artifact) -> dict:
    """Base model, data versions, training config and the shipped adapter, read from the upstream cards."""
    adapter_card = json.loads((policy.path / "adapter_card.json").read_text())
    chosen = policy.card().get("adapter") or {}
    return {
        "base_model": base_model.card().get("base_model") or {},
        "data_versions": {"sft_dataset": adapter_card.get("inputs", {}).get("sft_dataset", {}).get("version")},
        "training": {"method": "lora", **adapter_card.get("config", {}),
                     **{k: v for k, v in (adapter_card.get("training") or {}).items() if not isinstance(v, dict)}},
        "artifacts": {"base_model": base_model.version, "policy": policy.version,
                      chosen.get("asset", "sft_adapter"): chosen.get("version")},
        "adapter": chosen.get("asset", "sft_adapter"),
    }


@asset(group_name=GROUP, kinds={"pytorch", "safetensors"})
def merged_model(context: AssetExecutionContext, config: MergeConfig, base_model: Artifact, policy: Artifact,
                 artifact_store: ArtifactStore, task: TaskResource) -> Output:
    """The policy's adapter merged into a full-precision base (never a quantized one), checked against base +
    adapter."""
    inputs = {"base_model": base_model, "policy": policy}
    provenance = _provenance(base_model, policy)
    with artifact_store.stage("merged_model") as staging:
        info = merge_adapter(base_model.path, policy.path, staging, config.dtype)
        probes = task.task()
        checks = verify_merge(base_model.path, policy.path, staging, probes.probes, probes.probe_max_new_tokens)
        (staging / "merge_check.json").write_text(json.dumps(checks["merge_check"], indent=2))
        (staging / "serving_check.json").write_text(json.dumps(checks["serving_check"], indent=2))
        method = f"{provenance['adapter']} ({provenance['training'].get('method', 'lora')}) merge " \
                 f"({config.dtype})"
        write_card(staging, build_card(name="merged_model", variant="merged", method=method, metrics=None, gates=[],
                                       **provenance))
        artifact = artifact_store.publish(staging, card(context, inputs, config.model_dump(),
                                                        base_model=provenance["base_model"], **checks))
    return artifact_output(artifact, inputs, **info,
                           merge_check=MetadataValue.json(checks["merge_check"]),
                           serving_check=MetadataValue.json(checks["serving_check"]))


class QuantizeConfig(Config):
    methods: list[str] = Field(["bnb-nf4", "bnb-int8"], description=f"any of {', '.join(METHODS)}")
    calibration_examples: int = Field(64, ge=1, description="GPTQ calibration texts taken from the train split")

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown quantization method(s) {unknown}: use any of {', '.join(METHODS)}")
        return methods


@asset(group_name=GROUP, kinds={"pytorch", "bitsandbytes"})
def quantized_model(context: AssetExecutionContext, config: QuantizeConfig, merged_model: Artifact,
                    sft_dataset: Artifact, artifact_store: ArtifactStore, task: TaskResource) -> Output:
    """The merged model quantized by each configured method, one sub-directory each; unavailable ones skipped."""
    for method in config.methods:
        unavailable_reason(method)  # unknown methods fail here, before any work
    inputs = {"merged_model": merged_model, "sft_dataset": sft_dataset}
    merged_card = merged_model.card()
    training_template = chat_template_of(merged_model.path)
    calibration = _calibration_texts(sft_dataset, config.calibration_examples)
    variants: dict[str, dict] = {}
    with artifact_store.stage("quantized_model") as staging:
        for method in config.methods:
            try:
                info = quantize(method, merged_model.path, staging / method, calibration)
            except QuantizationUnavailable as exc:
                context.log.warning(f"{method} skipped: {exc}")
                variants[method] = {"method": method, "skipped": str(exc)}
                continue
            model, load_seconds = load_quantized(staging / method)
            tokenizer = AutoTokenizer.from_pretrained(staging / method)
            info["load_seconds"] = load_seconds
            info["serving_check"] = serving_check(model, tokenizer, training_template, task.task().probes,
                                                  task.task().probe_max_new_tokens)
            del model
            write_card(staging / method, build_card(
                name="quantized_model", variant=VARIANT_NAMES[method], method=method, metrics=None, gates=[],
                base_model=merged_card.get("base_model") or {}, data_versions={"sft_dataset": sft_dataset.version},
                training={}, artifacts={"merged_model": merged_model.version}))
            variants[method] = info
            context.log.info(f"{method}: {info['size_bytes'] / 1e6:.1f} MB, loads in {load_seconds}s")
        if not any("skipped" not in v for v in variants.values()):
            raise RuntimeError(f"no quantization method could run here: {variants}")
        (staging / "variants.json").write_text(json.dumps(variants, indent=2))
        artifact = artifact_store.publish(staging, card(context, inputs, config.model_dump(), variants=variants,
                                                        base_model=merged_card.get("base_model")))
    merged_bytes = dir_size_bytes(merged_model.path)
    return artifact_output(artifact, inputs, merged_size_bytes=merged_bytes,
                           variants=MetadataValue.md(_variants_table(variants, merged_bytes)))


def _calibration_texts(sft_dataset: Artifact, n: int) -> list[str]:
    rows = read_jsonl(sft_dataset.path / "train.jsonl")[:n]
    return [" ".join(m["content"] for m in r["prompt"] + r["completion"]) for r in rows]


def _variants_table(variants: dict[str, dict], merged_bytes: int) -> str:
    lines = ["| method | size MB | vs merged | load s | runaway rate | note |", "|---|---|---|---|---|---|"]
    for method, v in variants.items():
        if "skipped" in v:
            lines.append(f"| {method} | | | | | skipped: {v['skipped']} |")
        else:
            lines.append(f"| {method} | {v['size_bytes'] / 1e6:.1f} | {v['size_bytes'] / merged_bytes:.2f} | "
                         f"{v['load_seconds']} | {v['serving_check']['runaway_rate']} | |")
    return "\n".join(lines)
