"""The blocking gate on the preference dataset: the GX suite that stands between the DPO pairs and training."""

import json

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, asset_check

from data_checks.gate_results import run_suite, suite_check_result
from ft_assets.data import artifact_files as files
from ft_assets.data.preference import context_text
from ft_assets.data.suites import preference_split_suite, with_pii_column
from ft_assets.lineage.artifacts import Artifact
from resources import ArtifactStore, GreatExpectationsResource

MIN_PREFERENCE_TRAIN_ROWS = 16
MIN_PREFERENCE_EVAL_ROWS = 2

COLUMNS = ["record_id", "split", "prompt", "chosen", "rejected", "roles", "shortest_turn_chars", "same_reply",
           "context"]


def preference_frame(train: list[dict], evaluation: list[dict]) -> pd.DataFrame:
    """One row per pair: split, last user turn, both replies, role order, shortest turn, cross-split overlap."""
    rows = []
    for split, part in (("train", train), ("eval", evaluation)):
        for r in part:
            turns = r["prompt"] + r["chosen"]
            dialogue = [t for t in r["prompt"] if t["role"] != "system"]
            chosen, rejected = r["chosen"][-1]["content"], r["rejected"][-1]["content"]
            rows.append({
                "record_id": r["record_id"], "split": split, "prompt": r["prompt"][-1]["content"],
                "chosen": chosen, "rejected": rejected, "roles": ",".join(t["role"] for t in turns),
                "shortest_turn_chars": min(len(t["content"].strip()) for t in turns + r["rejected"]),
                "same_reply": " ".join(chosen.casefold().split()) == " ".join(rejected.casefold().split()),
                # The split key: the dialogue before the replies (see preference.context_text).
                "context": context_text({"history": json.dumps(dialogue[:-1]), "prompt": dialogue[-1]["content"]}),
            })
    frame = pd.DataFrame(rows, columns=COLUMNS)
    both = set(frame.loc[frame["split"] == "train", "context"]) & set(frame.loc[frame["split"] == "eval", "context"])
    frame["in_both_splits"] = frame["context"].isin(both)
    return with_pii_column(frame.drop(columns=["context"]), ("prompt", "chosen", "rejected"))


@asset_check(asset="preference_dataset", blocking=True,
             description="GX suite: both splits large enough, non-empty prompt/chosen/rejected, chosen != rejected, "
                         "chat role order, no prompt in both splits, no PII")
def preference_dataset_gate(preference_dataset: Artifact, gx: GreatExpectationsResource,
                            artifact_store: ArtifactStore) -> AssetCheckResult:
    train = files.read_examples(preference_dataset.path, "train")
    evaluation = files.read_examples(preference_dataset.path, "eval")
    quarantined = files.read_examples(preference_dataset.path, "quarantine")
    if not train and not evaluation and not quarantined:  # the data holds no pairs: DPO does not train
        return AssetCheckResult(passed=True, description="no preference pairs in the data: nothing to check, "
                                                         "dpo_adapter does not train", metadata={"pairs": 0})
    frame = preference_frame(train, evaluation)
    suite, docs = run_suite(gx, artifact_store, frame, "preference_dataset",
                            preference_split_suite(MIN_PREFERENCE_TRAIN_ROWS, MIN_PREFERENCE_EVAL_ROWS),
                            preference_dataset)
    result = suite_check_result(suite, docs, frame, train_rows=len(train), eval_rows=len(evaluation))
    enough = len(train) >= MIN_PREFERENCE_TRAIN_ROWS and len(evaluation) >= MIN_PREFERENCE_EVAL_ROWS
    if suite.success and not enough:
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR,
                                description=f"need >= {MIN_PREFERENCE_TRAIN_ROWS} train and >= "
                                            f"{MIN_PREFERENCE_EVAL_ROWS} eval pairs, got {len(train)} / "
                                            f"{len(evaluation)}",
                                metadata=result.metadata)
    return result
