"""The label-mask gate as a blocking Dagster check: a wrong mask stops the run before training starts."""

from dagster import AssetCheckResult, AssetIn, Config, MetadataValue, asset_check

from ft_assets.lineage.artifacts import Artifact
from ft_assets.training.masking import check_chat_examples
from ft_assets.training.sft import read_jsonl


class LabelMaskConfig(Config):
    max_length: int = 256  # as sft_adapter truncates
    max_examples: int = 2000


@asset_check(asset="sft_dataset", blocking=True, additional_ins={"base_model": AssetIn("base_model")},
             description="under base_model's own chat template, every example trains its reply and its EOS and "
                         "nothing of its prompt (share of trained tokens strictly between 0 and 1)")
def sft_label_mask(config: LabelMaskConfig, sft_dataset: Artifact, base_model: Artifact) -> AssetCheckResult:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model.path)
    rows = read_jsonl(sft_dataset.path / "train.jsonl")
    report = check_chat_examples(tokenizer, rows, config.max_length, limit=config.max_examples)
    problems = [{"record_id": rows[p.example].get("record_id"), "reason": p.reason} for p in report.problems[:20]]
    return AssetCheckResult(
        passed=report.passed,
        description=report.summary(),
        metadata={"examples_checked": report.examples,
                  "mean_trained_share": round(report.mean_trained_share, 4),
                  "min_trained_share": round(report.min_trained_share, 4),
                  "max_trained_share": round(report.max_trained_share, 4),
                  "problems": MetadataValue.json(problems)},
    )
