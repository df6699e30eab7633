"""Preference pairs for DPO: chat-format prompt / chosen / rejected examples, split by content hash.

No Dagster here. Input is the canonical records (``kind == "preference"``) that
ingestion, cleaning and dedup produced; output is the conversational format
trl's ``DPOTrainer`` takes with an explicit prompt:

    {"prompt": [{"role": "system", ...}, ...history..., {"role": "user", ...}],
     "chosen": [{"role": "assistant", "content": ...}],
     "rejected": [{"role": "assistant", "content": ...}]}

so the tokenizer's own chat template renders the system prompt and history,
exactly as for SFT. A row that cannot make a useful pair goes to quarantine with
a reason; none is dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

from ft_assets.data.records import RAW_PREVIEW_CHARS, history_turns
from ft_assets.data.split import SYSTEM_PROMPTS, is_eval

STAGE = "preference_dataset"
QUARANTINE_FIELDS = ["record_id", "drop_id", "source_file", "line_no", "stage", "reason", "raw"]


@dataclass
class PreferenceSplit:
    train: list[dict] = field(default_factory=list)
    eval: list[dict] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)  # QUARANTINE_FIELDS per row

    def reason_counts(self) -> dict[str, int]:
        """Quarantined rows per reason kind (the text before the first colon)."""
        counts: dict[str, int] = {}
        for row in self.quarantine:
            kind = row["reason"].split(":", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
        return counts


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def _history(row: dict) -> tuple[list[dict], str | None]:
    """The turns before the final user message, or a reason they cannot be used."""
    try:
        turns = history_turns(row.get("history"))
    except json.JSONDecodeError as exc:
        return [], f"malformed history: {exc.msg}"
    if not isinstance(turns, list) or not all(
            isinstance(t, dict) and isinstance(t.get("role"), str) and isinstance(t.get("content"), str)
            for t in turns):
        return [], "malformed history: expected a list of {role, content} turns"
    for k, turn in enumerate(turns):
        if turn["role"] not in ("user", "assistant"):
            return [], f"bad role order: history turn {k} has role {turn['role']!r} (expected user or assistant)"
        if not turn["content"].strip():
            return [], f"empty turn: history turn {k} ({turn['role']})"
    if turns and turns[0]["role"] != "user":
        return [], "bad role order: history starts with an assistant turn"
    return [{"role": t["role"], "content": t["content"]} for t in turns], None


def rejection_reason(row: dict) -> str | None:
    """Why a preference record cannot become a DPO pair, or None when it can."""
    if row.get("kind", "preference") != "preference":
        return f"not a preference pair: kind {row.get('kind')!r}"
    for name in ("prompt", "chosen", "rejected"):
        if not str(row.get(name) or "").strip():
            return f"empty field: {name}"
    # Replies that differ only in case or whitespace teach nothing and make the DPO margin pure noise.
    if _norm(row["chosen"]) == _norm(row["rejected"]):
        return "identical pair: chosen equals rejected up to case and whitespace"
    _, reason = _history(row)
    return reason


def to_preference_example(row: dict) -> dict:
    """One conversational DPO example; the system turn is the known database's schema, else the row's own."""
    system = SYSTEM_PROMPTS.get(row.get("db_id", "")) or row.get("system") or ""
    history, reason = _history(row)
    if reason:
        raise ValueError(f"record {row.get('record_id')}: {reason}")
    prompt = ([{"role": "system", "content": system}] if system else []) + history
    return {
        "record_id": row["record_id"],
        "db_id": row.get("db_id", ""),
        "prompt": prompt + [{"role": "user", "content": row["prompt"]}],
        "chosen": [{"role": "assistant", "content": row["chosen"]}],
        "rejected": [{"role": "assistant", "content": row["rejected"]}],
    }


def context_text(row: dict) -> str:
    """The dialogue a pair answers (history + final prompt): what the split hashes on."""
    history = history_turns(row.get("history"))
    return "\n".join([t["content"] for t in history] + [row["prompt"]])


def _preview(row: dict) -> str:
    raw = " ".join(f"{name}={str(row.get(name, ''))!r}" for name in ("prompt", "chosen", "rejected"))
    return raw[:RAW_PREVIEW_CHARS]


def build_preference_dataset(records: pd.DataFrame, eval_fraction: float = 0.15, salt: str = "") -> PreferenceSplit:
    """Preference records -> train / eval DPO examples plus quarantine; other kinds are not looked at.

    The split hashes the dialogue only (not the replies), so every pair that answers the same
    prompt lands on the same side and eval never scores a prompt that training saw.
    """
    out = PreferenceSplit()
    rows = records[records["kind"] == "preference"].to_dict("records") if len(records) else []
    for row in rows:
        reason = rejection_reason(row)
        if reason:
            out.quarantine.append({"record_id": row.get("record_id", ""), "drop_id": row.get("drop_id", ""),
                                   "source_file": row.get("source_file", ""), "line_no": int(row.get("line_no", 0)),
                                   "stage": STAGE, "reason": reason, "raw": _preview(row)})
            continue
        side = out.eval if is_eval(context_text(row), "", eval_fraction, salt) else out.train
        side.append(to_preference_example(row))
    return out
