"""Deterministic train/eval split by content hash, and chat-style prompt formatting."""

from __future__ import annotations

import hashlib
import json

import pandas as pd

from ft_assets.data.dedup import dedup_key
from ft_assets.data.text_to_sql import DB_ID, SCHEMA_SUMMARY

# The system prompt per database: the model sees the schema it must query.
SYSTEM_PROMPTS = {DB_ID: SCHEMA_SUMMARY}


def is_eval(prompt: str, completion: str, eval_fraction: float, salt: str = "") -> bool:
    """Same example, same side, on every machine and every run."""
    digest = hashlib.sha256((salt + dedup_key(prompt, completion)).encode()).hexdigest()
    return int(digest[:8], 16) / 0xFFFFFFFF < eval_fraction


def to_chat_example(row: dict) -> dict:
    """A conversational prompt/completion example, the format trl's SFTTrainer takes.

    The system turn is the schema of a known database, else the record's own
    system prompt, else none; earlier turns of a chat come before the last user turn.
    """
    system = SYSTEM_PROMPTS.get(row.get("db_id", "")) or row.get("system") or ""
    history = json.loads(row.get("history") or "[]")
    prompt = ([{"role": "system", "content": system}] if system else []) + history
    return {
        "record_id": row["record_id"],
        "db_id": row.get("db_id", ""),
        "prompt": prompt + [{"role": "user", "content": row["prompt"]}],
        "completion": [{"role": "assistant", "content": row["completion"]}],
    }


def split_records(records: pd.DataFrame, eval_fraction: float = 0.12, salt: str = "") -> tuple[list[dict], list[dict]]:
    train, evaluation = [], []
    for row in records.to_dict("records"):
        side = evaluation if is_eval(row["prompt"], row["completion"], eval_fraction, salt) else train
        side.append(to_chat_example(row))
    return train, evaluation
