"""Data stages: raw drops -> clean -> deduped -> SFT dataset. Thin wrappers over ``ft_assets.data.pipeline``."""

import fnmatch

import pandas as pd
from dagster import AssetExecutionContext, Config, DynamicPartitionsDefinition, MetadataValue, Output, asset
from pydantic import Field

from ft_assets.artifact_output import artifact_output, card
from ft_assets.automation.drops import DROP_SHA256_TAG, digest_stream
from ft_assets.data import artifact_files as files
from ft_assets.data.clean import CleanConfig
from ft_assets.data.ingest import check_field_map
from ft_assets.data.pipeline import ingest_to_artifact
from ft_assets.data.records import reason_examples
from ft_assets.data.streamed import clean_to_artifact, split_to_artifact
from ft_assets.data.streamed_dedup import dedup_to_artifact
from ft_assets.lineage.artifacts import Artifact
from resources import ArtifactStore, DvcResource, RawDrops

GROUP = "data"


def _preview(frame: pd.DataFrame, columns: list[str], n: int = 5) -> MetadataValue:
    return MetadataValue.md(frame[columns].head(n).to_markdown(index=False) if len(frame) else "(none)")


# One partition per drop file; the drop sensor (ft_assets/automation/sensors.py) registers them.
raw_drops_partitions = DynamicPartitionsDefinition(name="raw_drops")


@asset(group_name=GROUP, kinds={"python", "parquet"}, partitions_def=raw_drops_partitions)
def raw_records(context: AssetExecutionContext, raw_drops: RawDrops, artifact_store: ArtifactStore) -> Output:
    """One drop file ingested into canonical records; unreadable rows quarantined with file, line and reason."""
    key = context.partition_key
    field_map = check_field_map(raw_drops.field_map)  # a bad map fails here, before any file is read
    drop = raw_drops.find(key)
    local = raw_drops.fetch(drop)
    with local.open("rb") as stream:
        digest = digest_stream(stream, local.name)
    expected = context.run.tags.get(DROP_SHA256_TAG)
    if expected and expected != digest.sha256:
        context.log.warning(f"{drop.uri} changed after the sensor hashed it ({expected[:12]} -> "
                            f"{digest.sha256[:12]}): ingesting what is there now")
    drops = {key: {"file": drop.uri, "bytes": digest.bytes, "sha256": digest.sha256}}
    with artifact_store.stage("raw_records") as staging:
        # Streamed to disk in batches; the accounting is checked before anything is published.
        result = ingest_to_artifact([local], staging, field_map, raw_drops.limits())
        files.write_drops(staging, drops)
        artifact = artifact_store.publish(staging, card(context, {}, drops=drops, partition=key))
    return artifact_output(
        artifact, {},
        drop_id=key, file=drop.uri, sha256=digest.sha256, bytes=digest.bytes,
        drops=MetadataValue.json(drops), rows_seen=result.rows_seen, blank_lines=result.blank_lines,
        formats=MetadataValue.json(result.formats), fields_used=MetadataValue.json(result.fields_used),
        rows=result.records, quarantined=result.quarantined,
        quarantine_reasons=MetadataValue.json(result.quarantine_reasons),
        quarantine_preview=_preview(result.quarantine_sample, ["drop_id", "line_no", "reason"]),
        quarantine_examples=MetadataValue.json(reason_examples(result.quarantine_sample)),
    )


class CleanRecordsConfig(Config):
    drops: list[str] = Field(["*"], description="glob patterns over raw_records partition keys (drop ids): the "
                                                "drops this dataset is made of; a recipe selects its own")
    min_prompt_chars: int = Field(8, ge=0)
    max_prompt_chars: int = Field(1000, ge=1)
    min_completion_chars: int = Field(3, ge=0)
    max_completion_chars: int = Field(2000, ge=1)
    keep_newlines: bool = Field(False, description="keep line breaks and indentation (code, lists, worked "
                                                   "answers); False collapses all whitespace to single spaces")


def selected_drops(keys: list[str], patterns: list[str]) -> list[str]:
    """The partition keys matching any of ``patterns`` (fnmatch globs), in key order."""
    return sorted(k for k in keys if any(fnmatch.fnmatchcase(k, p) for p in patterns))


@asset(group_name=GROUP, kinds={"python", "parquet"})
def clean_records(context: AssetExecutionContext, config: CleanRecordsConfig, raw_records: dict[str, Artifact],
                  artifact_store: ArtifactStore, dvc: DvcResource) -> Output:
    """The selected drops, Unicode-normalized, HTML-stripped, PII-redacted, length-filtered; rejects quarantined."""
    if not raw_records:
        raise ValueError("no drop has been ingested yet: add a drop file and materialize its raw_records partition")
    # Partition-key order, so the same drops always give the same content (and data version).
    keys = selected_drops(list(raw_records), config.drops)
    if not keys:
        raise ValueError(f"no ingested drop matches clean_records.drops={config.drops}; ingested drops: "
                         f"{', '.join(sorted(raw_records))}")
    inputs = {f"raw_records[{k}]": raw_records[k] for k in keys}
    drops = {k: {**raw_records[k].card().get("drops", {}).get(k, {}), "raw_version": raw_records[k].version}
             for k in keys}
    with artifact_store.stage("clean_records") as staging:
        # Streamed drop by drop, batch by batch (memory: a few batches); the accounting is checked before publish.
        result = clean_to_artifact([raw_records[k].path for k in keys], staging,
                                   CleanConfig(**config.model_dump(exclude={"drops"})))
        artifact = artifact_store.publish(staging, card(context, inputs, config.model_dump(),
                                                        pii_redacted=result.pii_counts, drops=drops))
    dvc_md5 = dvc.track("clean_records", artifact.path)
    return artifact_output(
        artifact, inputs, data_version=dvc_md5, dvc_md5=dvc_md5 or "",
        drops=MetadataValue.json(drops), rows_in=result.rows_in, rows=result.records,
        quarantined=result.quarantined,
        quarantine_reasons=MetadataValue.json(result.quarantine_reasons),
        quarantine_examples=MetadataValue.json(reason_examples(result.quarantine_sample)),
        pii_redacted=MetadataValue.json(result.pii_counts), html_stripped=result.html_stripped,
    )


class DedupConfig(Config):
    near_duplicates: bool = True
    near_threshold: float = Field(0.8, gt=0, le=1, description="MinHash-LSH Jaccard threshold on prompt + completion")
    num_perm: int = Field(128, ge=2)
    shingle_size: int = Field(5, ge=1, description="words per shingle")


def _pair_examples(duplicates: pd.DataFrame, kept: pd.DataFrame, n: int = 5) -> MetadataValue:
    if duplicates.empty:
        return MetadataValue.md("(none)")
    prompts = dict(zip(kept["record_id"], kept["prompt"], strict=True))
    rows = duplicates.head(n)
    table = pd.DataFrame({"duplicate": rows["prompt"].str.slice(0, 80),
                          "kept": [str(prompts.get(k, k))[:80] for k in rows["duplicate_of"]],
                          "similarity": rows.get("similarity", pd.Series([1.0] * len(rows)))})
    return MetadataValue.md(table.to_markdown(index=False))


@asset(group_name=GROUP, kinds={"python", "parquet"})
def deduped_records(context: AssetExecutionContext, config: DedupConfig, clean_records: Artifact,
                    artifact_store: ArtifactStore, dvc: DvcResource) -> Output:
    """Exact duplicates (normalized text) then MinHash-LSH near duplicates removed; each names what it duplicated."""
    with artifact_store.stage("deduped_records") as staging:
        # Streamed: keys and signatures a batch at a time, the rows written batch by batch (memory: no whole
        # frame, no texts); the accounting is checked before publish.
        result = dedup_to_artifact(clean_records.path, staging, config.near_duplicates, config.near_threshold,
                                   config.num_perm, config.shingle_size)
        artifact = artifact_store.publish(staging, card(context, {"clean_records": clean_records},
                                                        config.model_dump()))
    dvc_md5 = dvc.track("deduped_records", artifact.path)
    duplicates = result.duplicates
    return artifact_output(
        artifact, {"clean_records": clean_records}, data_version=dvc_md5, dvc_md5=dvc_md5 or "",
        rows_in=result.rows_in, rows=result.records, exact_duplicates=result.exact,
        near_duplicates=result.near, duplicate_rate=round(len(duplicates) / max(result.rows_in, 1), 4),
        # duplicate_of always names a row that stayed; kept_sample holds those the first duplicates name.
        exact_duplicate_examples=_pair_examples(duplicates[duplicates["method"] == "exact"], result.kept_sample),
        near_duplicate_examples=_pair_examples(duplicates[duplicates["method"] == "near"], result.kept_sample),
    )


class SftDatasetConfig(Config):
    eval_fraction: float = Field(0.12, gt=0, lt=1, description="share of examples held out for evaluation")
    split_salt: str = ""
    decontamination_ngram: int = Field(13, ge=1, description="train prompts sharing a word n-gram with eval are "
                                                             "removed")
    benchmark_files: list[str] = Field([], description="extra eval/benchmark files (any ingestible format)")
    every_assistant_turn: bool = Field(True, description="train on every assistant reply of a chat, not only "
                                                         "the last (one example per reply)")


@asset(group_name=GROUP, kinds={"python", "jsonl"})
def sft_dataset(context: AssetExecutionContext, config: SftDatasetConfig, deduped_records: Artifact,
                artifact_store: ArtifactStore, dvc: DvcResource) -> Output:
    """Chat-formatted prompt/completion examples, split into train and eval by content hash."""
    with artifact_store.stage("sft_dataset") as staging:
        # Streamed: eval first, then train a batch at a time against the eval prompts (see split_to_artifact).
        split = split_to_artifact(deduped_records.path, staging, config.eval_fraction, config.split_salt,
                                  config.decontamination_ngram, config.benchmark_files,
                                  every_assistant_turn=config.every_assistant_turn)
        artifact = artifact_store.publish(staging, card(context, {"deduped_records": deduped_records},
                                                        config.model_dump()))
    removed = split.decontaminated_sample
    dvc_md5 = dvc.track("sft_dataset", artifact.path)
    return artifact_output(
        artifact, {"deduped_records": deduped_records}, data_version=dvc_md5, dvc_md5=dvc_md5 or "",
        train_rows=split.train, eval_rows=split.eval, decontaminated_rows=split.decontaminated,
        train_records=split.train_records,  # records behind train_rows (a chat gives one example per reply)
        preference_rows_set_aside=split.preference_rows,
        decontamination_examples=MetadataValue.md(pd.DataFrame(
            [{"train prompt": r["prompt"][-1]["content"][:80], "matched": r["matched"],
              "n-gram": r["matched_ngram"][:80]} for r in removed[:5]]).to_markdown(index=False) if removed
            else "(none)"),
        example=MetadataValue.json(split.first_train),
    )
