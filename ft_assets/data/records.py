"""The canonical record and quarantine schemas every data stage shares."""

from __future__ import annotations

import pandas as pd

# One row per example, whatever shape it arrived in.
RECORD_COLUMNS = ["record_id", "drop_id", "source_file", "line_no", "prompt", "completion", "db_id"]
# One row per rejected input, with the stage that rejected it and why.
QUARANTINE_COLUMNS = ["drop_id", "source_file", "line_no", "stage", "reason", "raw"]

RAW_PREVIEW_CHARS = 500


def records_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=RECORD_COLUMNS)
    return frame.astype({"line_no": "int64"})


def quarantine_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=QUARANTINE_COLUMNS)
    return frame.astype({"line_no": "int64"})


def reason_counts(quarantine: pd.DataFrame) -> dict[str, int]:
    """Counts per reason kind (the text before the first colon)."""
    if quarantine.empty:
        return {}
    kinds = quarantine["reason"].str.split(":", n=1).str[0]
    return {str(k): int(v) for k, v in kinds.value_counts().items()}
