"""Clean: HTML, PII, normalization and length filters, with nothing lost from the accounting."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest

from ft_assets.data.clean import CleanConfig, clean_records, normalize_text, redact_pii, strip_html
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


# --- every text column, preference rows, history ----------------------------------------------------


def _row(i: int = 1, **fields) -> dict:
    return {"record_id": f"drop-0001:{i}", "drop_id": "drop-0001", "source_file": "/x/drop-0001.jsonl",
            "line_no": i, **fields}


def _pref(prompt: str = "Which answer is kinder?", chosen: str = "I am glad to help you.",
          rejected: str = "Figure it out yourself.", **fields) -> dict:
    return _row(kind="preference", prompt=prompt, chosen=chosen, rejected=rejected, **fields)


def test_every_text_column_is_cleaned_and_history_turn_by_turn():
    history = json.dumps([{"role": "user", "content": "<p>Hi,\tI am jane.doe@example.com</p>"},
                          {"role": "assistant", "content": "Ｈｅｌｌｏ&nbsp;there"}])
    rows = records_frame([_pref(system="  Be <b>kind</b>. ", history=history,
                                chosen="Sure: <i>call</i> (212) 555-0199.")])
    result = clean_records(rows)
    [row] = result.records.to_dict("records")
    assert row["system"] == "Be kind."
    assert json.loads(row["history"]) == [{"role": "user", "content": "Hi, I am [EMAIL]"},
                                          {"role": "assistant", "content": "Hello there"}]
    assert row["chosen"] == "Sure: call [PHONE]."
    assert result.pii_counts == {"email": 1, "phone": 1}
    assert result.html_stripped == 1  # rows, not fields


def test_preference_rows_need_chosen_and_rejected_not_completion():
    result = clean_records(records_frame([
        _pref(),
        _pref(chosen="  "),
        _pref(rejected="<p></p>"),
        _pref(chosen="Same reply here.", rejected="Same  reply here."),
    ]))
    assert list(result.records["line_no"]) == [1]
    assert result.records["completion"].iloc[0] == ""
    assert list(result.quarantine["reason"]) == [
        "empty field: chosen", "empty field: rejected", "identical pair: chosen equals rejected (no preference signal)"]
    assert "chosen='  '" in result.quarantine["raw"].iloc[0]


def test_reply_length_bounds_apply_to_chosen_and_rejected():
    result = clean_records(records_frame([_pref(chosen="No"), _pref(rejected="x" * 2001)]))
    assert list(result.quarantine["reason"]) == ["too short: chosen has 2 chars < 3",
                                                 "too long: rejected has 2001 chars > 2000"]


def test_short_follow_up_prompt_is_fine_after_a_history():
    history = json.dumps([{"role": "user", "content": "Can you help me plan a trip?"},
                          {"role": "assistant", "content": "Sure, where to?"}])
    result = clean_records(records_frame([_row(prompt="Rome", completion="Great choice.", history=history),
                                          _row(2, prompt="Rome", completion="Great choice.")]))
    assert list(result.records["line_no"]) == [1]
    assert list(result.quarantine["reason"]) == ["too short: prompt has 4 chars < 8"]


def test_malformed_history_and_unknown_kind_are_quarantined():
    result = clean_records(records_frame([_row(prompt=SQL, completion=SQL, history="[{"),
                                          _row(2, prompt=SQL, completion=SQL, history='[{"role": "user"}]'),
                                          _row(3, prompt=SQL, completion=SQL, kind="reward")]))
    reasons = list(result.quarantine["reason"])
    assert reasons[0].startswith("malformed history: ")
    assert reasons[1] == "malformed history: expected a list of {role, content} turns"
    assert reasons[2] == "unknown kind: 'reward' (expected one of sft, preference)"


def test_frames_without_the_newer_columns_are_cleaned():
    # Records written before kind/history/... existed: defaults fill in, nothing fails.
    old = pd.DataFrame([{"record_id": "a:1", "drop_id": "a", "source_file": "a.jsonl", "line_no": 1,
                         "prompt": "Who works in Sales?", "completion": SQL, "db_id": "company"}])
    result = clean_records(old)
    assert len(result.records) == 1
    assert result.records["kind"].iloc[0] == "sft" and result.records["history"].iloc[0] == "[]"


# --- HTML ------------------------------------------------------------------------------------------


def test_placeholders_in_angle_brackets_are_not_html():
    # self-instruct and hh-rlhf use these; stripping them would change the task.
    assert _clean_prompt("Replace the <mask> token with <anonymized> names.") == \
        "Replace the <mask> token with <anonymized> names."


def test_text_about_html_keeps_its_markup():
    prompt = "Convert the given HTML into Markdown: <code>x</code> and <b>bold</b>"
    assert _clean_prompt(prompt) == prompt


def test_fenced_code_keeps_its_markup_and_script_text_is_dropped():
    fenced = "Explain this:\n```\n<div>hi</div>\n```"
    assert _clean_prompt(fenced) == "Explain this: ``` <div>hi</div> ```"
    assert _clean_prompt("Who works<script>alert(1)</script> in Sales?") == "Who works in Sales?"


def test_chosen_is_html_stripped_but_completion_never():
    result = clean_records(records_frame([_pref(chosen="<p>I am glad to help.</p>"),
                                          _row(2, prompt="Who works in Sales?", completion="<b>SELECT 1;</b>")]))
    assert list(result.records["chosen"]) == ["I am glad to help.", ""]
    assert list(result.records["completion"]) == ["", "<b>SELECT 1;</b>"]


# --- PII ------------------------------------------------------------------------------------------


def _redacted(text: str) -> tuple[str, dict]:
    counts: Counter = Counter()
    return redact_pii(text, counts), dict(counts)


@pytest.mark.parametrize(("text", "expected", "kind"), [
    ("server at 192.168.10.254 is down", "server at [IPV4] is down", "ipv4"),
    ("ping 8.8.8.8.", "ping [IPV4].", "ipv4"),
    ("card 4111 1111 1111 1111 expires", "card [CREDIT_CARD] expires", "credit_card"),
    ("card 4111-1111-1111-1111.", "card [CREDIT_CARD].", "credit_card"),
    ("amex 3782 822463 10005", "amex [CREDIT_CARD]", "credit_card"),
    ("pay with 5500000000000004 now", "pay with [CREDIT_CARD] now", "credit_card"),
    ("key sk-proj-abcdefghijklmnopqrstuvwxyz012345", "key [API_KEY]", "api_key"),
    ("AWS AKIAIOSFODNN7EXAMPLE here", "AWS [API_KEY] here", "api_key"),
    ("token ghp_" + "a" * 36, "token [API_KEY]", "api_key"),
    ("github_pat_" + "A1b2" * 10, "[API_KEY]", "api_key"),
    ("slack xoxb-123456789012-abcdefABCDEF", "slack [API_KEY]", "api_key"),
    ("google AIza" + "B" * 35, "google [API_KEY]", "api_key"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     "jwt [API_KEY]", "api_key"),
    ("Authorization: Bearer abcdef0123456789abcdef", "Authorization: Bearer [API_KEY]", "api_key"),
])
def test_new_pii_kinds_are_redacted_and_counted(text, expected, kind):
    redacted, counts = _redacted(text)
    assert redacted == expected
    assert counts == {kind: 1}


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112 fails the Luhn check",
    "version 1.2.3.4.5 and 999.1.1.1 are not addresses",
    "Amount left 960-480-120 = <<960-480-120=360>>360",           # gsm8k arithmetic, not a phone
    "profit 14,000-3,920-1,000=$<<14000-3920-1000=9080>>9,080",   # nor a card
    "the bearer of bad news",
    "risk-assessment-framework-document-v2",
])
def test_look_alikes_are_not_pii(text):
    assert _redacted(text) == (text, {})


@pytest.mark.parametrize(("text", "expected", "kind"), [
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     "aws_secret_access_key = [AWS_SECRET_KEY]", "aws_secret_key"),
    ("the secret is wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY ok", "the secret is [AWS_SECRET_KEY] ok",
     "aws_secret_key"),
    ("HF_TOKEN=hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "HF_TOKEN=[API_KEY]", "api_key"),
    ("postgresql://admin:S3cr3t-pass@db.internal.example.com:5432/prod",
     "postgresql://admin:[URL_PASSWORD]@db.internal.example.com:5432/prod", "url_password"),
    ("proxy http://user:hunter2@10-0-0-1.proxy.example:3128", "proxy http://user:[URL_PASSWORD]@10-0-0-1.proxy.example:3128",
     "url_password"),
    ("key: -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY----- done",
     "key: [PRIVATE_KEY] done", "private_key"),
    ("cut -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA", "cut [PRIVATE_KEY]", "private_key"),
])
def test_credential_shapes_are_redacted_and_counted(text, expected, kind):
    redacted, counts = _redacted(text)
    assert redacted == expected
    assert counts == {kind: 1}


def test_three_credential_rows_count_three_redactions():
    # Issue 15: of an AWS secret key, a Hugging Face token and a database URL with a password, two were counted.
    result = clean_records(_records(
        ("Why does boto3 reject aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY?", "Rotate it."),
        ("My token hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789 fails to log in, why?", "Create a new one."),
        ("Connect with postgres://app:pa55word@db.example.com/prod, what is wrong?", "Nothing, but rotate it.")))
    assert sum(result.pii_counts.values()) == 3
    assert result.pii_counts == {"aws_secret_key": 1, "api_key": 1, "url_password": 1}


@pytest.mark.parametrize("text", [
    "see https://example.com/a/b?c=1 and ftp://files.example.com/pub",
    "sha1 da39a3ee5e6b4b0d3255bfef95601890afd80709 is a hash",
    "path /usr/local/lib/python3.11/site-packages/torch is long",
])
def test_credential_look_alikes_are_kept(text):
    assert _redacted(text) == (text, {})


def test_zero_counts_are_not_reported():
    result = clean_records(_records(("Who works in Sales?", SQL)))
    assert result.pii_counts == {}


# --- quality filters --------------------------------------------------------------------------------


def test_repetitive_completion_is_quarantined_with_share_and_threshold():
    looping = "I can help with that. " * 12
    result = clean_records(_records(("Who works in Sales?", looping)))
    [reason] = result.quarantine["reason"]
    assert reason.startswith("repetition: completion has ") and reason.endswith("duplicate word 3-grams > 50.0%")
    assert result.filter_counts == {"repetition: completion": 1}


def test_repeated_lines_are_quarantined():
    text = "Who works in Sales?\n" + "Thanks!\n" * 4 + "Bye"
    result = clean_records(_records((text, SQL)))
    [reason] = result.quarantine["reason"]
    assert reason == "repetition: prompt repeats its most common line in 66.7% of 6 lines > 50.0%"


def test_short_texts_are_exempt_from_the_repetition_share():
    assert len(clean_records(_records(("Who works in Sales? Who works in Sales?", SQL))).records) == 1


def test_symbol_ratio_prompt_strict_completion_loose():
    symbol_sql = "SELECT COUNT(*) FROM t WHERE (a<>b) AND (c>=d);"
    result = clean_records(_records(
        ("??? !!! ### *** ~~~ %%% Sales", SQL),
        ("Who works in Sales?", symbol_sql),
        ("Which regex matches an IP?", r"^(?:\d{1,3}\.){3}\d{1,3}$"),
        ("Who works in Sales?", "...!!!...!!!"),
    ))
    assert list(result.records["line_no"]) == [2, 3]
    assert list(result.quarantine["reason"]) == ["symbol ratio: prompt is 62.1% symbols > 50.0%",
                                                 "symbol ratio: completion is 100.0% symbols > 80.0%"]
    assert result.filter_counts == {"symbol ratio: prompt": 1, "symbol ratio: completion": 1}


def test_filter_thresholds_are_configurable():
    rows = _records(("Who works in Sales? (dept=3)", SQL))
    assert len(clean_records(rows).records) == 1
    strict = clean_records(rows, CleanConfig(max_prompt_symbol_ratio=0.05))
    assert list(strict.quarantine["reason"]) == ["symbol ratio: prompt is 14.3% symbols > 5.0%"]


def test_keep_newlines_keeps_line_structure():
    text = "Steps:\n\n\n  1.  Add   2\r\n  2. Done  \n"
    assert normalize_text(text) == "Steps: 1. Add 2 2. Done"
    assert normalize_text(text, keep_newlines=True) == "Steps:\n\n  1. Add 2\n  2. Done"
    result = clean_records(_records(("Who works in Sales?", "SELECT name\n  FROM employees;")),
                           CleanConfig(keep_newlines=True))
    assert result.records["completion"].iloc[0] == "SELECT name\n  FROM employees;"


def test_fast_paths_give_what_the_patterns_give():
    """normalize_text and symbol_ratio take str methods on ASCII text (the regexes were a third of clean's
    time): on every ASCII character, and on random mixes of ASCII and non-ASCII text, the result is the
    patterns' own."""
    import random
    import re
    import unicodedata

    from ft_assets.data.clean import duplicate_ngram_share, symbol_ratio

    control, whitespace, symbol = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"), re.compile(r"\s+"), \
        re.compile(r"[^\w\s]|_")

    def by_patterns(text: str) -> tuple[str, float]:
        normalized = whitespace.sub(" ", control.sub("", unicodedata.normalize("NFKC", text))).strip()
        ratio = (len(text) - len(symbol.sub("", text))) / len(text) if text else 0.0
        return normalized, ratio

    rng = random.Random(0)
    alphabet = [chr(c) for c in range(128)] + list("é ß\u00a0\u2003\u3000中😀\u200b\u2028ﬁ_")
    samples = [chr(c) for c in range(128)] + ["", "   ", "a  b\t\nc", "x_y-z!"]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(3000)]
    samples += ["".join(rng.choice(alphabet[:128]) for _ in range(rng.randint(0, 40))) for _ in range(3000)]
    for text in samples:
        assert (normalize_text(text), symbol_ratio(text)) == by_patterns(text), repr(text)
    assert duplicate_ngram_share("a b c a b c") == 1 - 3 / 4 and duplicate_ngram_share("a b") == 0.0
