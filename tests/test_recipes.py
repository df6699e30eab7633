"""Recipes: each shipped one is a job with a valid config; bad ones fail before compute, saying what to change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dagster import validate_run_config

from ft_assets.recipe_run import check
from ft_assets.recipes import RecipeError, available_recipes, load_recipe, run_config
from resources.paths import default_drops_dir

SHIPPED = {"text-to-sql-demo", "gsm8k-math", "chat-sharegpt", "sql-category-classification", "qlora-7b-zero2-1gpu",
           "full-ft-zero3-multinode"}
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"


@pytest.fixture(scope="module")
def defs():
    from ft_assets.definitions import defs

    return defs


def _problems(defs, name: str, *overrides: str) -> str:
    recipe = load_recipe(name, list(overrides))
    return "\n".join(check(recipe, defs.resolve_job_def(recipe.job_name)))


def test_every_shipped_recipe_is_a_job_whose_launchpad_config_is_valid(defs):
    assert SHIPPED <= set(available_recipes())
    jobs = {j.name: j for j in defs.resolve_all_job_defs()}
    for name in available_recipes():
        recipe = load_recipe(name)
        job = jobs[recipe.job_name]
        assets = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
        assert validate_run_config(job, run_config(recipe, default_drops_dir(), assets))
        assert job.tags["ftops/recipe"] == name
        assert "raw_records" not in assets and {"sft_adapter", "eval_report", "registered_models"} <= assets


def test_set_overrides_any_key_and_reads_values_as_yaml():
    recipe = load_recipe("gsm8k-math", ["training.max_steps=3", "task.forgetting.max_examples=4",
                                        "data.field_map={prompt: question, completion: answer}"])
    assert recipe.doc["training"]["max_steps"] == 3
    assert recipe.doc["task"]["forgetting"] == {"max_examples": 4}
    assert recipe.doc["data"]["field_map"] == {"prompt": "question", "completion": "answer"}
    with pytest.raises(RecipeError, match="section.key=value"):
        load_recipe("gsm8k-math", ["training.max_steps"])


def test_relative_paths_resolve_against_the_recipe_file_and_own_drops_get_their_own_keys():
    recipe = load_recipe("gsm8k-math")
    config = run_config(recipe, default_drops_dir())
    raw = config["resources"]["raw_drops"]["config"]
    assert raw["path"] == str(SHARED / "gsm8k") and raw["pattern"] == "train.jsonl"
    assert raw["key_prefix"] == "gsm8k_math@" and raw["field_map"] == {"prompt": "question", "completion": "answer"}
    assert config["ops"]["clean_records"]["config"]["drops"] == ["gsm8k_math@*"]
    demo = run_config(load_recipe("text-to-sql-demo"), "/drops")["resources"]["raw_drops"]["config"]
    assert demo["path"] == "/drops" and demo["key_prefix"] == "" and demo["demo_if_empty"]


def test_an_unknown_section_or_field_is_refused_with_what_is_allowed(defs, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: {max_steps: 2}\n")
    with pytest.raises(RecipeError, match=r"unknown section\(s\) \['trainer'\].*training"):
        load_recipe(bad)
    problems = _problems(defs, "gsm8k-math", "training.max_stepz=2", "base_model.source=scratch")
    assert "max_stepz" in problems and "'training'" in problems and "max_steps" in problems


def test_a_missing_base_model_is_refused(defs, tmp_path):
    problems = _problems(defs, "gsm8k-math", f"base_model.gguf_path={tmp_path}/none.gguf")
    assert f"no GGUF file at {tmp_path}/none.gguf" in problems and "make model" in problems
    problems = _problems(defs, "gsm8k-math", "base_model.source=pretrained", "base_model.name_or_path=acme/no-such-7b")
    assert "'acme/no-such-7b' is neither a local directory nor in the local Hugging Face cache" in problems


def test_impossible_combinations_are_refused(defs):
    problems = _problems(defs, "gsm8k-math", "base_model.source=scratch", "compute.processes_per_node=2")
    assert "launcher process runs one rank" in problems
    problems = _problems(defs, "qlora-7b-zero2-1gpu", "compute.zero_stage=3")
    assert "qlora with ZeRO-3" in problems and "zero_stage 2" in problems
    problems = _problems(defs, "full-ft-zero3-multinode", "compute.hostfile=")
    assert "needs compute.hostfile" in problems


@pytest.mark.skipif(not (SHARED / "sql_eval").is_dir(), reason=f"{SHARED}/sql_eval missing")
def test_a_field_the_data_does_not_have_is_refused(defs):
    problems = _problems(defs, "sql-category-classification", "base_model.source=scratch",
                         "data.field_map.completion=category")
    assert "'category'" in problems and "query_category" in problems


@pytest.mark.skipif(not (SHARED / "sql_eval").is_dir(), reason=f"{SHARED}/sql_eval missing")
def test_a_task_its_data_cannot_serve_is_refused(defs):
    # Labels have no numbers: a math task cannot score them.
    problems = _problems(defs, "sql-category-classification", "base_model.source=scratch", "task.name=math",
                         "task.metrics=", "task.primary_metric=", "task.system_prompt=")
    assert "numeric_match scores the final number" in problems
    # sql-eval's questions with their SQL, but none of its databases: execution accuracy cannot be measured.
    problems = _problems(defs, "sql-category-classification", "base_model.source=scratch", "task.name=text_to_sql",
                         "task.metrics=", "task.primary_metric=", "task.system_prompt=",
                         "data.field_map={prompt: question, completion: query, db_id: db_name}")
    assert "there is none for db_id" in problems and "db_folder" in problems
    # A label outside the label set.
    problems = _problems(defs, "sql-category-classification", "base_model.source=scratch",
                         "task.metrics.accuracy.labels=[group_by, ratio]")
    assert "are not in task.metrics.accuracy.labels" in problems


@pytest.mark.skipif(not (SHARED / "sql_eval").is_dir(), reason=f"{SHARED}/sql_eval missing")
def test_sql_eval_questions_are_ingested_through_the_field_mapping(tmp_path):
    from ft_assets.data.ingest import ingest_drops

    result = ingest_drops([SHARED / "sql_eval" / "questions_gen_sqlite.csv"],
                          field_map={"prompt": "question", "completion": "query", "db_id": "db_name"})
    assert len(result.records) + len(result.quarantine) == result.rows_seen
    assert len(result.records) >= 200
    row = result.records.iloc[0]
    assert row["completion"].upper().startswith("SELECT") and row["db_id"] == "academic"
    assert json.dumps(result.records.head(3).to_dict("records"), default=str)


def test_ftops_run_check_exits_2_with_the_problems(tmp_path, capsys):
    from ft_assets.recipe_run import cmd_run

    assert cmd_run("gsm8k-math", [f"base_model.gguf_path={tmp_path}/x.gguf"], check_only=True) == 2
    assert "no GGUF file" in capsys.readouterr().err
    assert cmd_run("no-such-recipe", [], check_only=True) == 2
    assert "text-to-sql-demo" in capsys.readouterr().err
