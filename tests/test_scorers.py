"""Scorers on fixed predictions, with the edge cases real data has (units, 1,000, negatives, bad SQL/JSON)."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest

from ft_assets.evaluation.scorers import (
    SCORERS,
    Score,
    database_path,
    get_scorer,
    parse_number,
    score,
)

GSM8K_TEST = Path("/work/shared/datasets/gsm8k/test.jsonl")


def _s(name: str, generations, references, rows=None, **options) -> Score:
    return score({"scorer": name, **options}, generations, references, rows or [{} for _ in references])


def test_registry_has_every_contract_name():
    assert set(SCORERS) == {"exact_match", "numeric_match", "sql_execution", "rouge_l", "chrf", "bleu",
                            "json_valid", "json_schema", "label_accuracy", "macro_f1"}


def test_exact_match_normalizes_case_space_and_final_period():
    result = _s("exact_match", ["  Paris. ", "paris  is big", "Berlin"], ["paris", "Paris is  big", "Bonn"])
    assert result.per_example == [1.0, 1.0, 0.0]
    assert result.value == pytest.approx(2 / 3)


def test_exact_match_extracts_sql_from_chatty_output():
    result = _s("exact_match", ["Sure:\n```sql\nselect name  FROM employees\n```", "SELECT 1"],
                ["SELECT name FROM employees;", "SELECT 2;"], extract="sql")
    assert result.per_example == [1.0, 0.0]
    assert result.extracted[0] == "select name  FROM employees;"


@pytest.mark.parametrize(("text", "number"), [
    ("The answer is 1,000 dollars.", 1000.0), ("#### -5", -5.0), ("16-3-4=9 eggs a day", 9.0),
    ("It costs $3.50.", 3.5), ("so x = -2.0", -2.0), ("about 12 km/h", 12.0), ("none here", None),
    ("Step 1: 4 + 4 = 8\n#### 8\nThanks for 2 tries", 8.0), ("#### 1,234,567", 1234567.0), ("0.5 or .25", 0.25),
])
def test_parse_number(text, number):
    assert parse_number(text) == number


def test_numeric_match_units_commas_negatives_and_decimals():
    generations = ["She makes $18 every day.", "Total: 1,000 apples", "It drops to -7 degrees",
                   "3.0", "#### 42\n(but 41 would be close)", "I don't know", "2,5"]
    references = ["...\n#### 18", "#### 1000", "#### -7", "#### 3", "#### 42", "#### 5", "#### 25"]
    result = _s("numeric_match", generations, references)
    assert result.per_example == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert result.extracted[:5] == ["18", "1000", "-7", "3", "42"]
    assert result.extracted[5] == ""


def test_numeric_match_refuses_a_reference_without_a_number():
    with pytest.raises(ValueError, match="r-1.*holds no number"):
        _s("numeric_match", ["4"], ["four"], rows=[{"record_id": "r-1"}])


def test_numeric_match_on_real_gsm8k_answers():
    if not GSM8K_TEST.is_file():
        pytest.skip(f"{GSM8K_TEST} is missing (shared datasets folder not mounted)")
    rows = [json.loads(line) for line in GSM8K_TEST.read_text().splitlines()[:50]]
    answers = [r["answer"] for r in rows]
    assert _s("numeric_match", answers, answers).value == 1.0  # the worked answer names its own number
    finals = [a.rsplit("####", 1)[1].strip() for a in answers]
    off_by_one = [f"The answer is {float(f.replace(',', '')) + 1:g}." for f in finals]
    assert _s("numeric_match", off_by_one, answers).value == 0.0
    # The bare final number, as a model would say it, with the trailing period of a sentence.
    assert _s("numeric_match", [f"So the answer is {f}." for f in finals], answers).value == 1.0


@pytest.fixture()
def db_folder(tmp_path: Path) -> Path:
    """Spider layout for one database, flat layout for another."""
    (tmp_path / "shop").mkdir()
    with sqlite3.connect(tmp_path / "shop" / "shop.sqlite") as con:
        con.executescript("CREATE TABLE items (name TEXT, price INTEGER);"
                          "INSERT INTO items VALUES ('pen', 2), ('book', 12), ('bag', 30);")
    with sqlite3.connect(tmp_path / "zoo.sqlite") as con:
        con.executescript("CREATE TABLE animals (name TEXT, legs INTEGER);"
                          "INSERT INTO animals VALUES ('cat', 4), ('bird', 2);")
    return tmp_path


def test_database_path_both_layouts(db_folder):
    assert database_path(db_folder, "shop") == db_folder / "shop" / "shop.sqlite"
    assert database_path(db_folder, "zoo") == db_folder / "zoo.sqlite"
    with pytest.raises(ValueError, match="no SQLite database for db_id 'farm'"):
        database_path(db_folder, "farm")


def test_sql_execution_per_db_id_and_errors_score_zero(db_folder):
    rows = [{"db_id": "shop"}, {"db_id": "shop"}, {"db_id": "zoo"}, {"db_id": "zoo"}, {"db_id": "shop"}]
    generations = [
        "```sql\nSELECT name FROM items WHERE price > 10\n```",  # same rows as gold
        "SELECT name FROM itemz;",  # errors: no such table
        "SELECT name FROM animals WHERE legs = 2;",
        "Here you go: SELECT name FROM animals;",  # runs, wrong rows
        "I cannot answer that.",  # no SQL at all
    ]
    references = ["SELECT name FROM items WHERE price >= 12;", "SELECT name FROM items;",
                  "SELECT name FROM animals WHERE name = 'bird';", "SELECT name FROM animals WHERE legs = 4;",
                  "SELECT COUNT(*) FROM items;"]
    result = _s("sql_execution", generations, references, rows, db_folder=str(db_folder))
    assert result.per_example == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert result.extracted[1] == "SELECT name FROM itemz;"


def test_sql_execution_needs_a_folder_and_a_running_gold(db_folder):
    with pytest.raises(ValueError, match="needs db_folder"):
        _s("sql_execution", ["SELECT 1;"], ["SELECT 1;"], [{"db_id": "shop"}])
    with pytest.raises(ValueError, match="gold SQL does not run"):
        _s("sql_execution", ["SELECT 1;"], ["SELECT nope FROM nowhere;"], [{"db_id": "shop"}],
           db_folder=str(db_folder))


def test_sql_execution_on_the_demo_database(tmp_path):
    from ft_assets.tasks.text_to_sql import TASK

    specs = TASK.prepare(tmp_path)
    result = score(specs["execution_accuracy"], ["SELECT COUNT(*) FROM employees WHERE city='Oslo'", "SELECT"],
                   ["SELECT COUNT(*) FROM employees WHERE city = 'Oslo';"] * 2, [{"db_id": "company"}] * 2)
    assert result.per_example == [1.0, 0.0]


def test_rouge_l_chrf_bleu_rank_close_text_above_far_text():
    reference = ["the cat sat on the mat"]
    for name in ("rouge_l", "chrf", "bleu"):
        same = _s(name, ["the cat sat on the mat"], reference)
        close = _s(name, ["the cat sat on a mat"], reference)
        far = _s(name, ["dogs bark loudly at night"], reference)
        assert same.value == pytest.approx(1.0), name
        assert 0.0 <= far.value < close.value < 1.0, name
        assert 0.0 <= far.per_example[0] < close.per_example[0] <= 1.0, name


def test_json_valid_and_invalid():
    generations = ['{"a": 1}', 'Here it is: ```json\n{"a": [1, 2]}\n```', "{'a': 1}", '{"a": 1', "Result: [1, 2]",
                   "no json"]
    result = _s("json_valid", generations, [""] * len(generations))
    assert result.per_example == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]


def test_json_schema_conformance(tmp_path):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    generations = ['{"name": "Ana", "age": 31}', '{"name": "Ben", "age": "31"}', '{"name": "Chen"}', "{broken"]
    result = _s("json_schema", generations, [""] * 4, schema=schema)
    assert result.per_example == [1.0, 0.0, 0.0, 0.0]
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    assert _s("json_schema", generations, [""] * 4, schema=str(path)).per_example == result.per_example
    with pytest.raises(ValueError, match="needs a schema"):
        _s("json_schema", generations, [""] * 4)


def test_label_accuracy_unknown_labels_count_wrong():
    labels = ["positive", "negative", "neutral"]
    generations = ["Positive.", "negative", "mixed", "I think it's neutral", "positive or negative", ""]
    references = ["positive", "negative", "negative", "neutral", "positive", "neutral"]
    result = _s("label_accuracy", generations, references, labels=labels)
    assert result.per_example == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    assert result.extracted == ["positive", "negative", "", "neutral", "", ""]


def test_label_set_refuses_references_outside_it():
    with pytest.raises(ValueError, match="not in the label set"):
        _s("label_accuracy", ["spam"], ["spam"], labels=["ham"])


def test_macro_f1_over_the_label_set():
    # a: 2 tp, 1 fp -> 0.8; b: 1 tp, 1 fn (an unknown prediction) -> 2/3; c: never predicted nor true -> 0
    generations = ["a", "a", "b", "zzz", "a"]
    references = ["a", "a", "b", "b", "b"]
    result = _s("macro_f1", generations, references, labels=["a", "b"])
    f1_a, f1_b = 2 * 2 / (2 * 2 + 1 + 0), 2 * 1 / (2 * 1 + 0 + 2)
    assert result.value == pytest.approx((f1_a + f1_b) / 2)
    assert result.per_example == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_user_scorer_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "my_metrics.py").write_text(
        "def length_ok(generations, references, rows, max_chars=5):\n"
        "    return [float(len(g) <= max_chars) for g in generations]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = _s("my_metrics:length_ok", ["short", "much too long"], ["", ""], max_chars=6)
    assert result.per_example == [1.0, 0.0] and result.value == 0.5
    sys.modules.pop("my_metrics", None)


def test_user_scorer_errors_are_clear():
    with pytest.raises(ValueError, match="cannot import scorer module 'no_such_pkg.metrics'"):
        get_scorer("no_such_pkg.metrics:score")
    with pytest.raises(ValueError, match="has no function 'nope'"):
        get_scorer("json:nope")
    with pytest.raises(ValueError, match="unknown scorer 'bleurt'"):
        get_scorer("bleurt")
    with pytest.raises(ValueError, match="does not take options"):
        _s("exact_match", ["a"], ["a"], labels=["a"])
