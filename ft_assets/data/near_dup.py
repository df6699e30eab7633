"""Near-duplicate detection: MinHash signatures, LSH banding, exact Jaccard verification.

Everything per token runs in numpy: each batch of texts is joined into one byte
buffer, word boundaries come from a byte translation table, each word is hashed
from its bytes in a few vectorized passes, and word n-gram ("shingle") hashes
come from polynomial prefix sums. Python-level work is per document, per batch
or per candidate pair, never per token: building shingle strings in Python is
what bounds per-document MinHash libraries.

Candidates from LSH are verified with the exact Jaccard of the two 64-bit
shingle-hash sets, so reported pairs are true near-duplicates and the banding
can favour recall.

Tokenization: lowercase, split on non-word characters (``\\w`` as in ``re``).
ASCII texts take the byte path directly; other texts are first rewritten as
their ``\\w+`` tokens joined by spaces, so both paths yield the same words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np

_WORD_RE = re.compile(r"\w+")

# bytes.translate table: 1 for bytes inside a word, 0 elsewhere. Bytes >= 0x80 only occur in
# texts already reduced to their \w+ tokens, so there they are always inside a word.
_WORD_BYTES = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
_IS_WORD_TABLE = bytes(1 if (b in _WORD_BYTES or b >= 128) else 0 for b in range(256))
# _BYTE_MASK[n] keeps the first n bytes of a little-endian 8-byte load.
_BYTE_MASK = np.array([(1 << (8 * n)) - 1 for n in range(9)], dtype=np.uint64)

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
# Odd base of the n-gram polynomial and its inverse mod 2**64: with both, the hash
# of any window is a difference of prefix sums, whatever the window length.
_POLY = _U64(0xD6E8FEB86659FD93)
_POLY_INV = _U64(pow(int(_POLY), -1, 2**64))
_MAX_U32 = np.iinfo(np.uint32).max
# Shingles per MinHash block: big enough to amortize per-block numpy calls, small enough for cache.
_BLOCK = 8192
# In an LSH bucket, each member is checked against this many predecessors (and the bucket's first).
_BUCKET_WINDOW = 16


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer, in place: spreads every input bit over the output."""
    h ^= h >> _U64(33)
    h *= _U64(0xFF51AFD7ED558CCD)
    h ^= h >> _U64(33)
    h *= _U64(0xC4CEB9FE1A85EC53)
    h ^= h >> _U64(33)
    return h


def _prepare(text: str) -> bytes:
    if text.isascii():  # O(1) in CPython; ASCII lower() and encode() are memcpy-speed
        return text.lower().encode()
    return " ".join(_WORD_RE.findall(text.lower())).encode()


def word_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every lowercased word of every text, and CSR offsets (len(texts) + 1) into them."""
    parts = [_prepare(t) for t in texts]
    lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    # One separator before every text and after the last, then 8 zero bytes so 8-byte loads never overrun.
    raw = b"\n".join([b"", *parts, bytes(8)])
    del parts
    doc_starts = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths) > 1:
        np.cumsum(lengths[:-1] + 1, out=doc_starts[1:])
    doc_starts += 1

    is_word = np.frombuffer(raw.translate(_IS_WORD_TABLE), dtype=bool)
    # The buffer starts and ends outside a word, so word boundaries alternate start, end, start, ...
    edges = np.flatnonzero(is_word[1:] != is_word[:-1]) + 1
    del is_word
    starts, ends = edges[0::2], edges[1::2]
    offsets = np.empty(len(lengths) + 1, dtype=np.int64)
    offsets[:-1] = np.searchsorted(starts, doc_starts)
    offsets[-1] = len(starts)

    # An unaligned uint64 view at every byte offset: one gather loads a word's first 8 bytes.
    loads = np.ndarray(shape=(len(raw) - 7,), dtype="<u8", buffer=raw, strides=(1,))
    length = ends - starts
    h = loads[starts]
    h &= _BYTE_MASK[np.minimum(length, 8)]
    h ^= length.astype(np.uint64) * _GOLDEN
    long_words = np.flatnonzero(length > 8)
    done = 8
    while len(long_words):  # words over 8 bytes: fold in the next 8 bytes, only for those
        rest = np.minimum(length[long_words] - done, 8)
        block = loads[starts[long_words] + done] & _BYTE_MASK[rest]
        h[long_words] = _fmix64(h[long_words]) ^ block
        done += 8
        long_words = long_words[length[long_words] > done]
    return _fmix64(h), offsets


class WordWindows:
    """Hashes of runs of consecutive words ("windows") of each document, for any run length.

    A window's hash is ``fmix64(sum_j hashes[start + j] * POLY**j)``: it depends only on the words,
    never on where they sit, so equal word runs hash equal across documents and across calls. One
    prefix-sum pass serves every window length.
    """

    def __init__(self, hashes: np.ndarray, offsets: np.ndarray) -> None:
        self.offsets = offsets
        self.counts = np.diff(offsets)
        n_tokens = len(hashes)
        max_len = int(self.counts.max()) if len(self.counts) else 0
        powers = np.full(max_len + 1, _POLY, dtype=np.uint64)
        powers[0] = 1
        np.cumprod(powers, out=powers)  # wraps mod 2**64, as intended
        self.inv_powers = np.full(max_len + 1, _POLY_INV, dtype=np.uint64)
        self.inv_powers[0] = 1
        np.cumprod(self.inv_powers, out=self.inv_powers)
        pos = np.arange(n_tokens, dtype=np.int64) - np.repeat(offsets[:-1], self.counts)
        # prefix[i] = sum of hashes[p] * POLY**pos[p] for p < i; a window's polynomial is a
        # difference of two prefixes times POLY**-(its start position).
        self.prefix = np.zeros(n_tokens + 1, dtype=np.uint64)
        np.cumsum(hashes * powers[pos], out=self.prefix[1:])

    def __call__(self, size: int, short_whole: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(window hashes, document index, word position in the document) of every run of ``size`` words,
        ordered by document then position. With ``short_whole``, a document with fewer than ``size`` words
        (but at least one) contributes one window of all its words. Documents without words contribute none.
        """
        counts = self.counts
        window = np.minimum(counts, size) if short_whole else np.full_like(counts, size)
        n_windows = np.where(counts > 0, np.maximum(counts - window + 1, 0), 0)
        doc = np.repeat(np.arange(len(counts)), n_windows)
        win_pos = np.arange(len(doc), dtype=np.int64) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
        start = self.offsets[:-1][doc] + win_pos
        out = self.prefix[start + window[doc]] - self.prefix[start]
        out *= self.inv_powers[win_pos]
        # The polynomial is linear in the word hashes; the finalizer mixes it so every bit is usable.
        return _fmix64(out), doc, win_pos

    def at(self, doc: np.ndarray, pos: np.ndarray, size: int) -> np.ndarray:
        """Hashes of the ``size``-word windows starting at word ``pos`` of document ``doc`` (must fit)."""
        start = self.offsets[:-1][doc] + pos
        out = self.prefix[start + size] - self.prefix[start]
        out *= self.inv_powers[pos]
        return _fmix64(out)


def window_hashes(
    hashes: np.ndarray, offsets: np.ndarray, size: int, short_whole: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hashes of every run of ``size`` consecutive words of each document: see ``WordWindows``."""
    return WordWindows(hashes, offsets)(size, short_whole)


def batches(texts: list[str], max_chars: int = 1 << 21) -> list[tuple[int, int]]:
    """Consecutive (lo, hi) ranges of about ``max_chars`` characters each (at least one text each).

    Working batch by batch keeps every temporary array a few MB: memory the allocator reuses, where
    one corpus-sized pass would page-fault its way through GBs of fresh memory (slow on VMs).
    """
    ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)))
    ranges, lo = [], 0
    while lo < len(texts):
        base = ends[lo - 1] if lo else 0
        hi = max(int(np.searchsorted(ends, base + max_chars, side="right")), lo + 1)
        ranges.append((lo, hi))
        lo = hi
    return ranges


def _shingles(texts: list[str], shingle_size: int) -> tuple[np.ndarray, np.ndarray]:
    """All shingle hashes (with repeats) and CSR offsets per text."""
    hashes, offsets = word_hashes(texts)
    shingles, doc, _ = window_hashes(hashes, offsets, shingle_size)
    return shingles, np.searchsorted(doc, np.arange(len(texts) + 1))


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**32, size=num_perm, dtype=np.uint64).astype(np.uint32) | np.uint32(1)
    b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint64).astype(np.uint32)
    return a[:, None], b[:, None]


def _minhash(shingles: np.ndarray, sh_offsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signatures (num_perm, n_docs) of one batch; documents without shingles keep all-max columns.

    Permutation i maps a shingle's top 32 hash bits x to ``(a_i * x + b_i) mod 2**32`` (a_i odd, so
    a bijection). The modulus is 2**32 rather than a prime because a uint32 multiply-add is one SIMD
    pass each; x is already a well-mixed hash, and candidates are verified exactly, so the family only
    has to give LSH its recall (measured in tests and the benchmark).
    """
    num_perm, n_docs = len(a), len(sh_offsets) - 1
    x = (shingles >> _U64(32)).astype(np.uint32)
    sig = np.full((num_perm, n_docs), _MAX_U32, dtype=np.uint32)
    buf = np.empty((num_perm, _BLOCK), dtype=np.uint32)
    for lo in range(0, len(x), _BLOCK):
        hi = min(lo + _BLOCK, len(x))
        m = buf[:, : hi - lo]
        np.multiply(a, x[lo:hi], out=m)
        m += b
        # Segments inside the block: the block start, then each document start that falls in it.
        d0 = int(np.searchsorted(sh_offsets, lo, side="right")) - 1  # the document holding shingle lo
        d1 = int(np.searchsorted(sh_offsets, hi, side="left"))  # documents starting before hi
        seg_starts = np.maximum(sh_offsets[d0:d1], lo) - lo
        docs = np.arange(d0, d1)
        # An empty document shares its start with the next one: keep the last of equal starts.
        keep = np.append(seg_starts[1:] > seg_starts[:-1], True)
        seg_starts, docs = seg_starts[keep], docs[keep]
        mins = np.minimum.reduceat(m, seg_starts, axis=1)
        sig[:, docs] = np.minimum(sig[:, docs], mins)
    return sig


def signatures(texts: list[str], num_perm: int = 128, shingle_size: int = 5, seed: int = 0) -> np.ndarray:
    """MinHash signatures of ``texts``, shape (num_perm, len(texts)), uint32. A text without words gets
    an all-max column."""
    a, b = _permutations(num_perm, seed)
    sig = np.empty((num_perm, len(texts)), dtype=np.uint32)
    for lo, hi in batches(texts):
        shingles, sh_offsets = _shingles(texts[lo:hi], shingle_size)
        sig[:, lo:hi] = _minhash(shingles, sh_offsets, a, b)
    return sig


def choose_bands(threshold: float, num_perm: int, target_recall: float = 0.999) -> tuple[int, int]:
    """(bands, rows): the most rows per band whose S-curve still catches a pair at ``threshold``
    with probability >= ``target_recall``. Fewer rows mean more false candidates, which exact
    verification then throws away, so we err toward recall."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= target_recall:
            best = (bands, rows)
    return best


def _unique(a: np.ndarray) -> np.ndarray:
    """Sorted unique values: sort-based, several times faster here than np.unique's hash-based path."""
    a = np.sort(a)
    return a[np.concatenate(([True], a[1:] != a[:-1]))] if len(a) else a


def _candidate_pairs(
    sig: np.ndarray, active: np.ndarray, bands: int, rows: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Unique (i, j), i < j, sharing a band bucket, as (first-pass pairs, second-pass pairs).

    Within a bucket (in index order) each member pairs with the bucket's first member and its
    predecessor (first pass), then with its other predecessors up to ``_BUCKET_WINDOW`` back
    (second pass): every pair in buckets up to that size, O(n) pairs in a big one rather than
    O(n^2). The predecessor alone is not enough: in a bucket [a, b, c, d] where only (b, d) is a
    near-duplicate, it would be lost. The second pass is only checked across clusters the first
    pass left apart, which keeps big buckets of copies cheap.
    """
    idx = np.flatnonzero(active)
    n = sig.shape[1]
    mult = np.random.default_rng(seed + 1).integers(1, 2**63, size=rows, dtype=np.uint64) * _U64(2) + _U64(1)
    first, second = [], []
    for band in range(bands):
        part = sig[band * rows : (band + 1) * rows][:, idx].astype(np.uint64)
        key = (part * mult[:, None]).sum(axis=0)  # wraps mod 2**64; a collision only adds a candidate
        order = np.argsort(key, kind="stable")  # stable: members stay in index order
        k, docs = key[order], idx[order]
        same = np.flatnonzero(k[1:] == k[:-1]) + 1  # positions whose predecessor is in their bucket
        if len(same) == 0:
            continue
        group_start = np.zeros(len(k), dtype=np.int64)
        group_start[same] = -1
        group_start = np.where(group_start == 0, np.arange(len(k)), 0)
        np.maximum.accumulate(group_start, out=group_start)
        first.append(docs[group_start[same]] * n + docs[same])
        first.append(docs[same - 1] * n + docs[same])
        for offset in range(2, min(_BUCKET_WINDOW, len(k) - 1) + 1):
            hit = np.flatnonzero(k[offset:] == k[:-offset])
            if len(hit) == 0:
                break  # no bucket is bigger than offset
            second.append(docs[hit] * n + docs[hit + offset])
    first_codes = _unique(np.concatenate(first)) if first else np.empty(0, dtype=np.int64)
    second_codes = _unique(np.concatenate(second)) if second else np.empty(0, dtype=np.int64)
    second_codes = np.setdiff1d(second_codes, first_codes, assume_unique=True)
    return tuple(np.stack([c // max(n, 1), c % max(n, 1)], axis=1) for c in (first_codes, second_codes))


class ShingleSets:
    """Sorted unique shingle hashes of the documents that reach verification, computed for those only.

    ``add`` takes documents a group at a time, so a caller streaming its texts from disk holds the sets of
    the candidates, never all texts.
    """

    def __init__(self, shingle_size: int) -> None:
        self.shingle_size = shingle_size
        self.sets: dict[int, np.ndarray] = {}

    def add(self, docs: list[int], texts: list[str]) -> None:
        """The sets of documents ``docs`` (indices), whose texts are ``texts``."""
        for lo, hi in batches(texts):
            shingles, offsets = _shingles(texts[lo:hi], self.shingle_size)
            # One sort for the whole batch (by document, then hash) instead of np.unique per document.
            doc = np.repeat(np.arange(hi - lo), np.diff(offsets))
            order = np.lexsort((shingles, doc))
            shingles = shingles[order]
            keep = np.ones(len(shingles), dtype=bool)
            keep[1:] = (shingles[1:] != shingles[:-1]) | (doc[1:] != doc[:-1])
            shingles, doc = shingles[keep], doc[keep]
            bounds = np.searchsorted(doc, np.arange(hi - lo + 1)).tolist()
            for k, d in enumerate(docs[lo:hi]):
                self.sets[d] = shingles[bounds[k] : bounds[k + 1]]

    def jaccard(self, i: int, j: int) -> float:
        a, b = self.sets[i], self.sets[j]
        if len(a) == 0 or len(b) == 0:
            return 0.0
        inter = len(np.intersect1d(a, b, assume_unique=True))
        return inter / (len(a) + len(b) - inter)


def check_parameters(threshold: float, num_perm: int, shingle_size: int) -> None:
    """Raise ``ValueError`` for settings near-duplicate detection cannot run with."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if shingle_size < 1 or num_perm < 1:
        raise ValueError("shingle_size and num_perm must be >= 1")


def find_near_duplicates(
    texts: list[str], threshold: float = 0.8, num_perm: int = 128, shingle_size: int = 5, seed: int = 0
) -> list[tuple[int, int, float]]:
    """(kept_index, duplicate_index, jaccard) for every near-duplicate, sorted by duplicate_index.

    Pairs whose exact shingle Jaccard is >= ``threshold`` are joined into clusters (union-find);
    every member but the earliest appears once, pointing at the earliest. The reported Jaccard is
    between those two texts, so in a chain a~b~c it can be below the threshold for (a, c).
    Texts without any word never pair.
    """
    check_parameters(threshold, num_perm, shingle_size)
    if len(texts) < 2:
        return []

    def load_sets(docs: np.ndarray) -> ShingleSets:
        sets = ShingleSets(shingle_size)
        sets.add(docs.tolist(), [texts[d] for d in docs.tolist()])
        return sets

    return cluster_near_duplicates(signatures(texts, num_perm, shingle_size, seed), load_sets, threshold, seed)


def cluster_near_duplicates(
    sig: np.ndarray, load_sets: Callable[[np.ndarray], ShingleSets], threshold: float, seed: int = 0,
    active: np.ndarray | None = None,
) -> list[tuple[int, int, float]]:
    """``find_near_duplicates`` from the signatures (num_perm, n_docs): LSH candidates, then exact verification.

    ``load_sets(docs)`` gives the shingle sets of the (sorted) candidate documents, the only texts verification
    needs. ``active`` (bool per document) leaves documents out, as if they were not there: indices keep their
    order, so the result equals ``find_near_duplicates`` of the active texts alone, in their indices.
    """
    num_perm, n = sig.shape
    # An all-max column is a text without words (a real signature has that with probability ~2**-32*num_perm).
    has_words = (sig != _MAX_U32).any(axis=0)
    if active is not None:
        has_words &= active
    bands, rows = choose_bands(threshold, num_perm)
    first, second = _candidate_pairs(sig, has_words, bands, rows, seed)
    # Cheap prefilter on the signature estimate, 5 standard deviations below the threshold: skips
    # exact work on bucket collisions that are nowhere near, at a negligible recall cost.
    margin = 5.0 * math.sqrt(threshold * (1.0 - threshold) / num_perm) + 1.0 / num_perm

    def plausible(pairs: np.ndarray) -> np.ndarray:
        return pairs[(sig[:, pairs[:, 0]] == sig[:, pairs[:, 1]]).mean(axis=0) >= threshold - margin]

    first = plausible(first)
    if len(first) + len(second) == 0:
        return []
    docs = _unique(np.concatenate([first.ravel(), second.ravel()]))
    sets = load_sets(docs)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    verified: dict[tuple[int, int], float] = {}

    def verify(pairs: np.ndarray) -> None:
        for i, j in pairs.tolist():
            ri, rj = find(i), find(j)
            if ri == rj:
                continue  # already in one cluster: no need to pay for the exact check
            sim = sets.jaccard(i, j)
            if sim >= threshold:
                verified[(i, j)] = sim
                parent[max(ri, rj)] = min(ri, rj)  # the root is always the cluster's smallest index

    verify(first)
    if len(second):
        roots = np.array([find(x) for x in range(n)])
        verify(plausible(second[roots[second[:, 0]] != roots[second[:, 1]]]))
    result = []
    for j in docs.tolist():  # only candidates can have joined a cluster
        root = find(j)
        if root != j:
            sim = verified.get((root, j))
            result.append((root, j, sets.jaccard(root, j) if sim is None else sim))
    return result


def jaccard(a: str, b: str, shingle_size: int = 5) -> float:
    """Exact Jaccard similarity of the two texts' word-shingle sets (0.0 if either has no words)."""
    sets = ShingleSets(shingle_size)
    sets.add([0, 1], [a, b])
    return sets.jaccard(0, 1)
