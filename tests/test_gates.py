"""Great Expectations suites used by the blocking gates."""

from __future__ import annotations

import pandas as pd

from data_checks.checks import sft_frame
from data_checks.gx_suites import clean_records_suite, validate_frame
from ft_assets.data.split import to_chat_example


def _frame(prompts):
    return pd.DataFrame({"record_id": [f"d:{i}" for i in range(len(prompts))], "prompt": prompts,
                         "completion": ["SELECT 1;"] * len(prompts)})


def test_clean_suite_passes_good_data():
    result = validate_frame(_frame([f"question number {i}" for i in range(60)]), "clean", clean_records_suite(50))
    assert result.success, result.markdown()


def test_clean_suite_names_the_failing_expectation_and_rows():
    prompts = [f"question number {i}" for i in range(60)]
    prompts[3] = "mail me at leak@example.com"
    result = validate_frame(_frame(prompts), "clean", clean_records_suite(50))
    assert not result.success
    failed = result.failures()
    assert [f.expectation for f in failed] == ["expect_column_values_to_not_match_regex"]
    assert failed[0].unexpected_count == 1 and "leak@example.com" in failed[0].unexpected_examples[0]


def test_clean_suite_fails_on_too_few_rows():
    result = validate_frame(_frame(["a real question"] * 5), "clean", clean_records_suite(50))
    assert "expect_table_row_count_to_be_between" in [f.expectation for f in result.failures()]


def test_sft_frame_flags_examples_in_both_splits():
    def ex(i, q):
        return to_chat_example({"record_id": f"r{i}", "db_id": "company", "prompt": q, "completion": "SELECT 1;"})

    frame = sft_frame([ex(1, "How many staff?"), ex(2, "Other question")], [ex(3, "how many STAFF ?")])
    assert frame.loc[frame["in_both_splits"], "record_id"].tolist() == ["r1", "r3"]
