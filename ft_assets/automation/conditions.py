"""Declarative automation: what follows a new drop, and what a failed gate stops.

Every asset downstream of ``raw_records`` carries ``retrain_condition``: it is requested when an upstream's
*data version* changed (not merely re-materialized: the data assets publish their content hash / DVC md5 as
the data version, so an identical re-run changes nothing downstream), when nothing upstream is missing or in
progress, and only when every blocking check on its upstream assets passed. Since a requested parent makes its
children eligible in the same tick, one new drop becomes one run from ``clean_records`` to the eval report, and
the blocking checks inside that run stop it at the first failing gate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dagster import AssetsDefinition, AssetSelection, AutomationCondition

# Assets the sensor (not automation) materializes.
SENSOR_DRIVEN = {"raw_records"}
# Assets with no upstream: built once when missing (and not retried in a loop after a failure).
ROOTS = {"base_model"}
# Run on purpose, never on every drop (a study costs many trainings); downstream assets may run without them.
ON_REQUEST = {"hpo_study"}


def retrain_condition() -> AutomationCondition:
    """Eager on upstream data changes, gated by the upstream blocking checks."""
    upstream_changed = AutomationCondition.any_deps_match(
        (AutomationCondition.data_version_changed() & ~AutomationCondition.executed_with_root_target())
        | AutomationCondition.will_be_requested()
    ).with_label("any_deps_data_changed")
    return (
        (AutomationCondition.newly_missing() | upstream_changed).since_last_handled()
        & ~AutomationCondition.any_deps_missing().ignore(AssetSelection.assets(*ON_REQUEST))
        & ~AutomationCondition.any_deps_in_progress()
        & ~AutomationCondition.in_progress()
        & upstream_gates_passed()
    ).with_label("retrain_on_new_data")


def upstream_gates_passed() -> AutomationCondition:
    """Every upstream asset's blocking checks passed, or the upstream asset runs in this same tick.

    ``AutomationCondition.all_deps_blocking_checks_passed()`` accepts an upstream check only when the *check*
    is requested; ours have no automation condition of their own and ride along with their asset's run, so
    a requested upstream asset stands for its checks. Inside that run a failing blocking check stops every
    step downstream of it, so nothing gets past a gate either way.
    """
    return AutomationCondition.all_deps_match(
        AutomationCondition.all_checks_match(AutomationCondition.check_passed(), blocking_only=True)
        | AutomationCondition.will_be_requested()
    ).with_label("all_deps_blocking_checks_passed")


def build_when_missing() -> AutomationCondition:
    return (AutomationCondition.missing() & ~AutomationCondition.in_progress()
            & ~AutomationCondition.execution_failed()).with_label("build_when_missing")


def with_retrain_automation(assets: Iterable[AssetsDefinition]) -> Sequence[AssetsDefinition]:
    """The assets with automation conditions set: roots when missing, the rest on upstream data changes."""
    automated = []
    for asset_def in assets:
        names = {key.to_user_string() for key in asset_def.keys}
        if names & (SENSOR_DRIVEN | ON_REQUEST):
            automated.append(asset_def)
        elif names <= ROOTS:
            automated.append(asset_def.with_attributes(automation_condition=build_when_missing()))
        else:
            automated.append(asset_def.with_attributes(automation_condition=retrain_condition()))
    return automated
