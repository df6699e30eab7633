"""Data stages: raw drops -> clean -> deduped -> SFT dataset. Thin wrappers over the logic modules."""


import json

import pandas as pd
from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset

from ft_assets.artifact_output import artifact_output, card
from ft_assets.data.clean import CleanConfig
from ft_assets.data.clean import clean_records as clean_logic
from ft_assets.data.dedup import exact_dedup
from ft_assets.data.ingest import ingest_drops
from ft_assets.data.records import reason_counts
from ft_assets.data.split import split_records
from ft_assets.lineage.artifacts import Artifact
from resources import ArtifactStore, DvcResource, RawDrops

GROUP = "data"


def _read_records(artifact: Artifact) -> pd.DataFrame:
    return pd.read_parquet(artifact.path / "records.parquet")


def _preview(frame: pd.DataFrame, columns: list[str], n: int = 5) -> MetadataValue:
    return MetadataValue.md(frame[columns].head(n).to_markdown(index=False) if len(frame) else "(none)")


@asset(group_name=GROUP, kinds={"python", "parquet"})
def raw_records(context: AssetExecutionContext, raw_drops: RawDrops, artifact_store: ArtifactStore) -> Output:
    """Every JSONL drop, ingested into canonical records; unreadable lines quarantined with file, line and reason."""
    files, generated = raw_drops.list_drops()
    if generated:
        context.log.info(f"{raw_drops.path} was empty: wrote the demo drops there")
    if not files:
        raise FileNotFoundError(f"no *.jsonl drops in {raw_drops.path}")
    result = ingest_drops(files)
    with artifact_store.stage("raw_records") as staging:
        result.records.to_parquet(staging / "records.parquet", index=False)
        result.quarantine.to_json(staging / "quarantine.jsonl", orient="records", lines=True)
        drops = {p.stem: {"file": str(p), "bytes": p.stat().st_size} for p in files}
        (staging / "drops.json").write_text(json.dumps(drops, indent=2))
        artifact = artifact_store.publish(staging, card(context, {}, drops=drops))
    assert result.lines_read == len(result.records) + len(result.quarantine), "ingest lost rows"
    return artifact_output(
        artifact, {},
        drops=len(files), lines_read=result.lines_read, blank_lines=result.blank_lines,
        rows=len(result.records), quarantined=len(result.quarantine),
        quarantine_reasons=MetadataValue.json(reason_counts(result.quarantine)),
        quarantine_preview=_preview(result.quarantine, ["drop_id", "line_no", "reason"]),
    )


class CleanRecordsConfig(Config):
    min_prompt_chars: int = 8
    max_prompt_chars: int = 1000
    min_completion_chars: int = 3
    max_completion_chars: int = 2000


@asset(group_name=GROUP, kinds={"python", "parquet"})
def clean_records(context: AssetExecutionContext, config: CleanRecordsConfig, raw_records: Artifact,
                  artifact_store: ArtifactStore, dvc: DvcResource) -> Output:
    """Unicode-normalized, HTML-stripped, PII-redacted, length-filtered records; rejects quarantined."""
    records = _read_records(raw_records)
    result = clean_logic(records, CleanConfig(**config.model_dump()))
    with artifact_store.stage("clean_records") as staging:
        result.records.to_parquet(staging / "records.parquet", index=False)
        result.quarantine.to_json(staging / "quarantine.jsonl", orient="records", lines=True)
        artifact = artifact_store.publish(staging, card(context, {"raw_records": raw_records}, config.model_dump(),
                                                        pii_redacted=result.pii_counts))
    assert len(records) == len(result.records) + len(result.quarantine), "cleaning lost rows"
    dvc_md5 = dvc.track("clean_records", artifact.path)
    return artifact_output(
        artifact, {"raw_records": raw_records}, data_version=dvc_md5, dvc_md5=dvc_md5 or "",
        rows_in=len(records), rows=len(result.records), quarantined=len(result.quarantine),
        quarantine_reasons=MetadataValue.json(reason_counts(result.quarantine)),
        pii_redacted=MetadataValue.json(result.pii_counts), html_stripped=result.html_stripped,
    )


@asset(group_name=GROUP, kinds={"python", "parquet"})
def deduped_records(context: AssetExecutionContext, clean_records: Artifact, artifact_store: ArtifactStore,
                    dvc: DvcResource) -> Output:
    """Exact duplicates (after case, whitespace and punctuation normalization) removed; each names its original."""
    records = _read_records(clean_records)
    result = exact_dedup(records)
    with artifact_store.stage("deduped_records") as staging:
        result.records.to_parquet(staging / "records.parquet", index=False)
        result.duplicates.to_parquet(staging / "duplicates.parquet", index=False)
        artifact = artifact_store.publish(staging, card(context, {"clean_records": clean_records}))
    assert len(records) == len(result.records) + len(result.duplicates), "dedup lost rows"
    dvc_md5 = dvc.track("deduped_records", artifact.path)
    return artifact_output(
        artifact, {"clean_records": clean_records}, data_version=dvc_md5, dvc_md5=dvc_md5 or "",
        rows_in=len(records), rows=len(result.records), exact_duplicates=len(result.duplicates),
        duplicate_rate=round(len(result.duplicates) / max(len(records), 1), 4),
        duplicate_examples=_preview(result.duplicates, ["record_id", "duplicate_of", "prompt"]),
    )


class SftDatasetConfig(Config):
    eval_fraction: float = 0.12
    split_salt: str = ""


@asset(group_name=GROUP, kinds={"python", "jsonl"})
def sft_dataset(context: AssetExecutionContext, config: SftDatasetConfig, deduped_records: Artifact,
                artifact_store: ArtifactStore, dvc: DvcResource) -> Output:
    """Chat-formatted prompt/completion examples, split into train and eval by content hash."""
    records = _read_records(deduped_records)
    train, evaluation = split_records(records, config.eval_fraction, config.split_salt)
    with artifact_store.stage("sft_dataset") as staging:
        for name, rows in (("train", train), ("eval", evaluation)):
            with (staging / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        artifact = artifact_store.publish(staging, card(context, {"deduped_records": deduped_records},
                                                        config.model_dump()))
    example = train[0] if train else {}
    dvc_md5 = dvc.track("sft_dataset", artifact.path)
    return artifact_output(
        artifact, {"deduped_records": deduped_records}, data_version=dvc_md5, dvc_md5=dvc_md5 or "",
        train_rows=len(train), eval_rows=len(evaluation),
        example=MetadataValue.json(example),
    )
