"""Preference pairs: DPO example shapes, quarantine reasons, the prompt-hash split, demo and real pairs, the gate."""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from data_checks.preference_checks import preference_frame
from ft_assets.data.ingest import ingest_drops
from ft_assets.data.preference import build_preference_dataset, rejection_reason, to_preference_example
from ft_assets.data.records import records_frame
from ft_assets.data.split import SYSTEM_PROMPTS
from ft_assets.data.suites import preference_split_suite, validate_frame
from ft_assets.data.text_to_sql import (
    DB_ID,
    PREFERENCE_DROP,
    build_database,
    corrupt_sql,
    generate_clean_pairs,
    write_demo_drops,
)

HH_RLHF = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "hh_rlhf" / "harmless_base_test.jsonl.gz"
SQL = "SELECT name FROM employees WHERE department = 'Sales';"
BAD_SQL = "SELECT name FROM employees;"


def _row(i: int, prompt: str = "Who works in Sales?", chosen: str = SQL, rejected: str = BAD_SQL, **extra) -> dict:
    return {"record_id": f"d:{i}", "drop_id": "d", "source_file": "/x/d.jsonl", "line_no": i, "kind": "preference",
            "prompt": prompt, "completion": "", "system": "", "history": "[]", "chosen": chosen,
            "rejected": rejected, "db_id": "", **extra}


def test_example_is_trl_conversational_with_system_and_history():
    from trl.data_utils import is_conversational

    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, ask away."}]
    example = to_preference_example(_row(1, system="Be terse.", history=json.dumps(history)))
    assert is_conversational(example)
    assert example["prompt"] == [{"role": "system", "content": "Be terse."}, *history,
                                 {"role": "user", "content": "Who works in Sales?"}]
    assert example["chosen"] == [{"role": "assistant", "content": SQL}]
    assert example["rejected"] == [{"role": "assistant", "content": BAD_SQL}]
    # A known database's schema is the system prompt, as for SFT.
    schema = to_preference_example(_row(2, db_id=DB_ID, system="ignored"))["prompt"][0]
    assert schema == {"role": "system", "content": SYSTEM_PROMPTS[DB_ID]}


def test_the_tokenizer_chat_template_renders_prompt_as_a_prefix_of_each_pair(scratch_model_dir):
    """DPO splits prompt from reply where the two renderings diverge: the prompt must be an exact prefix."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(scratch_model_dir)
    example = to_preference_example(_row(1, db_id=DB_ID))
    prompt = tokenizer.apply_chat_template(example["prompt"], tokenize=False, add_generation_prompt=True)
    for side in ("chosen", "rejected"):
        full = tokenizer.apply_chat_template(example["prompt"] + example[side], tokenize=False)
        assert full.startswith(prompt) and example[side][0]["content"] in full[len(prompt):]
        assert SYSTEM_PROMPTS[DB_ID] in prompt


@pytest.mark.parametrize(("change", "reason"), [
    ({"prompt": "  "}, "empty field: prompt"),
    ({"chosen": ""}, "empty field: chosen"),
    ({"rejected": "\n"}, "empty field: rejected"),
    ({"rejected": SQL.lower().replace(" ", "  ")}, "identical pair: chosen equals rejected up to case and whitespace"),
    ({"history": "[{"}, "malformed history"),
    ({"history": json.dumps([{"role": "user"}])}, "malformed history: expected a list of {role, content} turns"),
    ({"history": json.dumps([{"role": "system", "content": "x"}])}, "bad role order: history turn 0 has role"),
    ({"history": json.dumps([{"role": "assistant", "content": "x"}])},
     "bad role order: history starts with an assistant turn"),
    ({"history": json.dumps([{"role": "user", "content": "x"}, {"role": "assistant", "content": " "}])},
     "empty turn: history turn 1 (assistant)"),
])
def test_unusable_pairs_are_quarantined_with_their_reason(change, reason):
    assert rejection_reason(_row(1, **change)).startswith(reason)
    records = records_frame([_row(1), _row(2, **{"prompt": "Who works in Legal?", **change})])
    split = build_preference_dataset(records)
    assert len(split.train) + len(split.eval) == 1
    [quarantined] = split.quarantine
    assert quarantined["reason"].startswith(reason)
    assert (quarantined["record_id"], quarantined["drop_id"], quarantined["line_no"]) == ("d:2", "d", 2)
    assert quarantined["stage"] == "preference_dataset" and quarantined["raw"]


def test_sft_rows_are_left_alone_and_no_pair_is_lost():
    sft = {**_row(0), "kind": "sft", "completion": SQL, "chosen": "", "rejected": ""}
    rows = [sft] + [_row(i, prompt=f"Who works in team {i}?") for i in range(1, 40)] + [_row(40, rejected=SQL)]
    split = build_preference_dataset(records_frame(rows))
    assert len(split.train) + len(split.eval) + len(split.quarantine) == 40
    assert split.reason_counts() == {"identical pair": 1}
    assert "d:0" not in {r["record_id"] for r in split.train + split.eval}


def test_split_is_deterministic_by_prompt_and_keeps_a_prompts_pairs_together():
    # Three pairs per prompt (as multi-response preference sets have): never split across train and eval.
    rows = [_row(3 * i + k, prompt=f"Question number {i}?", rejected=f"SELECT {k};")
            for i in range(60) for k in range(3)]
    records = records_frame(rows)
    first, again = build_preference_dataset(records, 0.2), build_preference_dataset(records, 0.2)
    assert [r["record_id"] for r in first.eval] == [r["record_id"] for r in again.eval]
    sides = {}
    for side, part in (("train", first.train), ("eval", first.eval)):
        for r in part:
            sides.setdefault(r["prompt"][-1]["content"], set()).add(side)
    assert all(len(s) == 1 for s in sides.values())
    assert 0.08 < len(first.eval) / len(rows) < 0.35
    salted = build_preference_dataset(records, 0.2, salt="other")
    assert {r["record_id"] for r in salted.eval} != {r["record_id"] for r in first.eval}


def test_corrupt_sql_gives_a_different_query_for_every_template():
    import random

    rng = random.Random(0)
    for _, sql in generate_clean_pairs(100_000):
        wrong, what = corrupt_sql(sql, rng)
        assert wrong != sql and what in {"wrong column", "missing WHERE", "wrong aggregate", "wrong order"}


def test_demo_preference_drop_is_generated_alongside_the_sft_drops(tmp_path):
    paths = write_demo_drops(tmp_path, n_records=300)
    assert paths[-1].name == PREFERENCE_DROP and len(paths) == 4
    # The SFT drops are byte-identical to a run without preference pairs.
    plain = write_demo_drops(tmp_path / "plain", n_records=300, n_preference=0)
    assert [p.read_bytes() for p in paths[:3]] == [p.read_bytes() for p in plain]
    result = ingest_drops([paths[-1]])
    pairs = result.records
    assert (pairs["kind"] == "preference").all() and 55 <= len(pairs) <= 70
    assert set(pairs["db_id"]) == {DB_ID}
    # Every kind of noise the later stages must catch is there.
    assert any(r.startswith("missing field: rejected") for r in result.quarantine["reason"])
    assert any(r.startswith("malformed JSON") for r in result.quarantine["reason"])
    assert (pairs["chosen"] == pairs["rejected"]).any() and (pairs["rejected"] == "").any()
    good = pairs[(pairs["rejected"] != "") & (pairs["chosen"].str.casefold() != pairs["rejected"].str.casefold())]
    assert len(good) >= 50
    # Chosen is gold SQL that runs; the questions are not the SFT drops' questions.
    con = sqlite3.connect(build_database(tmp_path / "company.db"))
    try:
        for sql in good["chosen"]:
            con.execute(sql).fetchall()
    finally:
        con.close()
    sft_questions = {q for q, _ in generate_clean_pairs(300)}
    assert not set(good["prompt"]) & sft_questions


def test_small_demo_keeps_preference_pairs_small():
    # The failing-gate demo (30 records) must stay under the clean gate's row minimum with its pairs added.
    from ft_assets.data.text_to_sql import generate_preference_pairs

    assert len(generate_preference_pairs(30 // 5)) == 6


@pytest.fixture(scope="module")
def hh_records(tmp_path_factory) -> pd.DataFrame:
    if not HH_RLHF.is_file():
        pytest.skip(f"real preference pairs not found at {HH_RLHF}")
    with gzip.open(HH_RLHF, "rt", encoding="utf-8") as handle:
        lines = [next(handle) for _ in range(200)]
    path = tmp_path_factory.mktemp("hh") / "hh.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    result = ingest_drops([path])
    assert len(result.records) + len(result.quarantine) == 200
    return result.records


def test_real_hh_rlhf_dialogues_become_pairs_with_their_history(hh_records):
    split = build_preference_dataset(hh_records)
    examples = split.train + split.eval
    assert len(examples) + len(split.quarantine) == (hh_records["kind"] == "preference").sum() >= 190
    multi_turn = [e for e in examples if len(e["prompt"]) > 1]
    assert len(multi_turn) > 50  # hh-rlhf is mostly multi-turn: the history must survive
    for e in examples:
        assert e["prompt"][0]["role"] == "user" and e["prompt"][-1]["role"] == "user"
        assert e["chosen"][0]["content"] != e["rejected"][0]["content"]
    assert len(split.eval) >= 10


def test_gate_passes_real_pairs_and_fails_copied_replies_and_overlap(hh_records):
    split = build_preference_dataset(hh_records)
    frame = preference_frame(split.train, split.eval)
    ok = validate_frame(frame, "preference_ok", preference_split_suite())
    assert ok.success, ok.markdown()

    bad_train = [dict(split.train[0], rejected=split.train[0]["chosen"]), *split.train[1:]]
    leaked_eval = [*split.eval, dict(split.train[1], record_id="leak")]
    bad = validate_frame(preference_frame(bad_train, leaked_eval), "preference_bad", preference_split_suite())
    failed = {(o.expectation, o.kwargs.get("column")): o for o in bad.failures()}
    assert set(failed) == {("expect_column_values_to_be_in_set", "same_reply"),
                           ("expect_column_values_to_be_in_set", "in_both_splits")}
    assert failed[("expect_column_values_to_be_in_set", "same_reply")].unexpected_record_ids == [
        split.train[0]["record_id"]]

    tiny = validate_frame(preference_frame(split.train[:3], split.eval[:1]), "preference_tiny",
                          preference_split_suite())
    assert [o.expectation for o in tiny.failures()] == ["expect_table_row_count_to_be_between"]
