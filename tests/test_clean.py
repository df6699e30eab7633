"""Clean: HTML, PII, normalization and length filters, with nothing lost from the accounting."""

from __future__ import annotations

import pandas as pd
import pytest

from ft_assets.data.clean import CleanConfig, clean_records, strip_html
from ft_assets.data.records import records_frame

SQL = "SELECT name FROM employees;"


def _records(*pairs: tuple[str, str]) -> pd.DataFrame:
    return records_frame([
        {"record_id": f"drop-0001:{i}", "drop_id": "drop-0001", "source_file": "/x/drop-0001.jsonl",
         "line_no": i, "prompt": p, "completion": c, "db_id": "company"}
        for i, (p, c) in enumerate(pairs, start=1)
    ])


def _clean_prompt(prompt: str, completion: str = SQL) -> str:
    result = clean_records(_records((prompt, completion)))
    assert len(result.records) == 1, result.quarantine.to_dict("records")
    return result.records["prompt"].iloc[0]


def test_html_tags_and_entities_are_stripped_from_prompt():
    cleaned = _clean_prompt("<p>Who <b>works</b> in Sales?</p><br/>Thanks &amp; regards")
    assert cleaned == "Who works in Sales? Thanks & regards"


def test_html_stripped_counter():
    result = clean_records(_records(("<p>Who works in Sales?</p>", SQL), ("Who works in Legal?", SQL)))
    assert result.html_stripped == 1


def test_html_break_tags_do_not_glue_words():
    assert _clean_prompt("Who works<br>in Sales?") == "Who works in Sales?"


def test_entities_are_decoded_exactly_once():
    # Visible text "&lt;" must stay "&lt;", not become "<".
    assert strip_html("<p>Write &amp;lt; for less-than</p>").strip() == "Write &lt; for less-than"
    assert _clean_prompt("Write &amp;amp; for an ampersand") == "Write &amp; for an ampersand"


def test_sql_completion_comparisons_untouched():
    completion = "SELECT name FROM employees WHERE salary < 50000 AND hire_year > 2019;"
    result = clean_records(_records(("Who earns little and joined late?", completion)))
    assert result.records["completion"].iloc[0] == completion
    assert result.html_stripped == 0


def test_prompt_with_lone_less_than_is_not_treated_as_html():
    prompt = "Employees with salary < 50000 and > 2 years?"
    assert _clean_prompt(prompt) == prompt


def test_emails_and_phones_redacted_and_counted_per_kind():
    result = clean_records(_records(
        ("Who works in Sales? Reply to jane.doe@example.com", SQL),
        ("Count staff. Mail ops-team@corp.example.org or call +1 415-555-0132.", SQL),
        ("Average salary? Call me at (212) 555-0199 or +44 20 7946 0958.", SQL),
    ))
    prompts = list(result.records["prompt"])
    assert prompts == [
        "Who works in Sales? Reply to [EMAIL]",
        "Count staff. Mail [EMAIL] or call [PHONE].",
        "Average salary? Call me at [PHONE] or [PHONE].",
    ]
    assert result.pii_counts == {"email": 2, "phone": 3}


@pytest.mark.parametrize("prompt", [
    "Show employees earning more than 50000.",
    "Which employees were hired after 2019?",
    "Who joined between 2015 and 2019 earning 50,000 or more?",
    "List staff hired in 2019 with salary 65000 on floor 3.",
    "Budget above 1500000 in 2021?",
])
def test_salaries_and_years_are_not_phones(prompt):
    result = clean_records(_records((prompt, SQL)))
    assert result.records["prompt"].iloc[0] == prompt
    assert result.pii_counts.get("phone", 0) == 0


def test_control_characters_removed():
    assert _clean_prompt("Who\x00 works\x07 in\x1b Sales\x7f?") == "Who works in Sales?"


def test_whitespace_collapsed_and_trimmed():
    assert _clean_prompt("  Who \t works\n\nin   Sales?\r\n ") == "Who works in Sales?"


def test_nfkc_normalization():
    # Full-width letters, a ligature and a non-breaking space fold to plain text.
    assert _clean_prompt("Ｗｈｏ works in the \ufb01nance\u00a0team?") == "Who works in the finance team?"


def test_completion_whitespace_normalized_too():
    result = clean_records(_records(("Who works in Sales?", "SELECT name\n  FROM employees;")))
    assert result.records["completion"].iloc[0] == SQL


def test_length_filters_quarantine_with_field_and_threshold():
    result = clean_records(_records(
        ("Who?", SQL),
        ("Who works in Sales? " + "really " * 800, SQL),
        ("Who works in Sales?", "S;"),
        ("Who works in Sales?", "SELECT " + "x, " * 1000 + "y FROM t;"),
    ))
    assert result.records.empty
    reasons = list(result.quarantine["reason"])
    assert reasons[0].startswith("too short: prompt") and reasons[0].endswith("< 8")
    assert reasons[1].startswith("too long: prompt") and reasons[1].endswith("> 1000")
    assert reasons[2].startswith("too short: completion") and reasons[2].endswith("< 3")
    assert reasons[3].startswith("too long: completion") and reasons[3].endswith("> 2000")
    assert list(result.quarantine["stage"]) == ["clean"] * 4
    assert list(result.quarantine["line_no"]) == [1, 2, 3, 4]


def test_length_config_is_respected():
    rows = _records(("Who works in Sales?", SQL))
    assert len(clean_records(rows).records) == 1
    strict = clean_records(rows, CleanConfig(min_prompt_chars=50))
    assert strict.records.empty
    [reason] = strict.quarantine["reason"]
    assert reason == "too short: prompt has 19 chars < 50"
    assert len(clean_records(rows, CleanConfig(max_completion_chars=10)).records) == 0


def test_blank_fields_are_quarantined_as_empty():
    result = clean_records(_records(("   ", SQL), ("<p> </p>", SQL), ("Who works in Sales?", "")))
    assert list(result.quarantine["reason"]) == [
        "empty field: prompt", "empty field: prompt", "empty field: completion"]


def test_quarantine_keeps_source_location_and_raw_text():
    result = clean_records(_records(("Who works in Sales?", SQL), ("Hi", SQL)))
    [row] = result.quarantine.to_dict("records")
    assert (row["drop_id"], row["source_file"], row["line_no"]) == ("drop-0001", "/x/drop-0001.jsonl", 2)
    assert "'Hi'" in row["raw"]


def test_accounting_rows_in_equals_kept_plus_quarantined():
    rows = _records(
        ("Who works in Sales?", SQL), ("Hi", SQL), ("<b>Who works in Legal?</b>", SQL),
        ("Who works in HR?", ""), ("x " * 900, SQL), ("Call (212) 555-0199 about Sales", SQL),
    )
    result = clean_records(rows)
    assert len(result.records) + len(result.quarantine) == len(rows)
    assert len(result.records) == 3


def test_kept_rows_keep_ids_columns_and_dtypes():
    rows = _records(("Hi", SQL), ("<i>Who works in Sales?</i>", SQL))
    kept = clean_records(rows).records
    assert list(kept.columns) == list(rows.columns)
    assert kept.dtypes.to_dict() == rows.dtypes.to_dict()
    assert list(kept["record_id"]) == ["drop-0001:2"]


def test_input_frame_is_not_mutated():
    rows = _records(("<b>Who works in Sales?</b>", SQL))
    before = rows.copy()
    clean_records(rows)
    pd.testing.assert_frame_equal(rows, before)
