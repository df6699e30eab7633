"""Split: deterministic, order-independent, leak-free train/eval sides in chat format."""

from __future__ import annotations

import pandas as pd

from ft_assets.data.records import records_frame
from ft_assets.data.split import is_eval, split_records, to_chat_example
from ft_assets.data.text_to_sql import SCHEMA_SUMMARY


def _records(n: int, db_id: str = "company") -> pd.DataFrame:
    return records_frame([
        {"record_id": f"drop-0001:{i}", "drop_id": "drop-0001", "source_file": "/x/drop-0001.jsonl",
         "line_no": i, "prompt": f"Question number {i} about staff?",
         "completion": f"SELECT name FROM employees WHERE id = {i};", "db_id": db_id}
        for i in range(1, n + 1)
    ])


def _ids(examples: list[dict]) -> set[str]:
    return {e["record_id"] for e in examples}


def test_split_is_deterministic():
    records = _records(300)
    assert split_records(records) == split_records(records)


def test_split_is_independent_of_row_order():
    records = _records(300)
    train, evaluation = split_records(records)
    shuffled = records.sample(frac=1, random_state=1).reset_index(drop=True)
    train2, evaluation2 = split_records(shuffled)
    assert _ids(train) == _ids(train2) and _ids(evaluation) == _ids(evaluation2)


def test_split_of_a_subset_agrees_with_split_of_the_whole():
    # Adding new data never moves an existing example to the other side.
    records = _records(400)
    _, evaluation = split_records(records)
    _, evaluation_part = split_records(records.iloc[:150])
    assert _ids(evaluation_part) == _ids(evaluation) & set(records["record_id"].iloc[:150])


def test_every_row_lands_on_exactly_one_side():
    records = _records(200)
    train, evaluation = split_records(records)
    assert len(train) + len(evaluation) == len(records)
    assert not _ids(train) & _ids(evaluation)


def test_eval_fraction_roughly_respected():
    records = _records(1000)
    for fraction in (0.12, 0.3):
        _, evaluation = split_records(records, eval_fraction=fraction)
        assert abs(len(evaluation) / 1000 - fraction) < 0.04, (fraction, len(evaluation))


def test_eval_fraction_extremes():
    records = _records(100)
    assert split_records(records, eval_fraction=0.0)[1] == []
    assert split_records(records, eval_fraction=1.0)[0] == []


def test_case_and_whitespace_variants_land_on_the_same_side():
    sql = "SELECT COUNT(*) FROM employees WHERE city = 'Paris';"
    variants = ["How many employees work in Paris?", "HOW MANY EMPLOYEES WORK IN PARIS?",
                "  How  many employees work in Paris ?", "how many employees work in paris"]
    for fraction in (0.1, 0.5, 0.9):
        assert len({is_eval(v, sql, fraction) for v in variants}) == 1


def test_salt_changes_the_assignment():
    records = _records(500)
    assert _ids(split_records(records, salt="a")[1]) != _ids(split_records(records, salt="b")[1])


def test_chat_example_has_system_user_and_assistant():
    row = {"record_id": "drop-0001:1", "db_id": "company", "prompt": "Who works in Sales?",
           "completion": "SELECT name FROM employees WHERE department = 'Sales';"}
    example = to_chat_example(row)
    assert example["record_id"] == "drop-0001:1" and example["db_id"] == "company"
    assert example["prompt"] == [
        {"role": "system", "content": SCHEMA_SUMMARY},
        {"role": "user", "content": "Who works in Sales?"},
    ]
    assert example["completion"] == [
        {"role": "assistant", "content": "SELECT name FROM employees WHERE department = 'Sales';"}]


def test_system_prompt_names_the_schema_tables():
    system = to_chat_example({"record_id": "r", "db_id": "company", "prompt": "q", "completion": "c"})["prompt"][0]
    assert "employees" in system["content"] and "departments" in system["content"]


def test_unknown_database_keeps_the_records_own_system_prompt_or_none():
    bare = to_chat_example({"record_id": "r", "db_id": "zoo", "prompt": "q", "completion": "c"})
    assert [t["role"] for t in bare["prompt"]] == ["user"]
    own = to_chat_example({"record_id": "r", "db_id": "", "prompt": "q", "completion": "c", "system": "Be brief.",
                           "history": '[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]'})
    assert [t["role"] for t in own["prompt"]] == ["system", "user", "assistant", "user"]
    assert own["prompt"][0]["content"] == "Be brief."


def test_split_outputs_chat_examples():
    train, evaluation = split_records(_records(50))
    for example in train + evaluation:
        assert [m["role"] for m in example["prompt"]] == ["system", "user"]
        assert [m["role"] for m in example["completion"]] == ["assistant"]
