"""Bad configuration, at the launchpad and in recipes: wrong types, unknown keys, zero or negative sizes and rates,
fractions outside 0..1 and unknown methods fail before any step runs, each with the field and what to change."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterInvalidConfigError,
    build_reconstructable_job,
    execute_job,
)

from ft_assets.recipe_run import cmd_run
from tests.reliability.conftest import dagster_home


@pytest.fixture(scope="module", autouse=True)
def ftops_home(tmp_path_factory) -> Iterator[Path]:
    """Resources rooted in a scratch folder; the run's step processes inherit it."""
    home = tmp_path_factory.mktemp("ftops_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FTOPS_HOME", str(home))
        yield home


@cache
def _defs():
    from ft_assets.definitions import build_defs
    from resources.factory import build_resources

    return build_defs(build_resources())


def end_to_end_job():
    """The job the launchpad launches (module level: the run worker and step processes rebuild it from here)."""
    return _defs().resolve_job_def("end_to_end")


# Named by its import path (pytest imports this file under another name), as a code location names its job.
JOB = build_reconstructable_job("tests.reliability.test_bad_config", "end_to_end_job")


def _launch(tmp_path, ops: dict, assets: list[AssetKey] | None = None, execution: dict | None = None):
    """A run launched on a real instance and executed as the run worker executes it (the job's own executor)."""
    with DagsterInstance.from_config(str(dagster_home(tmp_path / "dagster_home"))) as instance:
        run_config = {"ops": ops, **({"execution": execution} if execution else {})}
        with execute_job(JOB, instance=instance, run_config=run_config, asset_selection=assets,
                         raise_on_error=False) as result:
            events = instance.all_logs(result.run_id)
            return result.success, events


BAD_VALUES = [  # (op, field, value, what the refusal says)
    ("sft_adapter", "learning_rate", -1.0, "greater than 0"),
    ("sft_adapter", "max_steps", 0, "greater than or equal to 1"),
    ("sft_adapter", "lora_dropout", 1.0, "less than 1"),
    ("sft_dataset", "eval_fraction", 1.5, "less than 1"),
    ("deduped_records", "near_threshold", 0.0, "greater than 0"),
    ("eval_report", "batch_size", 0, "greater than or equal to 1"),
    ("quantized_model", "methods", ["bnb-nf4", "gguf-q9"], "unknown quantization method(s) ['gguf-q9']"),
    ("dpo_adapter", "beta", 0.0, "greater than 0"),
]


def test_launchpad_negative_zero_or_out_of_range_values_fail_before_any_step(tmp_path):
    ops: dict = {}
    for op, field, value, _ in BAD_VALUES:
        ops.setdefault(op, {"config": {}})["config"][field] = value
    success, events = _launch(tmp_path, ops)
    assert not success
    started = [e for e in events if e.dagster_event and e.dagster_event.event_type == DagsterEventType.STEP_START]
    assert not started, f"steps ran before the bad config was refused: {[e.step_key for e in started]}"
    failure = next(e for e in events if e.dagster_event and e.dagster_event.event_type == DagsterEventType.RUN_FAILURE)
    text = str(failure.dagster_event.event_specific_data.error)
    for op, field, _, says in BAD_VALUES:  # every bad value at once, each by its field
        line = next((x for x in text.split("\n") if f"ops.{op}.config.{field}:" in x), None)
        assert line is not None and says in line, f"ops.{op}.config.{field} not refused as {says!r}: {text}"


def test_every_launchpad_job_runs_behind_the_config_guard():
    """The asset graph's Materialize (Dagster's implicit job), end_to_end and every recipe job execute through the
    guarded executor, so none of them can start a step on a bad value (the runs above show what it does)."""
    from ft_assets.config_guard import GUARD_NOTE

    defs = _defs()
    jobs = [defs.resolve_implicit_global_asset_job_def(), *defs.resolve_all_job_defs()]
    unguarded = [j.name for j in jobs if GUARD_NOTE not in (j.executor_def.description or "")]
    assert not unguarded, f"jobs whose runs skip the config check: {unguarded}"


@pytest.mark.parametrize("config, says", [
    ({"max_steps": "ten"}, 'Value "ten" of type "<class \'str\'>" is not valid for expected type "Int"'),
    ({"lerning_rate": 1e-3}, 'unexpected config entry "lerning_rate" at path root:ops:sft_adapter:config'),
    ({"method": "lora-xl"}, "root:ops:sft_adapter:config:method"),
])
def test_launchpad_wrong_type_or_unknown_key_refused_at_launch(tmp_path, config, says):
    with pytest.raises(DagsterInvalidConfigError) as refused:
        _launch(tmp_path, {"sft_adapter": {"config": config}})
    assert says in str(refused.value)


def test_good_config_runs_through_the_guard(tmp_path):
    """The guarded executor hands a good run on: base_model materializes in a step process of its own."""
    ops = {"base_model": {"config": {"source": "scratch", "scratch_hidden_size": 16, "scratch_layers": 1}}}
    success, events = _launch(tmp_path, ops, [AssetKey("base_model")], execution={"config": {"in_process": {}}})
    assert success, [str(e.dagster_event.event_specific_data) for e in events
                     if e.dagster_event and e.dagster_event.is_failure]
    assert any(e.dagster_event and e.dagster_event.event_type == DagsterEventType.ASSET_MATERIALIZATION
               for e in events)


def test_good_config_passes_the_guard():
    """The guard refuses bad values only: every shipped recipe's config and the defaults pass it."""
    from ft_assets.config_guard import config_problems
    from ft_assets.recipes import available_recipes, load_recipe, run_config
    from resources.paths import default_drops_dir

    job = end_to_end_job()
    assets = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert config_problems(job, {}) == []
    for name in available_recipes():
        assert config_problems(job, run_config(load_recipe(name), default_drops_dir(), assets)) == [], name


@pytest.mark.parametrize("override, says", [
    ("training.learning_rate=0", "training.learning_rate: Input should be greater than 0 (got 0.0)"),
    ("training.max_steps=-5", "training.max_steps: Input should be greater than or equal to 1 (got -5)"),
    ("training.per_device_train_batch_size=0", "training.per_device_train_batch_size: Input should be greater"),
    ("data.split.eval_fraction=0", "data.split.eval_fraction: Input should be greater than 0"),
    ("data.dedup.num_perm=0", "data.dedup.num_perm: Input should be greater than or equal to 2"),
    ("eval.max_examples=-1", "eval.max_examples: Input should be greater than or equal to 0"),
    ("training.max_steps=ten", "at recipe setting training.max_steps. Value \"ten\""),
    ("training.lerning_rate=0.001", 'unexpected config entry "lerning_rate" in recipe section \'training\''),
    ("trainng.max_steps=2", "unknown section(s) ['trainng']"),
])
def test_recipe_bad_setting_refused_before_compute(tmp_path, monkeypatch, capsys, override, says):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    assert cmd_run("text-to-sql-demo", [override]) == 2  # `ftops run text-to-sql-demo --set ...`
    err = capsys.readouterr().err
    assert says in err, err
    assert not (tmp_path / "dagster_home").exists(), "an instance was made: the run got past its checks"
