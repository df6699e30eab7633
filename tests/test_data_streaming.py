"""The streamed data stages (a batch at a time, over a process pool) write exactly what the in-memory stages
give: the same rows kept in the same order, the same quarantine rows and reasons, the same gate frames.

Batches are tiny (37 rows) so every stage crosses many batch boundaries and both pool workers take part.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from ft_assets.data import artifact_files as files
from ft_assets.data.clean import CleanConfig
from ft_assets.data.dedup import _in_drop_order, exact_dedup
from ft_assets.data.pipeline import clean_stage, dedup_stage, ingest_to_artifact, split_stage
from ft_assets.data.streamed import clean_to_artifact, split_to_artifact
from ft_assets.data.streamed_dedup import dedup_to_artifact
from ft_assets.data.suites import prepared_batch, records_gate_frame, sft_frame, sft_frame_from_files

BATCH = 37
WORDS = "staff salary office team city order price product customer region store month".split()


def _line(rng: random.Random, i: int) -> dict | str:
    roll = rng.random()
    words = " ".join(rng.choices(WORDS, k=rng.randint(6, 30)))
    if roll < 0.05:
        return '{"question": "broken'
    if roll < 0.10:
        return {"question": "Why?", "answer": "Because."}  # too short a prompt: quarantined by clean
    if roll < 0.15:
        return {"question": f"Mail ana{i}@example.com about {words}?", "answer": f"SELECT {i};"}
    if roll < 0.20:
        return {"question": f"<p>What &amp; where</p> {words}?", "answer": "SELECT 1;"}
    if roll < 0.25:
        return {"messages": [{"role": "user", "content": f"First {words}"}, {"role": "assistant", "content": "Ok."},
                             {"role": "user", "content": f"Then {words}?"}, {"role": "assistant", "content": "Done."}]}
    if roll < 0.30:
        return {"prompt": f"Pick {words}", "chosen": "A good answer.", "rejected": "A bad answer."}
    if roll < 0.38:
        return {"question": "Which staff work in the city office?", "answer": "SELECT name FROM staff;"}  # repeats
    return {"question": f"{words.capitalize()} {i}?", "answer": f"SELECT {words.split()[0]} FROM t WHERE id = {i};"}


def _drop(path: Path, rows: int, seed: int) -> Path:
    rng = random.Random(seed)
    lines = [_line(rng, i) for i in range(rows)]
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def _ingested(root: Path, make_drop, stem: str, rows: int, seeds: tuple[int, ...]) -> list[Path]:
    """One raw record artifact per generated drop ``<stem>-000<k>.jsonl``, in drop order."""
    out = []
    for k, seed in enumerate(seeds):
        directory = root / f"raw{k}"
        directory.mkdir()
        ingest_to_artifact([make_drop(root / f"{stem}-000{k}.jsonl", rows, seed)], directory)
        out.append(directory)
    return out


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> list[Path]:
    return _ingested(tmp_path_factory.mktemp("streaming"), _drop, "drop", 400, (1, 2))


def _frames_equal(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def test_streamed_clean_matches_in_memory(raw, tmp_path):
    config = CleanConfig(min_prompt_chars=8)
    expected = clean_stage(pd.concat([files.read_records(d) for d in raw], ignore_index=True), config)
    summary = clean_to_artifact(raw, tmp_path, config, workers=2, batch_rows=BATCH)
    assert len(expected.quarantine) > 20 and len(expected.records) > 500  # the drop exercises both sides
    _frames_equal(files.read_records(tmp_path), expected.records)
    _frames_equal(files.read_quarantine(tmp_path), expected.quarantine)
    assert (summary.rows_in, summary.records, summary.quarantined) == (
        len(expected.records) + len(expected.quarantine), len(expected.records), len(expected.quarantine))
    assert summary.pii_counts == expected.pii_counts and summary.pii_counts.get("email")
    assert summary.html_stripped == expected.html_stripped > 0
    assert summary.filter_counts == expected.filter_counts
    assert summary.quarantine_reasons == {"too short": len(expected.quarantine)}


def test_streamed_clean_of_all_quarantined_rows_writes_empty_artifacts(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    drop = tmp_path / "drop.jsonl"
    drop.write_text("".join(json.dumps({"question": "Why?", "answer": "No."}) + "\n" for _ in range(90)))
    ingest_to_artifact([drop], raw)
    out = tmp_path / "clean"
    out.mkdir()
    summary = clean_to_artifact([raw], out, workers=2, batch_rows=BATCH)
    expected = clean_stage(files.read_records(raw))
    assert summary.records == 0 and summary.quarantined == 90
    _frames_equal(files.read_records(out), expected.records)
    _frames_equal(files.read_quarantine(out), expected.quarantine)


@pytest.fixture(scope="module")
def deduped(raw, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("deduped")
    cleaned = clean_stage(pd.concat([files.read_records(d) for d in raw], ignore_index=True))
    files.write_records(directory, dedup_stage(cleaned.records).records)
    return directory


@pytest.mark.parametrize("keys", [False, True])
def test_gate_frame_built_in_batches_matches_whole(deduped, keys):
    _frames_equal(records_gate_frame(deduped, keys=keys, workers=2, batch_rows=BATCH),
                  prepared_batch(files.read_records(deduped), keys))


def test_streamed_split_matches_in_memory(deduped, tmp_path):
    # A 4-word n-gram over a 12-word vocabulary: many train prompts collide with eval ones.
    expected = split_stage(files.read_records(deduped), ngram=4)
    summary = split_to_artifact(deduped, tmp_path, ngram=4, batch_rows=BATCH)
    assert expected.decontaminated and expected.train and expected.eval
    for name, rows in expected.splits.items():
        assert files.read_examples(tmp_path, name) == rows, name
    assert (summary.train, summary.eval, summary.decontaminated, summary.preference_rows, summary.train_records) == (
        len(expected.train), len(expected.eval), len(expected.decontaminated), expected.preference_rows,
        expected.train_records)
    assert summary.first_train == expected.train[0]
    assert summary.decontaminated_sample == expected.decontaminated[:5]
    _frames_equal(sft_frame_from_files(tmp_path, workers=2, batch_rows=BATCH),
                  sft_frame(expected.train, expected.eval))


def _outcomes(result) -> list[tuple]:
    # Sorted: GX orders one run's results its own way; the order carries no meaning.
    return sorted([(o.expectation, o.kwargs.get("column"), o.success, o.unexpected_count, o.unexpected_record_ids[:20],
             [str(x) for x in o.unexpected_examples[:3]]) for o in result.outcomes], key=lambda t: t[:2])


def test_gx_suite_validated_in_slices_gives_the_whole_frames_verdict(deduped, tmp_path):
    from ft_assets.data.suites import deduped_records_suite, validate_frame

    frame = prepared_batch(files.read_records(deduped), keys=True)
    # Failures in several slices: PII left, an over-long prompt, a repeated record id and dedup key.
    frame.loc[[3, 150, 400], "pii_left"] = "email"
    frame.loc[[90, 401], "prompt"] = "x" * 1200
    frame.loc[[500, 510], "record_id"] = frame.loc[20, "record_id"]
    frame.loc[[600], "dedup_key"] = frame.loc[5, "dedup_key"]
    whole = validate_frame(frame, "deduped", deduped_records_suite(min_rows=50))
    sliced = validate_frame(frame, "deduped", deduped_records_suite(min_rows=50), docs_dir=str(tmp_path / "docs"),
                            batch_rows=60)
    assert not whole.success and not sliced.success
    assert _outcomes(sliced) == _outcomes(whole)
    assert {o.expectation for o in whole.failures()} == {
        "expect_column_values_to_be_in_set", "expect_column_value_lengths_to_be_between",
        "expect_column_values_to_be_unique", "expect_column_proportion_of_unique_values_to_be_between"}
    assert (tmp_path / "docs" / "index.html").exists()
    # And a frame that passes, passes sliced too, down to a table-level row count it fails.
    clean = prepared_batch(files.read_records(deduped), keys=True)
    assert validate_frame(clean, "deduped", deduped_records_suite(min_rows=50), batch_rows=60).success
    too_few = validate_frame(clean, "deduped", deduped_records_suite(min_rows=10**6), batch_rows=60)
    assert [o.expectation for o in too_few.failures()] == ["expect_table_row_count_to_be_between"]


def _dup_drop(path: Path, rows: int, seed: int) -> Path:
    """Long prompts (60-90 words) with exact copies (re-cased) and near copies (one word changed) of rows
    anywhere before, so duplicates and what they duplicate often sit in different batches; chats and
    preference pairs besides."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choices("abcdefghijklmnop", k=rng.randint(3, 8))) for _ in range(500)]
    made: list[dict] = []
    lines = []
    for _ in range(rows):
        roll = rng.random()
        if made and roll < 0.12:
            obj = dict(rng.choice(made))
            obj["question"] = obj["question"].upper()
        elif made and roll < 0.24:
            obj = dict(rng.choice(made))
            words = obj["question"].split()
            words[rng.randrange(len(words))] = rng.choice(vocab)
            obj["question"] = " ".join(words)
        elif roll < 0.28:
            words = " ".join(rng.choices(vocab, k=30))
            obj = {"messages": [{"role": "user", "content": words}, {"role": "assistant", "content": "Ok."},
                                {"role": "user", "content": f"Then {words}?"}, {"role": "assistant", "content": "No."}]}
        elif roll < 0.32:
            obj = {"prompt": " ".join(rng.choices(vocab, k=40)), "chosen": "A good answer.", "rejected": "A bad one."}
        else:
            obj = {"question": " ".join(rng.choices(vocab, k=rng.randint(60, 90))) + "?",
                   "answer": f"SELECT {rng.choice(vocab)} FROM t;"}
        made += [obj] if "question" in obj else []  # copies too: an exact copy of a near copy, a chain
        lines.append(obj)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.fixture(scope="module")
def dup_clean(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dedup")
    raws = _ingested(root, _dup_drop, "dups", 300, (3, 4))
    out = {}
    # "reversed": the second drop's rows first, not in drop order (no stage writes that; the in-memory form sorts).
    for name, sources in (("ordered", raws), ("reversed", raws[::-1])):
        out[name] = root / name
        out[name].mkdir()
        clean_to_artifact(sources, out[name], workers=1)
    return out


@pytest.mark.parametrize(("order", "near"), [("ordered", True), ("ordered", False), ("reversed", True)])
def test_streamed_dedup_writes_what_the_in_memory_stage_writes(dup_clean, tmp_path, monkeypatch, order, near):
    from ft_assets.data import streamed_dedup

    source, expected_dir, out = dup_clean[order], tmp_path / "expected", tmp_path / "streamed"
    expected_dir.mkdir()
    out.mkdir()
    expected = dedup_stage(files.read_records(source), near_duplicates=near)
    files.write_records(expected_dir, expected.records, duplicates=expected.duplicates)  # what the asset wrote
    fallbacks, in_memory = [], streamed_dedup._in_memory
    monkeypatch.setattr(streamed_dedup, "_in_memory", lambda *a: fallbacks.append(a) or in_memory(*a))
    summary = dedup_to_artifact(source, out, near_duplicates=near, workers=2, batch_rows=BATCH)
    # A stage's artifact is streamed; one out of drop order takes the in-memory form (which sorts).
    assert bool(fallbacks) == (order == "reversed")

    clean = files.read_records(source)
    assert (_in_drop_order(clean) is clean) == (order == "ordered")
    if order == "ordered" and near:  # the data exercises what can go wrong
        assert expected.exact > 20 and expected.near > 20
        position = {r: i // BATCH for i, r in enumerate(clean["record_id"])}
        near_dups = expected.duplicates[expected.duplicates["method"] == "near"]
        assert (near_dups["record_id"].map(position) != near_dups["duplicate_of"].map(position)).sum() > 10
        # Exact copies of rows that then went as near duplicates: they name the row that stayed.
        assert set(exact_dedup(clean).duplicates["duplicate_of"]) & set(near_dups["record_id"])
    for name in (files.RECORDS_FILE, files.DUPLICATES_FILE):
        assert pq.read_table(out / name).equals(pq.read_table(expected_dir / name)), name
    _frames_equal(files.read_records(out), files.read_records(expected_dir))
    _frames_equal(files.read_duplicates(out), files.read_duplicates(expected_dir))
    assert (summary.rows_in, summary.records, summary.exact, summary.near) == (
        len(clean), len(expected.records), expected.exact, expected.near)
    _frames_equal(summary.duplicates, expected.duplicates)
    # What the asset's examples show: the prompts of the kept rows the first duplicates name.
    prompts = dict(zip(expected.records["record_id"], expected.records["prompt"], strict=True))
    sample = dict(zip(summary.kept_sample["record_id"], summary.kept_sample["prompt"], strict=True))
    for method in ("exact", "near"):
        named = expected.duplicates.loc[expected.duplicates["method"] == method, "duplicate_of"].head(5)
        assert {r: sample[r] for r in named} == {r: prompts[r] for r in named}


LEAVE_EARLY = """
import signal
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # what Dagster leaves in a process started with SIGINT ignored
from ft_assets.data.streaming import ordered_map
items = ordered_map(abs, range(1000), workers=2)
next(items)
items.close()  # leaving early: the pool terminates its workers (SIGTERM) and waits for them
print("left")
"""


def test_leaving_an_ordered_map_early_ends_its_workers_even_where_sigterm_is_ignored():
    """A stage that stops reading (dedup's out-of-order fallback) must not wait forever on its pool's workers."""
    import os
    import signal
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    child = subprocess.Popen([sys.executable, "-c", LEAVE_EARLY], cwd=repo, stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        out, _ = child.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # the workers too: they ignore SIGTERM
        child.communicate()
        pytest.fail("leaving ordered_map early hung: its workers ignored SIGTERM")
    assert child.returncode == 0 and "left" in out
