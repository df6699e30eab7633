"""Eval decontamination: train texts that share a long word n-gram with any reference (eval) text.

Words are lowercased ``\\w+`` tokens (the tokenizer of ``near_dup``), so case and punctuation never
hide a copy. A text shorter than ``ngram`` words counts as one n-gram, its whole text, and it is
shared with any text that contains it as a contiguous run of words: a short eval question pasted
into a longer training example is caught, and so is a short training text lifted from a longer
eval text. N-grams are 64-bit hashes in sorted tables; everything per token is numpy.
"""

from __future__ import annotations

import numpy as np

from ft_assets.data.near_dup import _WORD_RE, WordWindows, batches, word_hashes


class _Table:
    """Sorted unique window hashes, each with the smallest reference index that contains it."""

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray]]) -> None:
        h = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, dtype=np.uint64)
        d = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, dtype=np.int64)
        order = np.lexsort((d, h))
        self.hashes, first = np.unique(h[order], return_index=True)
        self.docs = d[order][first]
        # A bitmap on the top hash bits (~3% full) answers most misses with one gather, where a binary
        # search costs ~100 ns per query: train texts make tens of millions of queries.
        bits = int(np.clip(np.ceil(np.log2(max(len(self.hashes), 1) * 32)), 10, 27))
        self.shift = np.uint64(64 - bits)
        self.bitmap = np.zeros(1 << bits, dtype=bool)
        self.bitmap[self.hashes >> self.shift] = True

    def lookup(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(indices into ``queries`` that are in the table, their reference indices)."""
        if len(self.hashes) == 0 or len(queries) == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        maybe = np.flatnonzero(self.bitmap[queries >> self.shift])
        at = np.minimum(np.searchsorted(self.hashes, queries[maybe]), len(self.hashes) - 1)
        hit = self.hashes[at] == queries[maybe]
        return maybe[hit], self.docs[at[hit]]


def _ref_table(ref_windows: list[tuple[int, WordWindows]], size: int, short_whole: bool) -> _Table:
    parts = []
    for lo, windows in ref_windows:
        h, d, _ = windows(size, short_whole)
        parts.append((h, d + lo))
    return _Table(parts)


def _hit_rows(docs: np.ndarray, pos: np.ndarray, refs: np.ndarray, length: int) -> np.ndarray:
    """(train index, word position, reference index, n-gram length) rows."""
    return np.stack([docs, pos, refs, np.full(len(docs), length)], axis=1)


def contaminated(train_texts: list[str], reference_texts: list[str], ngram: int = 13) -> list[tuple[int, int, str]]:
    """(train_index, reference_index, matched n-gram) for each train text sharing an n-gram with a reference.

    One entry per contaminated train text, in train order: its earliest matching word position,
    and of the references holding an n-gram there the first. The matched n-gram is given as its
    lowercased words joined by single spaces.
    """
    return Decontaminator(reference_texts, ngram).find(train_texts)


class Decontaminator:
    """The references' n-gram tables, built once; ``find`` checks any number of train batches against them.

    A train text's result depends on it and the references alone, so checking train texts batch by batch
    gives, batch by batch, what one ``contaminated`` call over all of them gives.
    """

    def __init__(self, reference_texts: list[str], ngram: int = 13) -> None:
        if ngram < 1:
            raise ValueError(f"ngram must be >= 1, got {ngram}")
        self.ngram = ngram
        ref_windows = [(lo, WordWindows(*word_hashes(reference_texts[lo:hi])))
                       for lo, hi in batches(reference_texts)]
        self._ref_windows = ref_windows
        # Each reference's n-grams as defined above: its ngram-word runs, or its whole text when shorter.
        self.lengths = sorted({min(int(n), ngram) for _, w in ref_windows for n in np.unique(w.counts) if n > 0})
        if not self.lengths:
            return
        self._spec = _ref_table(ref_windows, ngram, short_whole=True)
        # Anchors: every run of the shortest n-gram length in the references. A train position can start a
        # match only where its anchor-length run is one of these, so one pass over the train words finds
        # the few positions worth checking at each n-gram length, instead of one pass per length.
        self._anchor_len = self.lengths[0]
        self._anchors = _ref_table(ref_windows, self._anchor_len, short_whole=False)
        # Every run of L words of the references, built the first time a train text of L < ngram words
        # needs it: that is how a short train text is found inside a longer reference.
        self._runs: dict[int, _Table] = {}

    def _runs_of(self, length: int) -> _Table:
        if length not in self._runs:
            self._runs[length] = _ref_table(self._ref_windows, length, short_whole=False)
        return self._runs[length]

    def find(self, train_texts: list[str]) -> list[tuple[int, int, str]]:
        """(train_index, reference_index, matched n-gram) per contaminated train text: see ``contaminated``."""
        if not train_texts or not self.lengths:
            return []
        ngram, lengths = self.ngram, self.lengths
        found: dict[int, tuple[int, int, int]] = {}  # train index -> (position, reference index, length)
        for lo, hi in batches(train_texts):
            windows = WordWindows(*word_hashes(train_texts[lo:hi]))
            counts = windows.counts
            hits = []
            h, d, pos = windows(self._anchor_len, short_whole=False)
            at, _ = self._anchors.lookup(h)
            d, pos = d[at], pos[at]
            for length in lengths:  # a reference n-gram (or a whole short reference) starting at an anchor
                fits = np.flatnonzero(pos + length <= counts[d])
                at, ref = self._spec.lookup(windows.at(d[fits], pos[fits], length))
                hits.append(_hit_rows(d[fits[at]] + lo, pos[fits[at]], ref, length))
            short = np.flatnonzero((counts > 0) & (counts < ngram))
            for length in np.unique(counts[short]).tolist():  # a short train text inside a longer reference
                docs = short[counts[short] == length]
                zeros = np.zeros(len(docs), dtype=np.int64)
                at, ref = self._runs_of(length).lookup(windows.at(docs, zeros, length))
                hits.append(_hit_rows(docs[at] + lo, zeros[at], ref, length))
            hits = [rows for rows in hits if len(rows)]
            if not hits:
                continue
            all_hits = np.concatenate(hits)
            # Earliest position per train text, then the smallest reference index.
            all_hits = all_hits[np.lexsort((all_hits[:, 2], all_hits[:, 1], all_hits[:, 0]))]
            first = np.flatnonzero(np.diff(all_hits[:, 0], prepend=-1) != 0)
            for doc, pos, ref, length in all_hits[first].tolist():
                found[doc] = (pos, ref, length)

        result = []
        for doc in sorted(found):
            pos, ref, length = found[doc]
            # The regex gives the same words as the byte tokenizer (see near_dup), so positions line up.
            words = _WORD_RE.findall(train_texts[doc].lower())
            result.append((doc, ref, " ".join(words[pos : pos + length])))
        return result
