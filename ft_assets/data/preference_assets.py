"""The preference dataset: DPO pairs split from the deduplicated records. A thin wrapper over ``preference.py``."""

from collections.abc import Iterator

import pandas as pd
from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset
from pydantic import Field

from ft_assets.artifact_output import artifact_output, card
from ft_assets.data import artifact_files as files
from ft_assets.data.preference import build_preference_dataset
from ft_assets.lineage.artifacts import Artifact
from resources import ArtifactStore, DvcResource


class PreferenceDatasetConfig(Config):
    eval_fraction: float = Field(0.15, ge=0, lt=1, description="share of prompts held out; all pairs of one prompt "
                                                               "stay together")
    split_salt: str = ""


@asset(group_name="data", kinds={"python", "jsonl"})
def preference_dataset(context: AssetExecutionContext, config: PreferenceDatasetConfig, deduped_records: Artifact,
                       artifact_store: ArtifactStore, dvc: DvcResource) -> Iterator[Output]:
    """Chat-format prompt / chosen / rejected pairs for DPO, split by prompt hash; unusable pairs quarantined.

    When the records hold no preference pairs at all, an empty dataset is published (``pairs_in`` 0): its gate
    passes with nothing to check and dpo_adapter records that it did not train, so SFT-only data runs the rest of
    the graph to the end. (An asset that yields nothing would make Dagster skip every step downstream of it.)
    """
    records = files.read_records(deduped_records.path)
    n_pairs = int((records["kind"] == "preference").sum())
    if n_pairs == 0:
        context.log.info("no preference pairs in deduped_records: empty preference_dataset, DPO will not train")
    split = build_preference_dataset(records, config.eval_fraction, config.split_salt)
    assert n_pairs == len(split.train) + len(split.eval) + len(split.quarantine), "preference split lost rows"
    inputs = {"deduped_records": deduped_records}
    with artifact_store.stage("preference_dataset") as staging:
        for name, rows in (("train", split.train), ("eval", split.eval), ("quarantine", split.quarantine)):
            files.write_examples(staging, name, rows)
        artifact = artifact_store.publish(staging, card(context, inputs, config.model_dump()))
    dvc_md5 = dvc.track("preference_dataset", artifact.path)
    quarantine_preview = (pd.DataFrame(split.quarantine)[["record_id", "reason"]].head(5).to_markdown(index=False)
                          if split.quarantine else "(none)")
    yield artifact_output(
        artifact, inputs, data_version=dvc_md5, dvc_md5=dvc_md5 or "",
        pairs_in=n_pairs, train_rows=len(split.train), eval_rows=len(split.eval),
        quarantined=len(split.quarantine), quarantine_reasons=MetadataValue.json(split.reason_counts()),
        quarantine_preview=MetadataValue.md(quarantine_preview),
        example=MetadataValue.json(split.train[0] if split.train else {}),
    )
