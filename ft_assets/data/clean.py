"""Normalize text, strip HTML, redact PII and apply length filters."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pandas as pd

from ft_assets.data.records import RAW_PREVIEW_CHARS, quarantine_frame

_TAG_OR_ENTITY = re.compile(r"</?[A-Za-z][^>]*>|&(?:[A-Za-z]+|#\d+|#x[0-9A-Fa-f]+);")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_WHITESPACE = re.compile(r"\s+")

PII_PATTERNS: dict[str, re.Pattern] = {
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    # Needs separators between digit groups, so salaries and years never match.
    "phone": re.compile(r"(?<!\w)(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)|\d{2,4})[\s.-]\d{3,4}[\s.-]\d{3,4}\b"),
}


@dataclass
class CleanConfig:
    min_prompt_chars: int = 8
    max_prompt_chars: int = 1000
    min_completion_chars: int = 3
    max_completion_chars: int = 2000


@dataclass
class CleanResult:
    records: pd.DataFrame
    quarantine: pd.DataFrame
    pii_counts: dict[str, int] = field(default_factory=dict)
    html_stripped: int = 0


class _TextExtractor(HTMLParser):
    _BREAKS = {"br", "p", "div", "li", "tr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self._BREAKS:
            self.parts.append(" ")


def strip_html(text: str) -> str:
    """Turn an HTML fragment into its visible text (tags dropped, entities decoded)."""
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    # convert_charrefs already decoded entities; unescaping again would turn "&amp;lt;" into "<".
    return "".join(parser.parts)


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = _CONTROL.sub("", text)
    return _WHITESPACE.sub(" ", text).strip()


def redact_pii(text: str, counts: Counter) -> str:
    for kind, pattern in PII_PATTERNS.items():
        text, n = pattern.subn(f"[{kind.upper()}]", text)
        counts[kind] += n
    return text


def clean_records(records: pd.DataFrame, config: CleanConfig | None = None) -> CleanResult:
    """Clean every record; rows failing a filter go to quarantine with the reason."""
    config = config or CleanConfig()
    pii: Counter = Counter()
    kept, rejected = [], []
    html_stripped = 0
    for row in records.to_dict("records"):
        prompt = row["prompt"]
        if _TAG_OR_ENTITY.search(prompt):
            prompt = strip_html(prompt)
            html_stripped += 1
        # Completions are code: no HTML stripping (``a < b`` is SQL, not a tag).
        prompt = redact_pii(normalize_text(prompt), pii)
        completion = redact_pii(normalize_text(row["completion"]), pii)
        reason = _length_reason(prompt, completion, config)
        if reason:
            # The preview is redacted too: quarantine must not become the place PII survives.
            raw = redact_pii(f"prompt={row['prompt']!r} completion={row['completion']!r}", Counter())
            rejected.append({k: row[k] for k in ("drop_id", "source_file", "line_no")}
                            | {"stage": "clean", "reason": reason, "raw": raw[:RAW_PREVIEW_CHARS]})
            continue
        kept.append({**row, "prompt": prompt, "completion": completion})
    frame = pd.DataFrame(kept, columns=records.columns).astype(records.dtypes.to_dict())
    return CleanResult(frame, quarantine_frame(rejected), dict(pii), html_stripped)


def _length_reason(prompt: str, completion: str, config: CleanConfig) -> str | None:
    if not prompt:
        return "empty field: prompt"
    if not completion:
        return "empty field: completion"
    if len(prompt) < config.min_prompt_chars:
        return f"too short: prompt has {len(prompt)} chars < {config.min_prompt_chars}"
    if len(prompt) > config.max_prompt_chars:
        return f"too long: prompt has {len(prompt)} chars > {config.max_prompt_chars}"
    if len(completion) < config.min_completion_chars:
        return f"too short: completion has {len(completion)} chars < {config.min_completion_chars}"
    if len(completion) > config.max_completion_chars:
        return f"too long: completion has {len(completion)} chars > {config.max_completion_chars}"
    return None
