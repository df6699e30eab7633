"""Read raw JSONL drops into canonical records; every unreadable line is quarantined."""

from __future__ import annotations

import codecs
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ft_assets.data.clean import redact_pii
from ft_assets.data.records import RAW_PREVIEW_CHARS, quarantine_frame, records_frame

# Field names seen in the wild for the two sides of an example, in order of preference.
PROMPT_FIELDS = ("prompt", "question", "instruction")
COMPLETION_FIELDS = ("completion", "sql", "query", "output", "response")
DEFAULT_DB_ID = "company"


@dataclass
class IngestResult:
    records: pd.DataFrame
    quarantine: pd.DataFrame
    lines_read: int
    blank_lines: int
    files: list[str]


def _pick(obj: dict, names: tuple[str, ...]) -> tuple[str | None, object]:
    for name in names:
        if name in obj:
            return name, obj[name]
    return None, None


def parse_line(line: str) -> tuple[dict | None, str | None]:
    """Return (fields, None) for a usable line or (None, reason) for a rejected one."""
    try:
        obj = json.loads(line.rstrip("\r\n"))
    except json.JSONDecodeError as exc:
        return None, f"malformed JSON: {exc.msg} at column {exc.colno}"
    if not isinstance(obj, dict):
        return None, f"not a JSON object: got {type(obj).__name__}"
    fields = {}
    for role, names in (("prompt", PROMPT_FIELDS), ("completion", COMPLETION_FIELDS)):
        name, value = _pick(obj, names)
        if name is None:
            return None, f"missing field: {role} (expected one of {', '.join(names)})"
        if not isinstance(value, str):
            return None, f"mistyped field: {name} is {type(value).__name__}, expected string"
        fields[role] = value
    db_id = obj.get("db", obj.get("db_id", DEFAULT_DB_ID))
    fields["db_id"] = db_id if isinstance(db_id, str) else DEFAULT_DB_ID
    return fields, None


def ingest_drops(paths: list[Path]) -> IngestResult:
    """Ingest JSONL drop files in the given order.

    The drop id is the file's stem; a record id is ``<drop_id>:<line_no>`` so it
    names exactly where the row came from.
    """
    rows: list[dict] = []
    rejected: list[dict] = []
    lines_read = blank = 0
    for path in paths:
        drop_id = path.stem
        with path.open("rb") as handle:
            for line_no, raw_line in enumerate(handle, start=1):
                where = {"drop_id": drop_id, "source_file": str(path), "line_no": line_no}
                if line_no == 1 and raw_line.startswith(codecs.BOM_UTF8):
                    raw_line = raw_line[len(codecs.BOM_UTF8):]  # editors on Windows write one
                if not raw_line.strip():
                    blank += 1
                    continue
                lines_read += 1
                try:
                    line = raw_line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    fields, reason = None, f"invalid UTF-8: byte 0x{raw_line[exc.start]:02x} at offset {exc.start}"
                    line = raw_line.decode("utf-8", errors="replace")
                else:
                    fields, reason = parse_line(line)
                if reason is not None:
                    preview = redact_pii(line.rstrip("\r\n")[:RAW_PREVIEW_CHARS], Counter())
                    rejected.append({**where, "stage": "ingest", "reason": reason, "raw": preview})
                    continue
                rows.append({"record_id": f"{drop_id}:{line_no}", **where, **fields})
    return IngestResult(records_frame(rows), quarantine_frame(rejected), lines_read, blank,
                        [str(p) for p in paths])
