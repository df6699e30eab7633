"""The generated demo task: deterministic drops with the advertised noise, and gold SQL that runs."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from ft_assets.data.text_to_sql import build_database, generate_clean_pairs, write_demo_drops


def _drop_bytes(out_dir: Path, **kwargs) -> list[bytes]:
    return [p.read_bytes() for p in write_demo_drops(out_dir, **kwargs)]


@pytest.fixture(scope="module")
def demo_lines(tmp_path_factory) -> list[str]:
    paths = write_demo_drops(tmp_path_factory.mktemp("drops"), n_records=500, n_drops=3, seed=0)
    return [line for p in paths for line in p.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def demo_objects(demo_lines) -> list[dict]:
    objects = []
    for line in demo_lines:
        try:
            objects.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return objects


def test_same_arguments_write_identical_bytes(tmp_path):
    assert _drop_bytes(tmp_path / "a", seed=3) == _drop_bytes(tmp_path / "b", seed=3)


def test_different_seed_writes_different_drops(tmp_path):
    assert _drop_bytes(tmp_path / "a", seed=3) != _drop_bytes(tmp_path / "b", seed=4)


def test_drops_are_named_and_split_as_requested(tmp_path):
    paths = write_demo_drops(tmp_path, n_records=100, n_drops=4)
    # The SFT drops, then the preference-pair drop (see test_preference.py).
    assert [p.name for p in paths] == [f"drop-{i:04d}.jsonl" for i in range(1, 5)] + ["preference-0001.jsonl"]
    assert all(p.read_text().strip() for p in paths)
    assert sum(len(p.read_text().splitlines()) for p in paths) >= 100


def test_some_lines_are_malformed_json(demo_lines, demo_objects):
    assert len(demo_lines) - len(demo_objects) >= 3


def test_exact_duplicate_lines_exist(demo_lines):
    assert len(set(demo_lines)) < len(demo_lines)


def test_html_fragments_present(demo_objects):
    assert any(re.search(r"<[a-z]+/?>", o.get("question", "")) for o in demo_objects)
    assert any("&amp;" in o.get("question", "") for o in demo_objects)


def test_emails_and_phone_numbers_present(demo_objects):
    questions = [o.get("question", "") for o in demo_objects]
    assert any(re.search(r"[\w.-]+@[\w.-]+\.\w+", q) for q in questions)
    assert any(re.search(r"\+\d+ [\d -]{8,}|\(\d{3}\) \d{3}-\d{4}", q) for q in questions)


def test_empty_sql_and_blank_question_present(demo_objects):
    assert any(o.get("sql") == "" for o in demo_objects)
    assert any(o.get("question") is not None and not o["question"].strip() for o in demo_objects)


def test_overlong_question_present(demo_objects):
    assert any(len(o.get("question", "")) > 2000 for o in demo_objects)


def test_clean_pairs_are_distinct():
    pairs = generate_clean_pairs(300, seed=5)
    assert len(pairs) == 300
    assert len(set(pairs)) == 300


def test_clean_pairs_are_seeded():
    assert generate_clean_pairs(50, seed=1) == generate_clean_pairs(50, seed=1)
    assert generate_clean_pairs(50, seed=1) != generate_clean_pairs(50, seed=2)


def test_clean_pairs_stop_at_the_pool_size_without_repeating():
    pairs = generate_clean_pairs(100_000)
    assert 0 < len(pairs) < 100_000
    assert len(set(pairs)) == len(pairs)


def test_every_gold_sql_runs_and_nearly_all_return_rows(tmp_path):
    db = build_database(tmp_path / "company.db")
    con = sqlite3.connect(db)
    try:
        results = [con.execute(sql).fetchall() for _, sql in generate_clean_pairs(100_000)]  # raises on bad SQL
    finally:
        con.close()
    # An empty gold result is matched by any query that returns nothing, so it must stay rare.
    assert sum(1 for rows in results if rows) >= 0.95 * len(results)


def test_build_database_is_deterministic_and_overwrites(tmp_path):
    def dump(path: Path) -> list[tuple]:
        con = sqlite3.connect(path)
        try:
            return con.execute("SELECT * FROM employees ORDER BY id").fetchall()
        finally:
            con.close()

    a = dump(build_database(tmp_path / "a.db", seed=7))
    b = build_database(tmp_path / "b.db", seed=7)
    assert dump(build_database(b, seed=7)) == a  # rebuilding over an existing file does not fail or append
    assert len(a) == 80
