"""Dedup: normalized duplicates go, the first occurrence stays, and each removal names what it duplicated."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ft_assets.data.clean import clean_records
from ft_assets.data.dedup import dedup_key, exact_dedup, near_dedup
from ft_assets.data.ingest import ingest_drops
from ft_assets.data.records import RECORD_COLUMNS, records_frame
from ft_assets.data.split import source_record_id, split_records, turn_examples

SQL = "SELECT name FROM employees WHERE department = 'Sales';"


def _rows(*rows: tuple[str, int, str, str]) -> pd.DataFrame:
    """(drop_id, line_no, prompt, completion) tuples to a records frame."""
    return records_frame([
        {"record_id": f"{d}:{n}", "drop_id": d, "source_file": f"/x/{d}.jsonl", "line_no": n,
         "prompt": p, "completion": c, "db_id": "company"}
        for d, n, p, c in rows
    ])


def test_exact_duplicate_removed_and_points_to_kept_row():
    result = exact_dedup(_rows(("drop-0001", 1, "Who works in Sales?", SQL),
                               ("drop-0001", 2, "Who works in Sales?", SQL)))
    assert list(result.records["record_id"]) == ["drop-0001:1"]
    assert list(result.duplicates["record_id"]) == ["drop-0001:2"]
    assert list(result.duplicates["duplicate_of"]) == ["drop-0001:1"]


def test_case_whitespace_and_punctuation_variants_are_duplicates():
    variants = ["WHO WORKS IN SALES?", "  Who  works  in  Sales?", "Who works in Sales ?", "who works in sales"]
    rows = _rows(("drop-0001", 1, "Who works in Sales?", SQL),
                 *[("drop-0001", i, v, SQL) for i, v in enumerate(variants, start=2)])
    result = exact_dedup(rows)
    assert list(result.records["record_id"]) == ["drop-0001:1"]
    assert set(result.duplicates["duplicate_of"]) == {"drop-0001:1"}
    assert len(result.duplicates) == len(variants)


def test_first_occurrence_in_drop_and_line_order_is_kept_whatever_the_row_order():
    rows = _rows(
        ("drop-0002", 1, "Who works in Sales?", SQL),
        ("drop-0001", 9, "who works in sales", SQL),
        ("drop-0001", 3, "WHO WORKS IN SALES?", SQL),
    )
    result = exact_dedup(rows)
    assert list(result.records["record_id"]) == ["drop-0001:3"]
    assert result.records["prompt"].iloc[0] == "WHO WORKS IN SALES?"  # the kept row's text is unchanged
    assert sorted(result.duplicates["record_id"]) == ["drop-0001:9", "drop-0002:1"]
    assert set(result.duplicates["duplicate_of"]) == {"drop-0001:3"}


def test_line_order_is_numeric_not_lexical():
    rows = _rows(("drop-0001", 10, "Who works in Sales?", SQL), ("drop-0001", 9, "Who works in Sales?", SQL))
    assert list(exact_dedup(rows).records["record_id"]) == ["drop-0001:9"]


def test_different_completions_are_not_duplicates():
    rows = _rows(
        ("drop-0001", 1, "Who works in Sales?", SQL),
        ("drop-0001", 2, "Who works in Sales?", "SELECT name FROM employees WHERE department = 'Legal';"),
    )
    result = exact_dedup(rows)
    assert len(result.records) == 2 and result.duplicates.empty


def test_different_prompts_with_same_completion_are_not_duplicates():
    rows = _rows(("drop-0001", 1, "Who works in Sales?", SQL), ("drop-0001", 2, "Show me everyone in Sales.", SQL))
    assert len(exact_dedup(rows).records) == 2


def test_prompt_completion_boundary_matters():
    # Moving a word across the prompt/completion boundary makes a different example.
    assert dedup_key("Who works in Sales", "SELECT 1") != dedup_key("Who works in", "Sales SELECT 1")


def test_each_duplicate_names_a_kept_record():
    rows = _rows(*[("drop-0001", i, p, SQL) for i, p in enumerate(
        ["Who works in Sales?", "Who works in Legal?", "who works in sales", "WHO WORKS IN LEGAL", "Who works in HR?"],
        start=1)])
    result = exact_dedup(rows)
    assert set(result.duplicates["duplicate_of"]) <= set(result.records["record_id"])
    assert dict(zip(result.duplicates["record_id"], result.duplicates["duplicate_of"], strict=True)) == {
        "drop-0001:3": "drop-0001:1", "drop-0001:4": "drop-0001:2"}


def test_accounting_rows_in_equals_kept_plus_duplicates():
    rows = _rows(*[(f"drop-000{i % 3 + 1}", i, f"Question {i % 7}?", SQL) for i in range(50)])
    result = exact_dedup(rows)
    assert len(result.records) + len(result.duplicates) == len(rows)
    assert len(result.records) == 7
    assert set(result.records["record_id"]) | set(result.duplicates["record_id"]) == set(rows["record_id"])


def test_output_keeps_record_schema():
    rows = _rows(("drop-0001", 1, "Who works in Sales?", SQL), ("drop-0001", 2, "who works in sales", SQL))
    result = exact_dedup(rows)
    assert list(result.records.columns) == RECORD_COLUMNS
    assert list(result.duplicates.columns) == RECORD_COLUMNS + ["duplicate_of"]


def test_empty_input_keeps_schema():
    result = exact_dedup(records_frame([]))
    assert result.records.empty and result.duplicates.empty
    assert list(result.records.columns) == RECORD_COLUMNS
    assert list(result.duplicates.columns) == RECORD_COLUMNS + ["duplicate_of"]


def test_sql_operators_are_not_punctuation():
    result = exact_dedup(_rows(("d", 1, "Who earns over 5?", "SELECT name FROM t WHERE x > 5;"),
                               ("d", 2, "Who earns over 5?", "SELECT name FROM t WHERE x < 5;"),
                               ("d", 3, "who earns over 5", "select name from t  where x > 5")))
    assert list(result.records["record_id"]) == ["d:1", "d:2"]
    assert list(result.duplicates["duplicate_of"]) == ["d:1"]


# --- multi-turn chats: dedup compares whole conversations, every assistant reply is trainable ---

TOPICS = ["sourdough starters", "rust lifetimes", "tax brackets in Spain", "knee pain when running",
          "the French revolution", "python decorators", "watering succulents", "learning the cello"]


def _sharegpt(i: int, topic: str) -> dict:
    """A ShareGPT-style chat whose last exchange ("thanks" / "you're welcome") is the same in every chat."""
    return {"id": f"conv{i}", "conversations": [
        {"from": "human", "value": f"Can you explain {topic} to me in a few sentences, please?"},
        {"from": "gpt", "value": f"Sure. Here is a short overview of {topic}, covering the basics first and "
                                 f"then one common mistake people make with {topic}."},
        {"from": "human", "value": "Thanks, that helps a lot!"},
        {"from": "gpt", "value": "You're welcome! Let me know if you have more questions."},
    ]}


def _drop(tmp_path: Path, convs: list[dict]) -> Path:
    path = tmp_path / "sharegpt.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in convs))
    return path


def test_chats_ending_alike_after_different_histories_are_not_duplicates(tmp_path):
    convs = [_sharegpt(i, t) for i, t in enumerate(TOPICS)] + [_sharegpt(99, TOPICS[0])]  # one true duplicate
    records = clean_records(ingest_drops([_drop(tmp_path, convs)]).records).records
    exact = exact_dedup(records)
    assert len(exact.records) == len(TOPICS)
    assert exact.duplicates["record_id"].tolist() == ["sharegpt:9"]
    assert exact.duplicates["duplicate_of"].tolist() == ["sharegpt:1"]
    # Near dedup looks at the whole conversation too: the shared closing exchange does not make them similar.
    assert near_dedup(exact.records, threshold=0.8).duplicates.empty


def test_every_assistant_turn_is_a_completion_and_a_chat_stays_on_one_side(tmp_path):
    records = ingest_drops([_drop(tmp_path, [_sharegpt(i, t) for i, t in enumerate(TOPICS)])]).records
    examples = turn_examples(records.iloc[0].to_dict(), system_prompts={})
    assert [e["record_id"] for e in examples] == ["sharegpt:1#1", "sharegpt:1"]
    first, last = examples
    assert [t["role"] for t in first["prompt"]] == ["user"] and "overview" in first["completion"][0]["content"]
    assert [t["role"] for t in last["prompt"]] == ["user", "assistant", "user"]
    assert last["completion"][0]["content"].startswith("You're welcome")
    train, evaluation = split_records(records, eval_fraction=0.4, system_prompts={})
    train_ids = {source_record_id(e) for e in train}
    assert not train_ids & {e["record_id"] for e in evaluation}
    assert len(train) == 2 * len(train_ids)  # both replies of every train chat
    assert all(len(e["prompt"]) == 3 for e in evaluation)  # eval scores the final reply only
    only_last, _ = split_records(records, eval_fraction=0.4, system_prompts={}, every_assistant_turn=False)
    assert len(only_last) == len(train_ids)


def test_prose_fast_path_for_ascii_matches_the_pattern_on_every_ascii_character() -> None:
    """The ASCII translate table must do exactly what the \\w pattern does, or keys (and dedup) change."""
    import random
    import re

    from ft_assets.data import dedup
    from ft_assets.data.records import history_turns

    pattern = re.compile(r"[^\w]+")
    rnd = random.Random(7)
    alphabet = [chr(c) for c in range(128)]
    texts = ["".join(alphabet), "Hello,  WORLD!! a_b-c\td\ne", "SELECT x FROM t WHERE a >= 5;", ""] + [
        "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 60))) for _ in range(2000)]
    for text in texts + ["café naïve — ß İ"]:  # the last takes the pattern (not ASCII)
        assert dedup._prose(text) == " ".join(pattern.sub(" ", text.casefold()).split()), repr(text)
    assert history_turns("") == history_turns("[]") == history_turns(None) == []
    assert history_turns('[{"role": "user", "content": "hi"}]') == [{"role": "user", "content": "hi"}]
