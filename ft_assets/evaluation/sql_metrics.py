"""Exact match and execution accuracy for text-to-SQL predictions."""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from pathlib import Path

_FENCE = re.compile(r"```(?:sql)?\s*(.*?)```", re.S | re.I)
_WS = re.compile(r"\s+")
QUERY_TIMEOUT_S = 2.0


def extract_sql(generated: str) -> str:
    """The first SQL statement in a generation (code fences and chatter removed)."""
    fenced = _FENCE.search(generated)
    text = fenced.group(1) if fenced else generated
    # Prefer an upper-case keyword, so prose like "With pleasure!" or "to select" is not taken for SQL.
    match = re.search(r"\b(SELECT|WITH)\b", text) or re.search(r"\b(SELECT|WITH)\b", text, re.I)
    if match:
        text = text[match.start():]
    return text.split(";")[0].strip() + ";" if text.strip() else ""


def normalize_sql(sql: str) -> str:
    return _WS.sub(" ", sql.strip().rstrip(";").strip()).casefold()


def exact_match(predicted: str, gold: str) -> bool:
    return normalize_sql(predicted) == normalize_sql(gold)


def run_query(db_path: Path, sql: str) -> list[tuple] | None:
    """Rows of ``sql`` on a read-only connection, or None if it fails or runs too long."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    deadline = time.monotonic() + QUERY_TIMEOUT_S
    con.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.Error:
        return None
    finally:
        con.close()


def execution_match(db_path: Path, predicted: str, gold: str) -> bool:
    """Same result set as the gold query (as a multiset; as a list when gold orders rows)."""
    gold_rows = run_query(db_path, gold)
    if gold_rows is None:
        raise ValueError(f"gold SQL does not run: {gold}")
    predicted_rows = run_query(db_path, predicted) if predicted else None
    if predicted_rows is None:
        return False
    if re.search(r"\border\s+by\b", gold, re.I):
        return predicted_rows == gold_rows
    return Counter(predicted_rows) == Counter(gold_rows)
