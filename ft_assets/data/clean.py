"""Normalize text, strip HTML, redact PII and apply quality filters (length, repetition, symbol ratio)."""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pandas as pd

from ft_assets.data.records import KINDS, RAW_PREVIEW_CHARS, ensure_record_columns, quarantine_frame

# Only real HTML tag names count as markup: "<mask>", "<anonymized>" and "<long answer>" are placeholders
# that real instruction data uses (self-instruct, hh-rlhf), and stripping them would change the task.
_HTML_TAGS = (
    "a abbr article b big blockquote body br button caption center cite code dd del div dl dt em figcaption figure "
    "font footer form h1 h2 h3 h4 h5 h6 head header hr html i iframe img input ins kbd label li link main mark meta "
    "nav noscript ol option p pre q s samp script section select small source span strike strong style sub sup "
    "table tbody td textarea tfoot th thead time title tr tt u ul var video"
).split()
_TAG_OR_ENTITY = re.compile(rf"</?(?:{'|'.join(_HTML_TAGS)})\b[^>]*>|&(?:[A-Za-z]+|#\d+|#x[0-9A-Fa-f]+);",
                            re.IGNORECASE)
# Markup that is the subject of the text, not noise in it: code fences, or text that names the language.
_MARKUP_IS_CONTENT = re.compile(r"```|\b(?:html|xhtml|xml|svg)\b", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_WHITESPACE = re.compile(r"\s+")
_INDENT = re.compile(r"[ \t]*")
_SYMBOL = re.compile(r"[^\w\s]|_")  # \w is str.isalnum() plus "_"
# ASCII text takes str.translate's table loop, several times faster than the patterns' per-character matching
# (tests/test_clean.py checks both give the same on every ASCII character).
_DELETE_CONTROL = {c: None for c in range(128) if _CONTROL.match(chr(c))}
_DELETE_NON_SYMBOLS = {c: None for c in range(128) if not _SYMBOL.match(chr(c))}

# Common secret shapes. Group 1 keeps the "Bearer " of an Authorization header so only the token goes.
_API_KEY = re.compile(
    r"\b((?i:bearer)\s+)[A-Za-z0-9._~+/-]{16,}=*"   # HTTP bearer tokens
    r"|\bsk-[A-Za-z0-9_-]{20,}"                     # OpenAI (sk-, sk-proj-) and Anthropic (sk-ant-) keys
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"               # AWS access key ids
    r"|\bgh[pousr]_[A-Za-z0-9]{36,}"                # GitHub tokens
    r"|\bgithub_pat_[A-Za-z0-9_]{22,}"              # GitHub fine-grained tokens
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"             # Slack tokens
    r"|\bAIza[0-9A-Za-z_-]{35}"                     # Google API keys
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWTs: base64url JSON header "{"
    r"|\bhf_[A-Za-z0-9]{30,}"                       # Hugging Face tokens
    r"|\bglpat-[A-Za-z0-9_-]{20,}"                  # GitLab tokens
    r"|\bnpm_[A-Za-z0-9]{36}"                       # npm tokens
    r"|\bsk_(?:live|test)_[A-Za-z0-9]{20,}"          # Stripe keys
)
# PEM private keys, BEGIN to END (or to the end of a cut preview).
_PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
                          r"(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|.*)", re.DOTALL)
# A password inside a URL (scheme://user:password@host: database URLs, git remotes, proxies). Group 1 keeps
# "scheme://user:" so the URL stays readable; the password goes.
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+(?=@[\w.-])")
# AWS secret access keys: 40 base64 characters. Named (aws_secret_access_key = ...) or standing alone with
# upper and lower case, a digit and a "/" or "+" in them, which ordinary words and hashes never have.
_AWS_SECRET = re.compile(r"((?i:aws_?secret_?access_?key|secret_?access_?key|aws_?secret)[\"']?\s*[:=]\s*[\"']?)"
                         r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"
                         r"|(?<![A-Za-z0-9/+])(?=[A-Za-z0-9/+]*[A-Z])(?=[A-Za-z0-9/+]*[a-z])(?=[A-Za-z0-9/+]*\d)"
                         r"(?=[A-Za-z0-9/+]*[/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"

# Applied in this order: secrets first (a token can hold an "@" or digit runs), cards before phones (a
# card's digit groups look like a phone number to the phone pattern).
PII_PATTERNS: dict[str, re.Pattern] = {
    "private_key": _PRIVATE_KEY,
    "url_password": _URL_PASSWORD,
    "aws_secret_key": _AWS_SECRET,
    "api_key": _API_KEY,
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    # Not part of a longer dotted number (versions, section numbers): 1.2.3.4.5 is not an address.
    "ipv4": re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\d)"),
    # 13-19 digits, ungrouped or in the groups cards are printed in (4-4-4-4..., Amex 4-6-5), spaces or
    # dashes; only Luhn-valid numbers are redacted. Free grouping would take gsm8k's "14000-3920-1000=".
    "credit_card": re.compile(r"(?<![\w=-])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{1,7}|\d{4}([ -])\d{6}\2\d{4,5})"
                              r"(?![\w=-])"),
    # Needs separators between digit groups, so salaries and years never match, and a last group of four
    # digits next to no operator, so arithmetic ("960-480-120 = 360" in gsm8k's worked answers) does not.
    # Not a slice of a longer run of digit groups either (a card number that failed the Luhn check).
    "phone": re.compile(r"(?<![\w=<>*/+-])(?<!\d[\s.-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)|\d{2,4})[\s.-]\d{3,4}"
                        r"[\s.-]\d{4}(?![\w=<>*/+-])(?![\s.-]\d)(?!\s*[=<>*/+-]\s*\d)"),
}

TEXT_FIELDS = ("prompt", "completion", "system", "chosen", "rejected")
# Patterns whose group 1 is context to keep ("Bearer ", "postgres://user:", "aws_secret_access_key=").
_KEEPS_PREFIX = {"api_key", "url_password", "aws_secret_key"}


@dataclass
class CleanConfig:
    # The minimum applies to opening prompts only: a follow-up turn ("yes", "why?") after a history is fine.
    min_prompt_chars: int = 8
    max_prompt_chars: int = 1000
    # Completion bounds also apply to both replies of a preference pair.
    min_completion_chars: int = 3
    max_completion_chars: int = 2000
    # Share of characters that are neither letters/digits nor whitespace. Prompts are prose; completions
    # (SQL, code, worked arithmetic) are legitimately symbol-heavy and get a looser bound.
    max_prompt_symbol_ratio: float = 0.5
    max_completion_symbol_ratio: float = 0.8
    # Repetition: the share of word 3-grams that repeat an earlier one, and the share of lines taken by
    # the most repeated line. Short texts have too few 3-grams / lines for a share to mean anything.
    max_duplicate_ngram_share: float = 0.5
    repetition_min_words: int = 30
    max_repeated_line_share: float = 0.5
    repetition_min_lines: int = 4
    # False collapses all whitespace (newlines too) to single spaces; True keeps line structure
    # (indentation, single blank lines), which code, lists and worked answers need.
    keep_newlines: bool = False


@dataclass
class CleanResult:
    records: pd.DataFrame
    quarantine: pd.DataFrame
    pii_counts: dict[str, int] = field(default_factory=dict)  # redactions per kind, in the kept records
    html_stripped: int = 0  # kept records with HTML stripped from at least one field
    filter_counts: dict[str, int] = field(default_factory=dict)  # rejections per "filter: field"


class _TextExtractor(HTMLParser):
    _BREAKS = {"br", "p", "div", "li", "tr"}
    _INVISIBLE = {"script", "style"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self._BREAKS:
            self.parts.append(" ")
        self._hidden += tag in self._INVISIBLE

    def handle_endtag(self, tag: str) -> None:
        if tag in self._INVISIBLE and self._hidden:
            self._hidden -= 1


def strip_html(text: str) -> str:
    """Turn an HTML fragment into its visible text (tags dropped, entities decoded)."""
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    # convert_charrefs already decoded entities; unescaping again would turn "&amp;lt;" into "<".
    return "".join(parser.parts)


def has_html_noise(text: str) -> bool:
    """HTML tags or entities that should become plain text (not markup the text is about)."""
    if "<" not in text and "&" not in text:  # every tag or entity holds one; skips the big alternation
        return False
    return bool(_TAG_OR_ENTITY.search(text)) and not _MARKUP_IS_CONTENT.search(text)


def normalize_text(text: str, keep_newlines: bool = False) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = text.translate(_DELETE_CONTROL) if text.isascii() else _CONTROL.sub("", text)
    if not keep_newlines:
        # str.split() and the pattern's \s are one set (both Py_UNICODE_ISSPACE): this is
        # _WHITESPACE.sub(" ", text).strip() as one C loop instead of the regex engine's.
        return " ".join(text.split())
    lines = []
    for line in text.splitlines():
        indent = _INDENT.match(line).group()
        body = _WHITESPACE.sub(" ", line[len(indent):]).strip()
        if body or (lines and lines[-1]):  # at most one blank line in a row
            lines.append(indent + body if body else "")
    return "\n".join(lines).strip("\n")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# A necessary condition per pattern, far cheaper than the pattern's own scan (its lookarounds and
# alternations are tried at every position): a substring every match holds, in the case-folded text
# (so case-sensitive and (?i:...) parts alike), or a short regex every match contains. Most texts hold
# none, so most patterns never run; the result is the same as running them all.
_NEEDLES: dict[str, tuple[str, ...]] = {
    "private_key": ("-----begin",),
    "url_password": ("://",),
    "aws_secret_key": ("secret", "/", "+"),
    "api_key": ("bearer", "sk-", "sk_", "akia", "asia", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",
                "xox", "aiza", "eyj", "hf_", "glpat-", "npm_"),
    "email": ("@",),
}
_HINTS: dict[str, re.Pattern] = {
    "ipv4": re.compile(r"\d\.\d"),
    "credit_card": re.compile(r"\d{4}"),
    "phone": re.compile(r"\d{4}"),
}


_DIGIT = re.compile(r"\d")


def _has_digit(text: str) -> bool:
    # ``in`` is a memchr-speed scan where the regex engine steps character by character; \d is wider than
    # ASCII digits, so non-ASCII text takes the regex.
    return any(d in text for d in "0123456789") if text.isascii() else bool(_DIGIT.search(text))


def _may_match(kind: str, text: str, folded: str, has_digit: bool) -> bool:
    needles = _NEEDLES.get(kind)
    if needles is not None:
        for needle in needles:  # a loop, not any(generator): this runs for every text and kind
            if needle in folded:
                return True
        return False
    return has_digit and bool(_HINTS[kind].search(text))


def redact_pii(text: str, counts: Counter) -> str:
    """Replace PII with ``[KIND]`` placeholders, counting each redaction under its kind."""
    if not text:  # most rows leave system / chosen / rejected empty
        return text
    folded, has_digit = text.casefold(), _has_digit(text)
    for kind, pattern in PII_PATTERNS.items():
        if not _may_match(kind, text, folded, has_digit):
            continue
        placeholder = f"[{kind.upper()}]"

        def replace(match: re.Match, kind: str = kind, placeholder: str = placeholder) -> str:
            if kind == "credit_card":
                digits = re.sub(r"\D", "", match.group())
                if not (13 <= len(digits) <= 19 and _luhn_ok(digits)):
                    return match.group()
            counts[kind] += 1
            keep = match.group(1) if kind in _KEEPS_PREFIX else ""
            return (keep or "") + placeholder

        redacted = pattern.sub(replace, text)
        if redacted != text:  # a placeholder may hold a later pattern's needle ("[AWS_SECRET_KEY]")
            text, folded, has_digit = redacted, redacted.casefold(), _has_digit(redacted)
    return text


def symbol_ratio(text: str) -> float:
    """Share of characters that are neither alphanumeric nor whitespace."""
    if not text:
        return 0.0
    if text.isascii():  # what is left once letters, digits and whitespace are deleted: _SYMBOL's matches
        return len(text.translate(_DELETE_NON_SYMBOLS)) / len(text)
    return (len(text) - len(_SYMBOL.sub("", text))) / len(text)  # one match per character; no list built


def duplicate_ngram_share(text: str, n: int = 3) -> float:
    """Share of word n-grams that repeat an earlier n-gram (0 = all distinct)."""
    words = text.casefold().split()
    count = len(words) - n + 1
    if count <= 0:
        return 0.0
    return 1 - len(set(zip(*(words[i:] for i in range(n)), strict=False))) / count


def repeated_line_share(text: str) -> tuple[float, int]:
    """(share of non-blank lines that are the most repeated line, number of non-blank lines)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return 0.0, 0
    return Counter(lines).most_common(1)[0][1] / len(lines), len(lines)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


_CHUNK_ROWS = 20_000


def clean_records(records: pd.DataFrame, config: CleanConfig | None = None) -> CleanResult:
    """Clean every record; rows failing a filter go to quarantine with the reason."""
    config = config or CleanConfig()
    records = ensure_record_columns(records)
    pii: Counter = Counter()
    filters: Counter = Counter()
    rejected: list[dict] = []
    parts = []
    html_stripped = 0
    for lo in range(0, max(len(records), 1), _CHUNK_ROWS):
        # Rows as dicts a chunk at a time: a million rows of dicts at once would be GBs of Python objects.
        kept: list[dict] = []
        for row in records.iloc[lo: lo + _CHUNK_ROWS].to_dict("records"):
            cleaned, failure, row_pii, html = _clean_row(row, config)
            if failure is not None:
                key, reason = failure
                filters[key] += 1
                rejected.append({k: row[k] for k in ("drop_id", "source_file", "line_no")}
                                | {"stage": "clean", "reason": reason, "raw": _preview(row)})
                continue
            pii.update(row_pii)
            html_stripped += html
            kept.append({**row, **cleaned})
        parts.append(pd.DataFrame(kept, columns=records.columns).astype(records.dtypes.to_dict()))
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return CleanResult(frame, quarantine_frame(rejected), dict(pii), html_stripped, dict(filters))


def _clean_row(row: dict, config: CleanConfig) -> tuple[dict, tuple[str, str] | None, Counter, bool]:
    """(cleaned text fields, the first filter failure or None, PII redactions, whether HTML was stripped)."""
    row_pii: Counter = Counter()
    html = False

    def clean(text: str, field_name: str) -> str:
        nonlocal html
        # Completions are code (SQL): never HTML-stripped, ``a < b`` is not a tag.
        if field_name != "completion" and has_html_noise(text):
            text = strip_html(text)
            html = True
        return redact_pii(normalize_text(text, config.keep_newlines), row_pii)

    cleaned = {name: clean(_text(row[name]), name) for name in TEXT_FIELDS}
    history, failure = _clean_history(row["history"], clean)
    if failure is None:
        cleaned["history"] = history
        failure = _quality_failure(row["kind"], cleaned, row, config)
    return cleaned, failure, row_pii, html


def _preview(row: dict) -> str:
    names = ("prompt", "chosen", "rejected") if row["kind"] == "preference" else ("prompt", "completion")
    raw = " ".join(f"{name}={_text(row[name])!r}" for name in names)
    # The preview is redacted too: quarantine must not become the place PII survives.
    return redact_pii(raw[: 2 * RAW_PREVIEW_CHARS], Counter())[:RAW_PREVIEW_CHARS]


def _clean_history(value: object, clean: Callable[[str, str], str]) -> tuple[str, tuple[str, str] | None]:
    """Each earlier turn's content cleaned like the prompt; the column stays JSON text."""
    try:
        turns = json.loads(_text(value) or "[]")
    except json.JSONDecodeError as exc:
        return "", ("malformed history", f"malformed history: {exc.msg}")
    if not isinstance(turns, list) or not all(
            isinstance(t, dict) and isinstance(t.get("role"), str) and isinstance(t.get("content"), str)
            for t in turns):
        return "", ("malformed history", "malformed history: expected a list of {role, content} turns")
    cleaned = [{"role": t["role"], "content": clean(t["content"], "history")} for t in turns]
    return json.dumps(cleaned, ensure_ascii=False), None


def _quality_failure(kind: str, cleaned: dict, row: dict, config: CleanConfig) -> tuple[str, str] | None:
    """(counter key "filter: field", reason) for the first filter the row fails, or None."""
    if kind not in KINDS:
        return "unknown kind", f"unknown kind: {kind!r} (expected one of {', '.join(KINDS)})"
    replies = ("completion",) if kind == "sft" else ("chosen", "rejected")
    for name in ("prompt", *replies):
        if not cleaned[name]:
            return f"empty field: {name}", f"empty field: {name}"
    min_prompt = config.min_prompt_chars if cleaned["history"] == "[]" else 1
    checks = [("prompt", min_prompt, config.max_prompt_chars, config.max_prompt_symbol_ratio)]
    checks += [(name, config.min_completion_chars, config.max_completion_chars, config.max_completion_symbol_ratio)
               for name in replies]
    for name, low, high, _ in checks:
        n = len(cleaned[name])
        if n < low:
            return f"too short: {name}", f"too short: {name} has {n} chars < {low}"
        if n > high:
            return f"too long: {name}", f"too long: {name} has {n} chars > {high}"
    if kind == "preference" and cleaned["chosen"] == cleaned["rejected"]:
        return "identical pair: chosen/rejected", "identical pair: chosen equals rejected (no preference signal)"
    for name, _, _, _ in checks:
        text = cleaned[name]
        if len(text.split()) >= config.repetition_min_words:
            share = duplicate_ngram_share(text)
            if share > config.max_duplicate_ngram_share:
                return (f"repetition: {name}",
                        f"repetition: {name} has {share:.1%} duplicate word 3-grams > "
                        f"{config.max_duplicate_ngram_share:.1%}")
        # Lines are read from the text as it arrived: whitespace normalization may have joined them.
        share, n_lines = repeated_line_share(_text(row[name]))
        if n_lines >= config.repetition_min_lines and share > config.max_repeated_line_share:
            return (f"repetition: {name}",
                    f"repetition: {name} repeats its most common line in {share:.1%} of {n_lines} lines > "
                    f"{config.max_repeated_line_share:.1%}")
    for name, _, _, limit in checks:
        ratio = symbol_ratio(cleaned[name])
        if ratio > limit:
            return f"symbol ratio: {name}", f"symbol ratio: {name} is {ratio:.1%} symbols > {limit:.1%}"
    return None
