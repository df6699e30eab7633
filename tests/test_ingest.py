"""Ingest: every line is either a record or a quarantined row that says where it came from and why."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ft_assets.data.ingest import ingest_drops
from ft_assets.data.records import RECORD_COLUMNS, reason_counts


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _ok(q: str = "How many employees?", s: str = "SELECT COUNT(*) FROM employees;") -> str:
    return json.dumps({"question": q, "sql": s})


def test_malformed_line_is_quarantined_with_file_line_and_reason(tmp_path):
    drop = _write(tmp_path / "drop-0001.jsonl", [_ok(), '{"question": "trunc', _ok("Who?")])
    result = ingest_drops([drop])
    assert len(result.records) == 2
    [bad] = result.quarantine.to_dict("records")
    assert bad["source_file"] == str(drop)
    assert bad["drop_id"] == "drop-0001"
    assert bad["line_no"] == 2
    assert bad["stage"] == "ingest"
    assert bad["reason"].startswith("malformed JSON")
    assert bad["raw"] == '{"question": "trunc'


def test_python_repr_line_is_malformed(tmp_path):
    drop = _write(tmp_path / "d.jsonl", ["{'question': 'How many?'}"])
    [reason] = ingest_drops([drop]).quarantine["reason"]
    assert reason.startswith("malformed JSON")


def test_each_kind_of_rejection_gets_a_distinct_reason(tmp_path):
    drop = _write(tmp_path / "d.jsonl", [
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"question": "How many employees?"}),
        json.dumps({"question": "How many employees?", "sql": 42}),
    ])
    q = ingest_drops([drop]).quarantine
    assert list(q["line_no"]) == [1, 2, 3, 4]
    assert reason_counts(q) == {"malformed JSON": 1, "not a JSON object": 1, "missing field": 1, "mistyped field": 1}
    reasons = list(q["reason"])
    assert "list" in reasons[1]
    assert "completion" in reasons[2]
    assert "sql" in reasons[3] and "int" in reasons[3]


def test_null_field_is_mistyped_not_missing(tmp_path):
    drop = _write(tmp_path / "d.jsonl", [json.dumps({"question": None, "sql": "SELECT 1;"})])
    [reason] = ingest_drops([drop]).quarantine["reason"]
    assert reason.startswith("mistyped field: question")


def test_field_name_variants_map_to_prompt_and_completion(tmp_path):
    drop = _write(tmp_path / "d.jsonl", [
        json.dumps({"question": "q1", "sql": "c1"}),
        json.dumps({"prompt": "q2", "completion": "c2"}),
        json.dumps({"instruction": "q3", "output": "c3"}),
    ])
    records = ingest_drops([drop]).records
    pairs = list(zip(records["prompt"], records["completion"], strict=True))
    assert pairs == [("q1", "c1"), ("q2", "c2"), ("q3", "c3")]


def test_db_id_is_empty_unless_named_and_is_read_from_any_key(tmp_path):
    drop = _write(tmp_path / "d.jsonl", [
        json.dumps({"question": "q", "sql": "s"}),
        json.dumps({"question": "q", "sql": "s", "db": "shop"}),
        json.dumps({"question": "q", "sql": "s", "db_id": "zoo"}),
        json.dumps({"question": "q", "sql": "s", "db_name": "atis"}),
        json.dumps({"question": "q", "sql": "s", "db": None}),
    ])
    assert list(ingest_drops([drop]).records["db_id"]) == ["", "shop", "zoo", "atis", ""]


def test_mistyped_db_is_quarantined(tmp_path):
    drop = _write(tmp_path / "d.jsonl", [json.dumps({"question": "q", "sql": "s", "db": 3})])
    [reason] = ingest_drops([drop]).quarantine["reason"]
    assert reason == "mistyped field: db is int, expected string"


def test_blank_lines_are_counted_not_recorded(tmp_path):
    drop = _write(tmp_path / "d.jsonl", [_ok(), "", "   ", _ok("Who?")])
    result = ingest_drops([drop])
    assert result.blank_lines == 2
    assert result.rows_seen == 2
    assert len(result.records) == 2
    assert result.quarantine.empty
    assert list(result.records["line_no"]) == [1, 4]  # blank lines still advance the line number


def test_accounting_lines_read_equals_records_plus_quarantine(tmp_path):
    a = _write(tmp_path / "drop-0001.jsonl", [_ok(), "oops", "", _ok("Who?")])
    b = _write(tmp_path / "drop-0002.jsonl", ["[1]", _ok("Where?"), json.dumps({"sql": "x"})])
    result = ingest_drops([a, b])
    assert result.rows_seen == 7 - 1
    assert result.rows_seen == len(result.records) + len(result.quarantine)
    assert result.lines_read == result.rows_seen  # the older name stays an alias
    assert result.files == [str(a), str(b)]


def test_record_id_is_drop_stem_and_line_number(tmp_path):
    a = _write(tmp_path / "drop-0001.jsonl", [_ok(), "bad", _ok("Who?")])
    b = _write(tmp_path / "drop-0002.jsonl", [_ok("Where?")])
    records = ingest_drops([a, b]).records
    assert list(records["record_id"]) == ["drop-0001:1", "drop-0001:3", "drop-0002:1"]
    assert records["record_id"].is_unique
    assert list(records["source_file"]) == [str(a), str(a), str(b)]


def test_crlf_line_endings_parse(tmp_path):
    drop = tmp_path / "d.jsonl"
    drop.write_bytes((_ok() + "\r\n" + _ok("Who?") + "\r\n").encode())
    result = ingest_drops([drop])
    assert len(result.records) == 2 and result.quarantine.empty


def test_utf8_byte_order_mark_does_not_reject_first_line(tmp_path):
    drop = tmp_path / "d.jsonl"
    drop.write_bytes(b"\xef\xbb\xbf" + (_ok() + "\n").encode())
    result = ingest_drops([drop])
    assert result.quarantine.empty
    assert list(result.records["prompt"]) == ["How many employees?"]


def test_no_drops_gives_typed_empty_frames():
    result = ingest_drops([])
    assert result.records.empty and result.quarantine.empty
    assert list(result.records.columns) == RECORD_COLUMNS and "reason" in result.quarantine.columns
    assert result.records["line_no"].dtype == "int64" and result.quarantine["line_no"].dtype == "int64"
    assert result.rows_seen == result.lines_read == 0


def test_blank_only_file_is_one_empty_file_row(tmp_path):
    # A drop with nothing in it is worth a look: it shows in the quarantine instead of vanishing.
    result = ingest_drops([_write(tmp_path / "d.jsonl", [""])])
    assert result.records.empty
    [row] = result.quarantine.to_dict("records")
    assert (row["line_no"], row["reason"], row["drop_id"]) == (0, "empty file", "d")
    assert result.rows_seen == 1 and result.blank_lines == 1


def test_invalid_utf8_line_is_quarantined_and_the_rest_kept(tmp_path):
    drop = tmp_path / "d.jsonl"
    bad_line = b"{\"question\": \"caf\xe9 staff?\", \"sql\": \"SELECT 1;\"}"
    drop.write_bytes(b"\n".join([_ok().encode(), bad_line, _ok("Who?").encode()]))
    result = ingest_drops([drop])
    assert list(result.records["line_no"]) == [1, 3]
    [bad] = result.quarantine.to_dict("records")
    assert bad["line_no"] == 2 and bad["reason"].startswith("invalid UTF-8: byte 0xe9")


def test_quarantined_raw_preview_has_pii_redacted(tmp_path):
    drop = _write(tmp_path / "d.jsonl", ['{"question": "mail jane.doe@example.com about', _ok()])
    [raw] = ingest_drops([drop]).quarantine["raw"]
    assert "jane.doe@example.com" not in raw and "[EMAIL]" in raw


def test_sft_rows_fill_every_canonical_column(tmp_path):
    drop = _write(tmp_path / "d.jsonl", [_ok()])
    [row] = ingest_drops([drop]).records.to_dict("records")
    assert row == {"record_id": "d:1", "drop_id": "d", "source_file": str(drop), "line_no": 1, "kind": "sft",
                   "prompt": "How many employees?", "completion": "SELECT COUNT(*) FROM employees;", "system": "",
                   "history": "[]", "chosen": "", "rejected": "", "db_id": ""}


def test_record_dtypes_are_int_line_numbers_and_strings(tmp_path):
    records = ingest_drops([_write(tmp_path / "d.jsonl", [_ok()])]).records
    assert records["line_no"].dtype == "int64"
    for column in RECORD_COLUMNS:
        if column != "line_no":
            assert pd.api.types.is_string_dtype(records[column]), column
