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


def answer_texts(records: pd.DataFrame) -> list[str]:
    """What a row answers with: its completion, or for a preference pair both of its replies."""
    if "kind" not in records.columns:
        return records["completion"].tolist()
    return [c if k != "preference" else f"{ch}\x1e{rj}" for k, c, ch, rj in
            zip(records["kind"], records["completion"], records["chosen"], records["rejected"], strict=True)]


@dataclass
class DedupResult:
    records: pd.DataFrame
    duplicates: pd.DataFrame  # the removed rows plus ``duplicate_of`` (a kept record_id)


def exact_dedup(records: pd.DataFrame) -> DedupResult:
    """Keep the first occurrence (in drop / line order) of each normalized example."""
    ordered = records.sort_values(["drop_id", "line_no"], kind="stable")
    keys = [dedup_key(p, c) for p, c in zip(ordered["prompt"], answer_texts(ordered), strict=True)]
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

    ordered = records.sort_values(["drop_id", "line_no"], kind="stable").reset_index(drop=True)
    texts = [f"{p}\n{c}" for p, c in zip(ordered["prompt"], answer_texts(ordered), strict=True)]
    pairs = find_near_duplicates(texts, threshold=threshold, num_perm=num_perm, shingle_size=shingle_size,
                                 seed=seed)
    ids = ordered["record_id"].tolist()
    dup_rows = {dup: (ids[kept], sim) for kept, dup, sim in pairs}
    is_dup = ordered.index.isin(list(dup_rows))
    dups = ordered[is_dup].assign(duplicate_of=[dup_rows[i][0] for i in ordered.index[is_dup]],
                                  similarity=[round(dup_rows[i][1], 4) for i in ordered.index[is_dup]])
    return DedupResult(ordered[~is_dup].reset_index(drop=True), dups.reset_index(drop=True))
