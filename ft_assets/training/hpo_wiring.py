"""Dagster wiring of the hyperparameter search (no assets): ``hpo_study``'s config, and the best trial of the
latest study for a training asset that takes its hyperparameters from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetKey, Config
from pydantic import Field

from ft_assets.lineage.artifacts import Artifact
from ft_assets.training.hpo import DEFAULT_SPACE, DEFAULTS

STUDY_ASSET = "hpo_study"
STUDY_FILE = "study.json"


class SearchRange(Config):
    """One searched setting: ``choices`` or a ``low``..``high`` range (``log`` scale, or a ``step``)."""

    choices: list[float] = Field([], description="the values to try; or leave empty and give low/high")
    low: float | None = None
    high: float | None = None
    log: bool = Field(False, description="sample the range on a log scale (learning rates)")
    step: float | None = None


class HpoStudyConfig(Config):
    """An Optuna study over SFT settings; each trial a short training in the training pool, pruned by the median
    of earlier trials' eval losses. Rerunning adds trials to the same study."""

    n_trials: int = Field(DEFAULTS["n_trials"], ge=1, description="trials this run adds to the study")
    steps_per_trial: int = Field(DEFAULTS["steps_per_trial"], ge=1, description="optimizer steps of each trial")
    eval_steps: int = Field(DEFAULTS["eval_steps"], ge=1, description="eval loss every N steps: reported to the pruner")
    search_space: dict[str, SearchRange] = Field(
        default_factory=lambda: {k: SearchRange(**v) for k, v in DEFAULT_SPACE.items()},
        description="learning_rate, lora_r, lora_alpha, lora_dropout, warmup_steps, per_device_train_batch_size, "
                    "gradient_accumulation_steps")
    training: dict[str, Any] = Field({}, description="SFT settings every trial shares (a recipe copies its "
                                                     "training section here)")
    study_name: str = Field("", description="'': named from the base model and data versions and the trial length, "
                                            "so a rerun on the same inputs continues the study")
    storage: str = Field("", description="an Optuna RDB URL; '': $FTOPS_HPO_STORAGE or a SQLite file in FTOPS_HOME "
                                         "(put a Postgres password in the env var, not here)")
    seed: int = DEFAULTS["seed"]
    pruner_startup_trials: int = Field(DEFAULTS["pruner_startup_trials"], ge=0,
                                       description="complete trials before the median pruner prunes")
    pruner_warmup_steps: int = Field(DEFAULTS["pruner_warmup_steps"], ge=0,
                                     description="steps of a trial before it can be pruned")

    def plain(self) -> dict:
        """The config as plain data for ``hpo.plan_study`` (search ranges without their unset keys)."""
        data = self.model_dump()
        data["search_space"] = {k: {f: v for f, v in r.items() if v not in (None, [], False)}
                                for k, r in data["search_space"].items()}
        return data


def latest_study_choice(context: AssetExecutionContext) -> dict:
    """The best trial of the latest ``hpo_study`` materialization: study, trial number, objective, parameters and
    the study artifact's version. Read from the instance rather than as an input, so recipes without a study do
    not need one; fails saying what to do when there is none."""
    event = context.instance.get_latest_materialization_event(AssetKey(STUDY_ASSET))
    if event is None or event.asset_materialization is None:
        raise ValueError("hyperparameters_from_study is set but hpo_study was never materialized: add an hpo "
                         "section to the recipe (or materialize hpo_study), or set hyperparameters_from_study false")
    metadata = event.asset_materialization.metadata
    study = Artifact(Path(metadata["path"].value), str(metadata["version"].value))
    record = json.loads((study.path / STUDY_FILE).read_text())
    best = record.get("best_trial")
    if not best:
        raise ValueError(f"study {record.get('study_name')} has no complete trial yet: rerun hpo_study (more trials, "
                         "or a wider search space), or set hyperparameters_from_study false")
    return {"study_name": record["study_name"], "trial_number": best["number"], "eval_loss": best["eval_loss"],
            "params": best["params"], "hpo_study_version": study.version, "hpo_study_run_id": event.run_id,
            "inputs": record.get("inputs", {})}
