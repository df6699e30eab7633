"""The canonical record and quarantine schemas every data stage shares."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

# One row per example, whatever shape it arrived in.
#   kind        "sft" (prompt -> completion) or "preference" (prompt -> chosen vs rejected)
#   prompt      the final user message
#   completion  the final assistant message of an sft example ("" for preference rows)
#   system      the system prompt, "" if none
#   history     json.dumps of the turns before the final user message: [{"role", "content"}, ...]
#   chosen/rejected  the two final assistant messages of a preference pair ("" for sft rows)
#   db_id       the database a text-to-SQL example targets, "" if the row names none
RECORD_COLUMNS = ["record_id", "drop_id", "source_file", "line_no", "kind", "prompt", "completion", "system",
                  "history", "chosen", "rejected", "db_id"]
# One row per rejected input, with the stage that rejected it and why.
QUARANTINE_COLUMNS = ["drop_id", "source_file", "line_no", "stage", "reason", "raw"]

KINDS = ("sft", "preference")
# What a column holds when a row (or an older artifact) does not carry it.
RECORD_DEFAULTS = {"kind": "sft", "history": "[]", "line_no": 0}

RAW_PREVIEW_CHARS = 500


def _typed(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """line_no int64, every other column str: empty frames and parquet round trips keep one schema."""
    for column in columns:
        if column == "line_no":
            continue
        frame[column] = frame[column].fillna(RECORD_DEFAULTS.get(column, "")).astype("str")
    return frame.astype({"line_no": "int64"})


def records_frame(rows: list[dict]) -> pd.DataFrame:
    """Canonical records; a row may leave out columns (older producers do): they get their defaults."""
    frame = pd.DataFrame(rows, columns=RECORD_COLUMNS)
    return _typed(frame, RECORD_COLUMNS)


def ensure_record_columns(records: pd.DataFrame) -> pd.DataFrame:
    """A copy with every canonical column present (records written before a column existed lack it)."""
    frame = records.copy()
    for column in RECORD_COLUMNS:
        if column not in frame.columns:
            frame[column] = RECORD_DEFAULTS.get(column, "")
    return frame


def quarantine_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=QUARANTINE_COLUMNS)
    return _typed(frame, QUARANTINE_COLUMNS)


def reason_counts(quarantine: pd.DataFrame) -> dict[str, int]:
    """Counts per reason kind (the text before the first colon)."""
    if quarantine.empty:
        return {}
    kinds = quarantine["reason"].str.split(":", n=1).str[0]
    return {str(k): int(v) for k, v in kinds.value_counts().items()}


def reason_examples(quarantine: pd.DataFrame, per_reason: int = 3, raw_chars: int = 200) -> dict[str, list[dict]]:
    """Up to ``per_reason`` example rows per reason kind: where each came from, the full reason, a raw preview."""
    if quarantine.empty:
        return {}
    kinds = quarantine["reason"].str.split(":", n=1).str[0]
    out: dict[str, list[dict]] = {}
    for kind, group in quarantine.groupby(kinds, sort=False):
        out[str(kind)] = [{"where": f"{Path(str(r['source_file'])).name}:{r['line_no']}", "stage": r["stage"],
                           "reason": r["reason"], "raw": str(r["raw"])[:raw_chars]}
                          for r in group.head(per_reason).to_dict("records")]
    return out


EXAMPLE_COLUMNS = ("record_id", "source_file", "line_no", "split", "prompt", "completion", "user", "assistant")


def example_rows(frame: pd.DataFrame, record_ids: list[str], n: int = 3, chars: int = 160) -> list[dict]:
    """The rows behind a failed expectation, shortened: enough to see what is wrong with them."""
    if not record_ids or "record_id" not in frame.columns:
        return []
    rows = frame[frame["record_id"].isin(record_ids[:n])]
    columns = [c for c in EXAMPLE_COLUMNS if c in rows.columns]
    return [{c: (str(v)[:chars] if isinstance(v, str) else v) for c, v in r.items()}
            for r in rows[columns].to_dict("records")]


def history_turns(history: str | None) -> list:
    """A record's ``history`` column parsed (raises json.JSONDecodeError when malformed); most records are single
    turn ("" or "[]"), and skipping the JSON parser for those is a tenth of the split stage at 1M rows."""
    if not history or history == "[]":
        return []
    return json.loads(history)
