"""The table of contents: every asset, check, job and resource of ftops."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job

from data_checks.checks import clean_records_gate, deduped_records_gate, sft_dataset_gate
from ft_assets.data.assets import clean_records, deduped_records, raw_records, sft_dataset
from ft_assets.evaluation.assets import eval_report
from ft_assets.evaluation.checks import (
    adapter_beats_base,
    merged_matches_adapter,
    merged_serving_consistent,
    quantized_serving_consistent,
    quantized_within_tolerance,
)
from ft_assets.lineage.assets import model_cards
from ft_assets.models.assets import base_model, merged_model, quantized_model
from ft_assets.training.assets import sft_adapter
from resources import (
    ArtifactIOManager,
    ArtifactStore,
    DvcResource,
    GreatExpectationsResource,
    ModelGates,
    RawDrops,
    TrainingCompute,
)
from resources.paths import default_artifact_root, default_drops_dir, default_dvc_remote, default_dvc_repo

data_assets = [raw_records, clean_records, deduped_records, sft_dataset]
model_assets = [base_model, sft_adapter, merged_model, quantized_model]
evaluation_assets = [eval_report, model_cards]
all_assets = [*data_assets, *model_assets, *evaluation_assets]
data_gates = [clean_records_gate, deduped_records_gate, sft_dataset_gate]
model_gates = [merged_matches_adapter, merged_serving_consistent, quantized_serving_consistent, adapter_beats_base,
               quantized_within_tolerance]
gates = [*data_gates, *model_gates]

# Raw data to evaluated model in one run: the job `make demo` runs.
end_to_end = define_asset_job("end_to_end", selection=AssetSelection.all(), description="raw drops to eval report")

defs = Definitions(
    assets=all_assets,
    asset_checks=gates,
    jobs=[end_to_end],
    resources={
        "io_manager": ArtifactIOManager(),
        "artifact_store": ArtifactStore(root=default_artifact_root()),
        "raw_drops": RawDrops(path=default_drops_dir()),
        "training_compute": TrainingCompute(),
        "gx": GreatExpectationsResource(),
        "model_gates": ModelGates(),
        "dvc": DvcResource(repo_dir=default_dvc_repo(), remote_url=default_dvc_remote()),
    },
)
