"""Exact deduplication on normalized text; every removed row names the row it duplicated."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd

from ft_assets.data.records import history_turns

_NON_WORD = re.compile(r"[^\w]+")
# On ASCII text \w is [A-Za-z0-9_]: a translate table does the pattern's work at C speed.
_ASCII_NON_WORD = str.maketrans({c: " " for c in map(chr, range(128)) if not (c.isalnum() or c == "_")})


def _prose(text: str) -> str:
    folded = text.casefold()
    if folded.isascii():
        return " ".join(folded.translate(_ASCII_NON_WORD).split())
    return " ".join(_NON_WORD.sub(" ", folded).split())


def _history_norm(history: str) -> str:
    """The turns before the final prompt, normalized like the prompt; "" for a single-turn example."""
    try:
        turns = history_turns(history)
    except json.JSONDecodeError:
        return history  # malformed history never reaches here (clean quarantines it); keep it distinct anyway
    return "\x1d".join(f"{t.get('role', '')}:{_prose(str(t.get('content', '')))}" for t in turns
                        if isinstance(t, dict))


def dedup_key(prompt: str, completion: str, history: str = "") -> str:
    """Case, whitespace and prompt punctuation do not make two examples different.

    The completion keeps its punctuation (``x > 5`` and ``x < 5`` are different
    SQL); only case, whitespace and a trailing semicolon are normalized there.
    ``history`` (the record's JSON list of earlier turns) is part of the key: two chats that end
    alike after different conversations are different examples.
    """
    completion_norm = " ".join(completion.casefold().split()).rstrip(";").rstrip()
    norm = f"{_prose(prompt)}\x1f{completion_norm}"
    if past := _history_norm(history):
        norm = f"{past}\x1e{norm}"
    return hashlib.sha256(norm.encode()).hexdigest()


def example_keys(records: pd.DataFrame) -> list[str]:
    """``dedup_key`` of every row: whole conversation, final prompt and answer (both replies of a pair)."""
    histories = records["history"] if "history" in records.columns else [""] * len(records)
    return [dedup_key(p, a, h) for p, a, h in zip(records["prompt"], _answers(records), histories, strict=True)]


def example_texts(records: pd.DataFrame) -> list[str]:
    """The text near-duplicate detection compares: earlier turns, final prompt and answer."""
    histories = records["history"] if "history" in records.columns else ["[]"] * len(records)
    texts = []
    for p, a, h in zip(records["prompt"], _answers(records), histories, strict=True):
        try:
            past = [str(t.get("content", "")) for t in json.loads(h or "[]") if isinstance(t, dict)]
        except json.JSONDecodeError:
            past = [h]
        texts.append("\n".join([*past, p, a]))
    return texts


def answer_texts(records: pd.DataFrame) -> list[str]:
    """What a row answers with: its completion, or for a preference pair both of its replies."""
    return list(_answers(records))


def _answers(records: pd.DataFrame) -> Iterator[str]:
    """``answer_texts`` one row at a time: a million completions as a list are a GB beside the frame."""
    if "kind" not in records.columns:
        return iter(records["completion"])
    return (c if k != "preference" else f"{ch}\x1e{rj}" for k, c, ch, rj in
            zip(records["kind"], records["completion"], records["chosen"], records["rejected"], strict=True))


def _in_drop_order(records: pd.DataFrame) -> pd.DataFrame:
    """``records`` stably sorted by (drop_id, line_no); the frame itself when it already is (as stages write it),
    sparing a copy of every column."""
    drops = records["drop_id"]
    if drops.is_monotonic_increasing:
        same_drop = drops.to_numpy()[1:] == drops.to_numpy()[:-1]
        lines = records["line_no"].to_numpy()
        if not (same_drop & (lines[1:] < lines[:-1])).any():
            return records
    return records.sort_values(["drop_id", "line_no"], kind="stable")


@dataclass
class DedupResult:
    records: pd.DataFrame
    duplicates: pd.DataFrame  # the removed rows plus ``duplicate_of`` (a kept record_id)


def exact_dedup(records: pd.DataFrame) -> DedupResult:
    """Keep the first occurrence (in drop / line order) of each normalized example."""
    ordered = _in_drop_order(records)
    keys = example_keys(ordered)
    first_id: dict[str, str] = {}
    duplicate_of = []
    for key, record_id in zip(keys, ordered["record_id"], strict=True):
        duplicate_of.append(first_id.setdefault(key, record_id))
    is_dup = pd.Series([d != r for d, r in zip(duplicate_of, ordered["record_id"], strict=True)], index=ordered.index,
                       dtype=bool)  # bool even when empty: an empty object mask would select columns
    dups = ordered[is_dup].assign(duplicate_of=[d for d, flag in zip(duplicate_of, is_dup, strict=True) if flag])
    return DedupResult(ordered[~is_dup].reset_index(drop=True), dups.reset_index(drop=True))


def near_dedup(records: pd.DataFrame, threshold: float = 0.8, num_perm: int = 128, shingle_size: int = 5,
               seed: int = 0) -> DedupResult:
    """MinHash-LSH near duplicates of prompt + completion; ``similarity`` is the verified Jaccard."""
    from ft_assets.data.near_dup import find_near_duplicates

    ordered = _in_drop_order(records).reset_index(drop=True)
    texts = example_texts(ordered)
    pairs = find_near_duplicates(texts, threshold=threshold, num_perm=num_perm, shingle_size=shingle_size,
                                 seed=seed)
    del texts  # a million texts are GBs: gone before the kept rows are copied out
    ids = ordered["record_id"].tolist()
    dup_rows = {dup: (ids[kept], sim) for kept, dup, sim in pairs}
    is_dup = ordered.index.isin(list(dup_rows))
    dups = ordered[is_dup].assign(duplicate_of=[dup_rows[i][0] for i in ordered.index[is_dup]],
                                  similarity=[round(dup_rows[i][1], 4) for i in ordered.index[is_dup]])
    return DedupResult(ordered[~is_dup].reset_index(drop=True), dups.reset_index(drop=True))


def merged_duplicates(exact: pd.DataFrame, near: pd.DataFrame) -> pd.DataFrame:
    """``exact_dedup``'s then ``near_dedup``'s duplicates as one frame, with ``method`` and ``similarity``.

    An exact duplicate of a row that then went as a near duplicate points at the row that stayed.
    """
    stayed = dict(zip(near["record_id"], near["duplicate_of"], strict=True))
    exact = exact.assign(duplicate_of=exact["duplicate_of"].map(lambda r: stayed.get(r, r)), method="exact",
                         similarity=1.0)
    return pd.concat([exact, near.assign(method="near")], ignore_index=True)
