"""Deterministic train/eval split by content hash, and chat-style prompt formatting."""

from __future__ import annotations

import hashlib

import pandas as pd

from ft_assets.data.dedup import dedup_key
from ft_assets.data.records import history_turns
from ft_assets.data.text_to_sql import DB_ID, SCHEMA_SUMMARY

# The system prompt per database: the model sees the schema it must query.
SYSTEM_PROMPTS = {DB_ID: SCHEMA_SUMMARY}


def is_eval(prompt: str, completion: str, eval_fraction: float, salt: str = "", history: str = "") -> bool:
    """Same example, same side, on every machine and every run; a conversation is split as one."""
    digest = hashlib.sha256((salt + dedup_key(prompt, completion, history)).encode()).hexdigest()
    return int(digest[:8], 16) / 0xFFFFFFFF < eval_fraction


def _system_turn(row: dict, system_prompts: dict[str, str] | None) -> list[dict]:
    prompts = SYSTEM_PROMPTS if system_prompts is None else system_prompts
    system = prompts.get(row.get("db_id", "")) or row.get("system") or ""
    return [{"role": "system", "content": system}] if system else []


def to_chat_example(row: dict, system_prompts: dict[str, str] | None = None) -> dict:
    """A conversational prompt/completion example, the format trl's SFTTrainer takes.

    The system turn is the prompt ``system_prompts`` (default: the demo task's) gives the row's
    database, else the record's own system prompt, else none; earlier turns of a chat come before the
    last user turn.
    """
    history = history_turns(row.get("history"))
    return {
        "record_id": row["record_id"],
        "db_id": row.get("db_id", ""),
        "prompt": _system_turn(row, system_prompts) + history + [{"role": "user", "content": row["prompt"]}],
        "completion": [{"role": "assistant", "content": row["completion"]}],
    }


def turn_examples(row: dict, system_prompts: dict[str, str] | None = None) -> list[dict]:
    """One example per assistant turn that answers a user turn, the last one being ``to_chat_example``.

    trl's completion-only loss trains the ``completion`` alone, so an earlier reply of a chat is
    trained only as the completion of its own example (record id ``<record_id>#<turn index>``).
    """
    history = history_turns(row.get("history"))
    system = _system_turn(row, system_prompts)
    examples = [
        {"record_id": f"{row['record_id']}#{i}", "db_id": row.get("db_id", ""),
         "prompt": system + history[:i], "completion": [turn]}
        for i, turn in enumerate(history)
        if turn["role"] == "assistant" and i and history[i - 1]["role"] == "user" and turn["content"].strip()
    ]
    return [*examples, to_chat_example(row, system_prompts)]


def source_record_id(example: dict) -> str:
    """The record an example came from (``turn_examples`` suffixes ``#<turn>`` to earlier turns)."""
    return example["record_id"].split("#", 1)[0]


def _rows(records: pd.DataFrame, chunk: int = 20_000):
    """Rows as dicts, a chunk at a time: a million row dicts at once would be GBs of Python objects."""
    for lo in range(0, len(records), chunk):
        yield from records.iloc[lo: lo + chunk].to_dict("records")


def split_records(records: pd.DataFrame, eval_fraction: float = 0.12, salt: str = "",
                  system_prompts: dict[str, str] | None = None,
                  every_assistant_turn: bool = True) -> tuple[list[dict], list[dict]]:
    """(train, eval) examples. A conversation goes to one side whole; in train, every assistant turn of it
    is an example (``every_assistant_turn``), in eval only the final reply is scored."""
    train, evaluation = [], []
    for row in _rows(records):
        side, examples = assign_split(row, eval_fraction, salt, system_prompts, every_assistant_turn)
        (evaluation if side == "eval" else train).extend(examples)
    return train, evaluation


def assign_split(row: dict, eval_fraction: float = 0.12, salt: str = "", system_prompts: dict[str, str] | None = None,
                 every_assistant_turn: bool = True) -> tuple[str, list[dict]]:
    """("eval" or "train", the record's examples on that side): one row of ``split_records``."""
    side = "eval" if is_eval(row["prompt"], row["completion"], eval_fraction, salt, row.get("history") or "") \
        else "train"
    return side, side_examples(row, side, system_prompts, every_assistant_turn)


def side_examples(row: dict, side: str, system_prompts: dict[str, str] | None = None,
                  every_assistant_turn: bool = True) -> list[dict]:
    """The record's examples on ``side`` (``is_eval`` decided it): eval scores the final reply only."""
    if side == "eval" or not every_assistant_turn:
        return [to_chat_example(row, system_prompts)]
    return turn_examples(row, system_prompts)
