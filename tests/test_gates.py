"""Great Expectations suites used by the blocking data gates."""

import pandas as pd

from data_checks.checks import sft_frame
from data_checks.gx_suites import (
    clean_records_suite,
    deduped_records_suite,
    prepare_records,
    sft_split_suite,
    validate_frame,
)
from ft_assets.data.dedup import dedup_key
from ft_assets.data.split import to_chat_example


def _frame(prompts):
    n = len(prompts)
    frame = pd.DataFrame({"record_id": [f"d:{i}" for i in range(n)], "drop_id": ["d"] * n,
                          "source_file": ["d.jsonl"] * n, "line_no": list(range(1, n + 1)), "prompt": prompts,
                          "completion": ["SELECT 1;"] * n})
    return prepare_records(frame)


def test_clean_suite_passes_good_data_and_builds_data_docs(tmp_path):
    result = validate_frame(_frame([f"question number {i}" for i in range(60)]), "clean", clean_records_suite(50),
                            docs_dir=str(tmp_path / "docs"))
    assert result.success, result.markdown()
    assert (tmp_path / "docs" / "index.html").exists()
    assert list((tmp_path / "docs" / "validations").rglob("*.html")), "no validation page in the Data Docs"


def test_clean_suite_names_the_failing_expectation_and_rows():
    prompts = [f"question number {i}" for i in range(60)]
    prompts[3] = "mail me at leak@example.com"
    result = validate_frame(_frame(prompts), "clean", clean_records_suite(50))
    assert not result.success
    failed = {f.expectation: f for f in result.failures()}
    assert set(failed) == {"expect_column_values_to_be_in_set", "expect_column_values_to_not_match_regex"}
    assert failed["expect_column_values_to_be_in_set"].unexpected_examples == ["email"]
    assert failed["expect_column_values_to_be_in_set"].unexpected_record_ids == ["d:3"]
    assert "leak@example.com" in failed["expect_column_values_to_not_match_regex"].unexpected_examples[0]


def test_clean_suite_fails_on_too_few_rows_and_missing_columns():
    frame = _frame(["a real question"] * 5).drop(columns=["source_file"])
    failed = [f.expectation for f in validate_frame(frame, "clean", clean_records_suite(50)).failures()]
    assert "expect_table_row_count_to_be_between" in failed and "expect_column_to_exist" in failed


def test_deduped_suite_fails_when_a_duplicate_is_left():
    frame = _frame([f"question number {i}" for i in range(60)] + ["QUESTION number 7 ?"])
    frame["dedup_key"] = [dedup_key(p, c) for p, c in zip(frame["prompt"], frame["completion"], strict=True)]
    failed = validate_frame(frame, "dedup", deduped_records_suite(50)).failures()
    assert [f.expectation for f in failed] == ["expect_column_proportion_of_unique_values_to_be_between"]


def _example(i, question, answer="SELECT 1;", system=True):
    ex = to_chat_example({"record_id": f"r{i}", "db_id": "company", "prompt": question, "completion": answer})
    if not system:
        ex["prompt"] = ex["prompt"][1:]
    return ex


def test_sft_frame_flags_examples_in_both_splits():
    frame = sft_frame([_example(1, "How many staff?"), _example(2, "Other question")],
                      [_example(3, "how many STAFF ?")])
    assert frame.loc[frame["in_both_splits"], "record_id"].tolist() == ["r1", "r3"]


def test_sft_suite_catches_bad_role_order_and_empty_turns():
    train = [_example(i, f"question {i}") for i in range(60)]
    evaluation = [_example(100 + i, f"held out {i}", system=False) for i in range(10)]
    train[0]["prompt"] = [{"role": "assistant", "content": "hi"}] + train[0]["prompt"]
    train[1]["completion"][0]["content"] = "   "
    failed = {f.expectation: f for f in validate_frame(sft_frame(train, evaluation), "sft",
                                                       sft_split_suite(50, 10)).failures()}
    assert failed["expect_column_values_to_match_regex"].unexpected_examples == ["assistant,system,user,assistant"]
    assert "expect_column_values_to_be_between" in failed  # the blank completion
