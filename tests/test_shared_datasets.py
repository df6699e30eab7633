"""Ingest and clean real public data (../shared/datasets): the shapes we claim to read, read as they really are."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from ft_assets.data.clean import clean_records
from ft_assets.data.ingest import IngestResult, ingest_drops
from ft_assets.data.records import RECORD_COLUMNS, reason_counts

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
GSM8K = DATASETS / "gsm8k" / "test.jsonl"
SEED_TASKS = DATASETS / "self_instruct" / "seed_tasks.jsonl"
SQL_EVAL = DATASETS / "sql_eval" / "questions_gen_sqlite.csv"
HH = DATASETS / "hh_rlhf" / "harmless_base_test.jsonl.gz"


def _ingest(path: Path) -> IngestResult:
    if not path.exists():
        pytest.skip(f"shared dataset not found: {path} (the ../shared/datasets folder is not checked out here)")
    result = ingest_drops([path])
    assert result.rows_seen == len(result.records) + len(result.quarantine)
    assert list(result.records.columns) == RECORD_COLUMNS
    assert result.records["record_id"].is_unique
    return result


@pytest.fixture(scope="module")
def gsm8k() -> IngestResult:
    return _ingest(GSM8K)


@pytest.fixture(scope="module")
def seed_tasks() -> IngestResult:
    return _ingest(SEED_TASKS)


@pytest.fixture(scope="module")
def sql_eval() -> IngestResult:
    return _ingest(SQL_EVAL)


@pytest.fixture(scope="module")
def hh() -> IngestResult:
    return _ingest(HH)


def test_gsm8k_question_answer(gsm8k):
    assert gsm8k.rows_seen == len(gsm8k.records) == 1319 and gsm8k.quarantine.empty
    first = json.loads(GSM8K.read_text(encoding="utf-8").splitlines()[0])
    row = gsm8k.records.iloc[0]
    assert (row["prompt"], row["completion"], row["record_id"]) == (first["question"], first["answer"], "test:1")
    assert set(gsm8k.records["kind"]) == {"sft"} and set(gsm8k.records["db_id"]) == {""}
    assert gsm8k.records["completion"].str.contains("\n#### ").all()


def test_gsm8k_cleans_without_losses_or_false_pii(gsm8k):
    # Its worked answers ("960-480-120 = <<960-480-120=360>>") must not read as phone or card numbers.
    result = clean_records(gsm8k.records)
    assert len(result.records) == 1319 and result.quarantine.empty
    assert result.pii_counts == {} and result.html_stripped == 0
    assert result.records["completion"].str.contains("#### ").all()


def test_self_instruct_maps_the_first_instance(seed_tasks):
    assert len(seed_tasks.records) == 175 and seed_tasks.quarantine.empty
    tasks = [json.loads(line) for line in SEED_TASKS.read_text(encoding="utf-8").splitlines()]
    for task, row in zip(tasks, seed_tasks.records.to_dict("records"), strict=True):
        first = task["instances"][0]
        expected = task["instruction"] + (f"\n\n{first['input']}" if first["input"].strip() else "")
        assert (row["prompt"], row["completion"]) == (expected, first["output"])


def test_self_instruct_clean_rejects_only_on_length(seed_tasks):
    result = clean_records(seed_tasks.records)
    assert len(result.records) + len(result.quarantine) == 175
    assert len(result.records) >= 150
    assert set(reason_counts(result.quarantine)) <= {"too long", "too short"}
    # Its "<mask>" placeholders and the HTML task survive cleaning.
    assert result.html_stripped == 0
    assert result.records["prompt"].str.contains("<mask>", regex=False).sum() == 2


def test_sql_eval_csv_with_db_name(sql_eval):
    assert sql_eval.rows_seen == len(sql_eval.records) == 210 and sql_eval.quarantine.empty
    with SQL_EVAL.open(newline="", encoding="utf-8") as handle:
        expected = list(csv.DictReader(handle))
    records = sql_eval.records.to_dict("records")
    assert [r["db_id"] for r in records] == [e["db_name"] for e in expected]
    assert [r["completion"] for r in records] == [e["query"] for e in expected]
    assert sql_eval.records["db_id"].nunique() == 11
    assert list(sql_eval.records["line_no"]) == list(range(1, 211))


def test_sql_eval_clean_flags_concatenated_alternative_queries(sql_eval):
    # Some "query" cells hold several equivalent queries joined by ";": the repetition filter takes them.
    result = clean_records(sql_eval.records)
    assert len(result.records) + len(result.quarantine) == 210
    counts = reason_counts(result.quarantine)
    assert set(counts) <= {"repetition", "too long"}
    assert 20 <= counts.get("repetition", 0) <= 35
    assert result.quarantine["reason"].str.startswith(("repetition: completion", "too long: completion")).all()


def test_hh_rlhf_preference_pairs(hh):
    assert hh.rows_seen == 2312
    assert len(hh.records) == 2308
    assert set(hh.records["kind"]) == {"preference"}
    assert list(hh.quarantine["reason"]) == ["empty turn: the final Assistant turn of chosen"] * 4
    assert list(hh.quarantine["line_no"]) == [87, 517, 926, 1104]
    assert (hh.records["prompt"] != "").all() and (hh.records["completion"] == "").all()
    assert (hh.records["chosen"] != hh.records["rejected"]).all()
    assert hh.records["record_id"].iloc[0] == "harmless_base_test:1"
    with gzip.open(HH, "rt", encoding="utf-8") as handle:
        first = json.loads(handle.readline())
    row = hh.records.iloc[0]
    history = json.loads(row["history"])
    # The whole dialogue comes back from its parts.
    rebuilt = "".join(f"\n\n{'Human' if t['role'] == 'user' else 'Assistant'}: {t['content']}" for t in history)
    assert first["chosen"].startswith(rebuilt + f"\n\nHuman: {row['prompt']}\n\nAssistant: ")
    assert first["chosen"].rstrip().endswith(row["chosen"])
    multi_turn = hh.records["history"] != "[]"
    assert multi_turn.sum() > 1500


def test_hh_rlhf_clean_keeps_nearly_all(hh):
    result = clean_records(hh.records)
    assert len(result.records) + len(result.quarantine) == 2308
    assert len(result.records) >= 2250
    assert set(reason_counts(result.quarantine)) <= {"too short", "too long", "symbol ratio", "repetition"}
    assert result.pii_counts.get("email", 0) > 0 and result.pii_counts.get("phone", 0) > 0


def test_all_four_together(gsm8k, seed_tasks, sql_eval, hh):
    result = ingest_drops([GSM8K, SEED_TASKS, SQL_EVAL, HH])
    assert result.rows_seen == 1319 + 175 + 210 + 2312 == len(result.records) + len(result.quarantine)
    assert result.records["record_id"].is_unique
    assert result.formats == {str(GSM8K): "jsonl", str(SEED_TASKS): "jsonl", str(SQL_EVAL): "csv",
                              str(HH): "jsonl.gz"}
