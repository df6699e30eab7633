"""Data stages: raw drops -> clean -> deduped -> SFT dataset. Thin wrappers over the logic modules."""


import fnmatch
import json
from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, Config, DynamicPartitionsDefinition, MetadataValue, Output, asset
from pydantic import Field

from ft_assets.artifact_output import artifact_output, card
from ft_assets.automation.drops import DROP_SHA256_TAG, digest_stream
from ft_assets.data.clean import CleanConfig
from ft_assets.data.clean import clean_records as clean_logic
from ft_assets.data.decontam import contaminated
from ft_assets.data.dedup import DedupResult, exact_dedup, near_dedup
from ft_assets.data.ingest import check_field_map, ingest_drops
from ft_assets.data.records import ensure_record_columns, reason_counts
from ft_assets.data.split import source_record_id, split_records
from ft_assets.lineage.artifacts import Artifact
from resources import ArtifactStore, DvcResource, RawDrops

GROUP = "data"


def _read_records(artifact: Artifact) -> pd.DataFrame:
    return ensure_record_columns(pd.read_parquet(artifact.path / "records.parquet"))


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
    result = ingest_drops([local], field_map=field_map)
    drops = {key: {"file": drop.uri, "bytes": digest.bytes, "sha256": digest.sha256}}
    with artifact_store.stage("raw_records") as staging:
        result.records.to_parquet(staging / "records.parquet", index=False)
        result.quarantine.to_json(staging / "quarantine.jsonl", orient="records", lines=True)
        (staging / "drops.json").write_text(json.dumps(drops, indent=2))
        artifact = artifact_store.publish(staging, card(context, {}, drops=drops, partition=key))
    assert result.rows_seen == len(result.records) + len(result.quarantine), "ingest lost rows"
    return artifact_output(
        artifact, {},
        drop_id=key, file=drop.uri, sha256=digest.sha256, bytes=digest.bytes,
        drops=MetadataValue.json(drops), rows_seen=result.rows_seen, blank_lines=result.blank_lines,
        formats=MetadataValue.json(result.formats), fields_used=MetadataValue.json(result.fields_used),
        rows=len(result.records), quarantined=len(result.quarantine),
        quarantine_reasons=MetadataValue.json(reason_counts(result.quarantine)),
        quarantine_preview=_preview(result.quarantine, ["drop_id", "line_no", "reason"]),
    )


class CleanRecordsConfig(Config):
    drops: list[str] = Field(["*"], description="glob patterns over raw_records partition keys (drop ids): the "
                                                "drops this dataset is made of; a recipe selects its own")
    min_prompt_chars: int = 8
    max_prompt_chars: int = 1000
    min_completion_chars: int = 3
    max_completion_chars: int = 2000
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
    records = pd.concat([_read_records(raw_records[k]) for k in keys], ignore_index=True)
    inputs = {f"raw_records[{k}]": raw_records[k] for k in keys}
    drops = {k: {**raw_records[k].card().get("drops", {}).get(k, {}), "raw_version": raw_records[k].version}
             for k in keys}
    result = clean_logic(records, CleanConfig(**config.model_dump(exclude={"drops"})))
    with artifact_store.stage("clean_records") as staging:
        result.records.to_parquet(staging / "records.parquet", index=False)
        result.quarantine.to_json(staging / "quarantine.jsonl", orient="records", lines=True)
        artifact = artifact_store.publish(staging, card(context, inputs, config.model_dump(),
                                                        pii_redacted=result.pii_counts, drops=drops))
    assert len(records) == len(result.records) + len(result.quarantine), "cleaning lost rows"
    dvc_md5 = dvc.track("clean_records", artifact.path)
    return artifact_output(
        artifact, inputs, data_version=dvc_md5, dvc_md5=dvc_md5 or "",
        drops=MetadataValue.json(drops), rows_in=len(records), rows=len(result.records),
        quarantined=len(result.quarantine),
        quarantine_reasons=MetadataValue.json(reason_counts(result.quarantine)),
        pii_redacted=MetadataValue.json(result.pii_counts), html_stripped=result.html_stripped,
    )


class DedupConfig(Config):
    near_duplicates: bool = True
    near_threshold: float = Field(0.8, description="MinHash-LSH Jaccard threshold on prompt + completion")
    num_perm: int = 128
    shingle_size: int = Field(5, description="words per shingle")


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
    records = _read_records(clean_records)
    exact = exact_dedup(records)
    near = (near_dedup(exact.records, config.near_threshold, config.num_perm, config.shingle_size)
            if config.near_duplicates else DedupResult(exact.records, exact.duplicates.iloc[0:0]))
    # An exact duplicate of a row that then went as a near duplicate points at the row that stayed.
    stayed = dict(zip(near.duplicates["record_id"], near.duplicates["duplicate_of"], strict=True))
    exact_dups = exact.duplicates.assign(duplicate_of=exact.duplicates["duplicate_of"].map(lambda r: stayed.get(r, r)),
                                         method="exact", similarity=1.0)
    duplicates = pd.concat([exact_dups, near.duplicates.assign(method="near")], ignore_index=True)
    with artifact_store.stage("deduped_records") as staging:
        near.records.to_parquet(staging / "records.parquet", index=False)
        duplicates.to_parquet(staging / "duplicates.parquet", index=False)
        artifact = artifact_store.publish(staging, card(context, {"clean_records": clean_records},
                                                        config.model_dump()))
    assert len(records) == len(near.records) + len(duplicates), "dedup lost rows"
    dvc_md5 = dvc.track("deduped_records", artifact.path)
    return artifact_output(
        artifact, {"clean_records": clean_records}, data_version=dvc_md5, dvc_md5=dvc_md5 or "",
        rows_in=len(records), rows=len(near.records), exact_duplicates=len(exact.duplicates),
        near_duplicates=len(near.duplicates),
        duplicate_rate=round(len(duplicates) / max(len(records), 1), 4),
        exact_duplicate_examples=_pair_examples(exact.duplicates, records),
        near_duplicate_examples=_pair_examples(near.duplicates, records),
    )


MIN_REFERENCE_WORDS = 4


class SftDatasetConfig(Config):
    eval_fraction: float = 0.12
    split_salt: str = ""
    decontamination_ngram: int = Field(13, description="train prompts sharing a word n-gram with eval are removed")
    benchmark_files: list[str] = Field([], description="extra eval/benchmark files (any ingestible format)")
    every_assistant_turn: bool = Field(True, description="train on every assistant reply of a chat, not only "
                                                         "the last (one example per reply)")


@asset(group_name=GROUP, kinds={"python", "jsonl"})
def sft_dataset(context: AssetExecutionContext, config: SftDatasetConfig, deduped_records: Artifact,
                artifact_store: ArtifactStore, dvc: DvcResource) -> Output:
    """Chat-formatted prompt/completion examples, split into train and eval by content hash."""
    records = _read_records(deduped_records)
    preference = records[records["kind"] == "preference"]
    train, evaluation = split_records(records[records["kind"] == "sft"], config.eval_fraction, config.split_salt,
                                      every_assistant_turn=config.every_assistant_turn)
    train_records = len({source_record_id(r) for r in train})
    references = [(r["prompt"][-1]["content"], f"eval:{r['record_id']}") for r in evaluation]
    if config.benchmark_files:
        bench = ingest_drops([Path(f) for f in config.benchmark_files]).records
        # A short reference (a one-word prompt) would flag every train text containing that word.
        references += [(p, f"benchmark:{rid}") for p, rid in zip(bench["prompt"], bench["record_id"], strict=True)
                       if len(p.split()) >= MIN_REFERENCE_WORDS]
    hits = contaminated([r["prompt"][-1]["content"] for r in train], [t for t, _ in references],
                        config.decontamination_ngram)
    removed = [{**train[i], "matched_ngram": gram, "matched": references[j][1]} for i, j, gram in hits]
    dropped = {i for i, _, _ in hits}
    train = [r for i, r in enumerate(train) if i not in dropped]
    with artifact_store.stage("sft_dataset") as staging:
        for name, rows in (("train", train), ("eval", evaluation), ("decontaminated", removed)):
            with (staging / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        artifact = artifact_store.publish(staging, card(context, {"deduped_records": deduped_records},
                                                        config.model_dump()))
    example = train[0] if train else {}
    assert len(records) == train_records + len(evaluation) + len(preference), "split lost rows"
    dvc_md5 = dvc.track("sft_dataset", artifact.path)
    return artifact_output(
        artifact, {"deduped_records": deduped_records}, data_version=dvc_md5, dvc_md5=dvc_md5 or "",
        train_rows=len(train), eval_rows=len(evaluation), decontaminated_rows=len(removed),
        preference_rows_set_aside=len(preference),
        decontamination_examples=MetadataValue.md(pd.DataFrame(
            [{"train prompt": r["prompt"][-1]["content"][:80], "matched": r["matched"],
              "n-gram": r["matched_ngram"][:80]} for r in removed[:5]]).to_markdown(index=False) if removed
            else "(none)"),
        example=MetadataValue.json(example),
    )
