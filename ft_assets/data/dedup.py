"""Exact deduplication on normalized text; every removed row names the row it duplicated."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import pandas as pd

_NON_WORD = re.compile(r"[^\w]+")


def dedup_key(prompt: str, completion: str) -> str:
    """Case, whitespace and prompt punctuation do not make two examples different.

    The completion keeps its punctuation (``x > 5`` and ``x < 5`` are different
    SQL); only case, whitespace and a trailing semicolon are normalized there.
    """
    prompt_norm = " ".join(_NON_WORD.sub(" ", prompt.casefold()).split())
    completion_norm = " ".join(completion.casefold().split()).rstrip(";").rstrip()
    norm = f"{prompt_norm}\x1f{completion_norm}"
    return hashlib.sha256(norm.encode()).hexdigest()


@dataclass
class DedupResult:
    records: pd.DataFrame
    duplicates: pd.DataFrame  # the removed rows plus ``duplicate_of`` (a kept record_id)


def exact_dedup(records: pd.DataFrame) -> DedupResult:
    """Keep the first occurrence (in drop / line order) of each normalized example."""
    ordered = records.sort_values(["drop_id", "line_no"], kind="stable")
    keys = [dedup_key(p, c) for p, c in zip(ordered["prompt"], ordered["completion"], strict=True)]
    first_id: dict[str, str] = {}
    duplicate_of = []
    for key, record_id in zip(keys, ordered["record_id"], strict=True):
        duplicate_of.append(first_id.setdefault(key, record_id))
    is_dup = pd.Series([d != r for d, r in zip(duplicate_of, ordered["record_id"], strict=True)], index=ordered.index,
                       dtype=bool)  # bool even when empty: an empty object mask would select columns
    dups = ordered[is_dup].assign(duplicate_of=[d for d, flag in zip(duplicate_of, is_dup, strict=True) if flag])
    return DedupResult(ordered[~is_dup].reset_index(drop=True), dups.reset_index(drop=True))
