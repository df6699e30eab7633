"""The label-mask gate as a blocking Dagster check: a wrong mask stops the run before training starts."""

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetIn, Config, MetadataValue, asset_check
from pydantic import Field

from ft_assets.lineage.artifacts import Artifact
from ft_assets.training.core import read_jsonl
from ft_assets.training.masking import check_chat_examples
from ft_assets.training.sft import SFTSettings


class LabelMaskConfig(Config):
    max_examples: int = Field(2000, ge=1)


def training_max_length(run_config: dict) -> int:
    """The ``max_length`` sft_adapter truncates to in this run: its run config, else the recipe's default."""
    configured = (run_config.get("ops", {}).get("sft_adapter", {}) or {}).get("config", {}) or {}
    return int(configured.get("max_length") or SFTSettings().max_length)


@asset_check(asset="sft_dataset", blocking=True, additional_ins={"base_model": AssetIn("base_model")},
             description="under base_model's own chat template and sft_adapter's max_length, every example trains "
                         "its reply and its EOS and nothing of its prompt (share of trained tokens strictly "
                         "between 0 and 1)")
def sft_label_mask(context: AssetCheckExecutionContext, config: LabelMaskConfig, sft_dataset: Artifact,
                   base_model: Artifact) -> AssetCheckResult:
    from transformers import AutoTokenizer

    max_length = training_max_length(context.run.run_config)
    tokenizer = AutoTokenizer.from_pretrained(base_model.path)
    rows = read_jsonl(sft_dataset.path / "train.jsonl")
    report = check_chat_examples(tokenizer, rows, max_length, limit=config.max_examples)
    problems = [{"record_id": rows[p.example].get("record_id"), "reason": p.reason} for p in report.problems[:20]]
    return AssetCheckResult(
        passed=report.passed,
        description=report.summary(),
        metadata={"examples_checked": report.examples, "max_length": max_length,
                  "mean_trained_share": round(report.mean_trained_share, 4),
                  "min_trained_share": round(report.min_trained_share, 4),
                  "max_trained_share": round(report.max_trained_share, 4),
                  "problems": MetadataValue.json(problems)},
    )
