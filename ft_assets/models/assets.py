"""Model assets: the base model, the merged model and its quantized variant."""


import time
from typing import Literal

from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset
from pydantic import Field

from ft_assets.artifact_output import artifact_output, card
from ft_assets.data.text_to_sql import SCHEMA_SUMMARY, generate_clean_pairs
from ft_assets.lineage.artifacts import Artifact
from ft_assets.models.base import ScratchSpec, from_gguf, from_pretrained_dir, from_scratch
from ft_assets.models.merge import merge_adapter
from ft_assets.models.quantize import dir_size_bytes, quantize_bnb_nf4
from resources import ArtifactStore
from resources.paths import default_gguf_path

GROUP = "models"


class BaseModelConfig(Config):
    """Where the base model comes from. The default is SmolLM2-135M-Instruct from its GGUF file."""

    source: Literal["gguf", "pretrained", "scratch"] = "gguf"
    gguf_path: str = Field(default_factory=default_gguf_path)
    name_or_path: str = Field("", description="local directory or hub id (read from the local cache)")
    revision: str | None = None
    scratch_hidden_size: int = 64
    scratch_layers: int = 2
    scratch_vocab_size: int = 600
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
            info = from_gguf(config.gguf_path, staging)
        elif config.source == "pretrained":
            if not config.name_or_path:
                raise ValueError("base_model: source='pretrained' needs name_or_path (a directory or hub id)")
            info = from_pretrained_dir(config.name_or_path, staging, config.revision)
        else:
            spec = ScratchSpec(hidden_size=config.scratch_hidden_size, num_hidden_layers=config.scratch_layers,
                               vocab_size=config.scratch_vocab_size, seed=config.seed, corpus=_scratch_corpus())
            info = from_scratch(spec, staging)
        artifact = artifact_store.publish(staging, card(context, {}, config.model_dump(), base_model=info))
    return artifact_output(artifact, {}, **{k: v for k, v in info.items() if v is not None},
                           resolve_seconds=round(time.perf_counter() - started, 1))


class MergeConfig(Config):
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


@asset(group_name=GROUP, kinds={"pytorch", "safetensors"})
def merged_model(context: AssetExecutionContext, config: MergeConfig, base_model: Artifact, sft_adapter: Artifact,
                 artifact_store: ArtifactStore) -> Output:
    """The adapter merged (peft ``merge_and_unload``) into a full-precision base, with its tokenizer."""
    inputs = {"base_model": base_model, "sft_adapter": sft_adapter}
    with artifact_store.stage("merged_model") as staging:
        info = merge_adapter(base_model.path, sft_adapter.path, staging, config.dtype)
        artifact = artifact_store.publish(staging, card(context, inputs, config.model_dump(),
                                                        base_model=base_model.card().get("base_model")))
    return artifact_output(artifact, inputs, **info)


@asset(group_name=GROUP, kinds={"pytorch", "bitsandbytes"})
def quantized_model(context: AssetExecutionContext, merged_model: Artifact, artifact_store: ArtifactStore) -> Output:
    """The merged model quantized to bitsandbytes 4-bit NF4 and serialized so it reloads as is."""
    inputs = {"merged_model": merged_model}
    with artifact_store.stage("quantized_model") as staging:
        info = quantize_bnb_nf4(merged_model.path, staging)
        artifact = artifact_store.publish(staging, card(context, inputs, info,
                                                        base_model=merged_model.card().get("base_model")))
    merged_bytes = dir_size_bytes(merged_model.path)
    quant_bytes = dir_size_bytes(artifact.path)
    return artifact_output(artifact, inputs, **info, merged_size_bytes=merged_bytes,
                           size_ratio_vs_merged=MetadataValue.float(round(quant_bytes / merged_bytes, 3)))
