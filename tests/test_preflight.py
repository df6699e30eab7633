"""`ftops data validate`: the pipeline's data stages and suites on files, as a JSON verdict."""

import json

from ft_assets.cli import main
from ft_assets.data.text_to_sql import write_demo_drops


def _run(capsys, *args):
    code = main(["data", "validate", *map(str, args)])
    return code, json.loads(capsys.readouterr().out)


def test_demo_drops_pass_and_every_row_is_accounted_for(tmp_path, capsys):
    write_demo_drops(tmp_path / "drops", n_records=200)
    code, summary = _run(capsys, tmp_path / "drops")
    assert code == 0 and summary["success"]
    assert len(summary["files"]) == 4  # three SFT drops and the preference-pair drop
    dups = summary["duplicates"]
    assert summary["rows_in"] == summary["kept"] + summary["quarantined"] + dups["exact"] + dups["near"]
    assert summary["quarantined"] > 0 and dups["exact"] > 0
    assert any(reason.startswith("malformed JSON") for reason in summary["quarantined_by_reason"])
    assert summary["pii_redacted"].get("email", 0) > 0
    assert all(e["success"] for e in summary["expectations"])


def test_a_failing_gate_exits_non_zero_and_names_the_expectation(tmp_path, capsys):
    write_demo_drops(tmp_path / "drops", n_records=20, n_drops=1)
    code, summary = _run(capsys, tmp_path / "drops", "--min-rows", "50")
    assert code == 1 and not summary["success"]
    failed = [e["expectation"] for e in summary["expectations"] if not e["success"]]
    assert failed == ["expect_table_row_count_to_be_between"]


def test_garbage_and_missing_files_do_not_crash(tmp_path, capsys):
    (tmp_path / "junk.jsonl").write_bytes(b"\x00\xff\xfe not json\n{\"prompt\": 3}\n")
    code, summary = _run(capsys, tmp_path / "junk.jsonl", tmp_path / "nope.jsonl")
    assert code == 1 and not summary["success"]
    assert summary["missing_files"] == [str(tmp_path / "nope.jsonl")]
    assert summary["kept"] == 0 and summary["quarantined"] == summary["rows_in"] == 2


def test_a_failing_gate_shows_example_rows_for_each_reason(tmp_path, capsys):
    drop = tmp_path / "few.jsonl"
    rows = [{"question": f"How many staff work in department number {i}?", "sql": f"SELECT {i};"} for i in range(5)]
    rows += [rows[0], {"question": "Hi?", "sql": "SELECT 1;"}, {"question": "Who?"}]
    drop.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    code, summary = _run(capsys, drop, "--min-rows", "50")
    assert code == 1
    examples = summary["quarantine_examples"]
    assert set(examples) == {"malformed JSON", "missing field", "too short"}
    assert examples["malformed JSON"][0]["where"] == "few.jsonl:9" and examples["malformed JSON"][0]["raw"] == "{broken"
    assert examples["too short"][0]["reason"].startswith("too short: prompt")
    [dup] = summary["duplicate_examples"]["exact"]
    assert (dup["record_id"], dup["duplicate_of"]) == ("few:6", "few:1")
    [failed] = [e for e in summary["expectations"] if not e["success"]]
    assert failed["observed_value"] == 5
