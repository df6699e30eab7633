"""Read raw drops into canonical records; every unreadable row is quarantined with a reason, never raised.

Formats: JSON Lines (``.jsonl``, ``.ndjson``, gzipped as ``.jsonl.gz``), JSON (``.json``: an array of
objects or one object), CSV (``.csv``, header row required) and Parquet (``.parquet``). ``.json.gz`` and
``.csv.gz`` are read through gzip too.

Record shapes (see ``parse_record``): prompt/completion pairs under the usual field names (alpaca
instruction/input/output, question/sql, self-instruct instances), chat ``messages`` (OpenAI style) and
ShareGPT ``conversations``, preference pairs (prompt/chosen/rejected, chat lists, or hh-rlhf dialogues).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import dataclasses
import gzip
import io
import json
import os
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ft_assets.data.clean import redact_pii
from ft_assets.data.records import RAW_PREVIEW_CHARS, quarantine_frame, records_frame

# Field names seen in the wild for the two sides of an example, in order of preference.
PROMPT_FIELDS = ("prompt", "question", "instruction")
COMPLETION_FIELDS = ("completion", "sql", "query", "answer", "output", "response")
DB_FIELDS = ("db", "db_id", "db_name")
CHAT_FIELDS = ("messages", "conversations")
# OpenAI roles and ShareGPT "from" values, mapped onto the three roles a record knows.
ROLES = {
    "system": "system",
    "user": "user", "human": "user",
    "assistant": "assistant", "gpt": "assistant", "chatgpt": "assistant", "model": "assistant", "bot": "assistant",
}
HH_HUMAN, HH_ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")

DEFAULT_MAX_RECORD_BYTES = 1_000_000
# Readers keep twice the preview so redaction sees whole e-mails and keys at the cut; then it is cut.
_PREVIEW_READ = 2 * RAW_PREVIEW_CHARS
# Suffix -> reader name; a trailing ".gz" is read through gzip first (Parquet compresses itself).
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
# Every file name ending ingest_drops reads, for callers that pick drop files out of a folder.
SUPPORTED_SUFFIXES = (*FORMATS, *(s + ".gz" for s in FORMATS if s != ".parquet"))
_WIDE_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


@dataclass
class IngestResult:
    records: pd.DataFrame
    quarantine: pd.DataFrame
    # Rows met in the inputs: non-blank JSONL lines, JSON array elements, CSV/Parquet data rows, plus one
    # per file rejected as a whole (empty, undecodable, unreadable). Always len(records) + len(quarantine).
    rows_seen: int
    blank_lines: int  # blank JSONL lines and blank CSV rows: skipped, not rows
    files: list[str]
    formats: dict[str, str] = field(default_factory=dict)  # file -> reader used ("jsonl", "csv", ...)
    # Which source field filled each canonical one, counted over kept rows: {"completion<-query": 1034}.
    fields_used: dict[str, int] = field(default_factory=dict)

    @property
    def lines_read(self) -> int:
        """The name ``rows_seen`` had while only JSONL was read."""
        return self.rows_seen


class _Reject(Exception):
    """A row-level rejection; the message is the quarantine reason."""


# A reader yields one item per row seen: (line_no, parsed object or None, raw preview, reason or None).
_Row = tuple[int, object, str, str | None]


# --- mapping one parsed object onto the canonical record -------------------------------------------


def _type(value: object) -> str:
    return type(value).__name__


def _pick(obj: dict, names: tuple[str, ...]) -> tuple[str | None, object]:
    for name in names:
        if name in obj:
            return name, obj[name]
    return None, None


def _required_str(obj: dict, name: str, label: str | None = None) -> str:
    label = label or name
    if name not in obj:
        raise _Reject(f"missing field: {label}")
    value = obj[name]
    if not isinstance(value, str):
        raise _Reject(f"mistyped field: {label} is {_type(value)}, expected string")
    return value


def _optional_str(obj: dict, name: str, label: str | None = None) -> str:
    """Absent or null is "" (Parquet and CSV exports write nulls for missing optional values)."""
    if obj.get(name) is None:
        return ""
    return _required_str(obj, name, label)


def _content(value: object, label: str) -> str:
    if isinstance(value, str):
        return value
    # OpenAI's multi-part content: keep it when every part is text, refuse images and the like.
    if isinstance(value, list) and value and all(isinstance(p, dict) for p in value):
        kinds = {p.get("type") for p in value}
        if kinds == {"text"} and all(isinstance(p.get("text"), str) for p in value):
            return "\n".join(p["text"] for p in value)
        raise _Reject(f"mistyped field: {label} has non-text parts ({', '.join(sorted(map(str, kinds)))})")
    raise _Reject(f"mistyped field: {label} is {_type(value)}, expected string")


def _turns(value: object, name: str) -> list[tuple[str, str, str]]:
    """A chat list as (label, role, content) triples, with OpenAI and ShareGPT keys both understood."""
    if isinstance(value, str):
        # CSV cells and some Parquet exports carry the list as JSON text.
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _Reject(f"mistyped field: {name} is a string that is not a JSON list of turns") from None
    if not isinstance(value, list):
        raise _Reject(f"mistyped field: {name} is {_type(value)}, expected a list of turns")
    if not value:
        raise _Reject(f"empty field: {name}")
    default_keys = ("from", "value") if name == "conversations" else ("role", "content")
    turns = []
    for i, turn in enumerate(value):
        label = f"{name}[{i}]"
        if not isinstance(turn, dict):
            raise _Reject(f"mistyped field: {label} is {_type(turn)}, expected an object")
        # Either key style in either field: exports mix them. Name the field's own style when both are absent.
        role_key = "role" if "role" in turn else "from" if "from" in turn else default_keys[0]
        content_key = "content" if "content" in turn else "value" if "value" in turn else default_keys[1]
        role = _required_str(turn, role_key, f"{label}.{role_key}")
        if role.lower() not in ROLES:
            raise _Reject(f"unknown role: {label} has {role_key} {role!r}")
        if content_key not in turn:
            raise _Reject(f"missing field: {label}.{content_key}")
        content = _content(turn[content_key], f"{label}.{content_key}")
        role = ROLES[role.lower()]
        if not content.strip():
            raise _Reject(f"empty turn: {label} ({role})")
        turns.append((label, role, content))
    return turns


def _split_dialogue(turns: list[tuple[str, str, str]], name: str, ends_with: str = "assistant"
                    ) -> tuple[str, list[dict], list[tuple[str, str, str]]]:
    """(system, history, final turns): final turns are [user, assistant], or [user] for a prompt-only dialogue.

    Consecutive turns of one role are allowed inside the history (real logs have them; hh-rlhf does);
    the final user turn and the reply to it must be in place.
    """
    system = ""
    if turns and turns[0][1] == "system":
        system, turns = turns[0][2], turns[1:]
    for label, role, _ in turns:
        if role == "system":
            raise _Reject(f"bad role order: system turn at {label} (only a leading system turn is supported)")
    if not turns:
        raise _Reject(f"bad role order: {name} has no user turn")
    if turns[0][1] != "user":
        raise _Reject(f"bad role order: {turns[0][0]} is an assistant turn before any user turn")
    if ends_with == "assistant":
        if all(role != "assistant" for _, role, _ in turns):
            raise _Reject(f"bad role order: {name} has no assistant turn")
        if turns[-1][1] != "assistant":
            raise _Reject(f"bad role order: {turns[-1][0]} is a user turn after the last assistant turn "
                          f"(nothing answers it)")
        if turns[-2][1] != "user":
            raise _Reject(f"bad role order: {turns[-2][0]} before the final assistant turn is an assistant turn, "
                          f"expected user")
        final = turns[-2:]
    else:
        if turns[-1][1] != "user":
            raise _Reject(f"bad role order: {name} must end with a user turn, {turns[-1][0]} is an assistant turn")
        final = turns[-1:]
    history = [{"role": role, "content": content} for _, role, content in turns[: len(turns) - len(final)]]
    return system, history, final


def _chat(obj: dict, out: dict) -> None:
    name = next(n for n in CHAT_FIELDS if n in obj)
    out["_fields"] = {"messages": name}
    system, history, [(_, _, prompt), (_, _, completion)] = _split_dialogue(_turns(obj[name], name), name)
    out.update(system=system, history=history, prompt=prompt, completion=completion)


def _pair(obj: dict, out: dict) -> None:
    name, prompt = _pick(obj, PROMPT_FIELDS)
    if name is None:
        raise _Reject(f"missing field: prompt (expected one of {', '.join(PROMPT_FIELDS)}, "
                      f"or {' / '.join(CHAT_FIELDS)})")
    prompt = _required_str(obj, name)
    if name == "instruction":
        # Alpaca: the optional input is part of the user's message.
        extra = _optional_str(obj, "input")
        prompt = f"{prompt}\n\n{extra}" if extra.strip() else prompt
    out["_fields"] = {"prompt": name}
    present = [n for n in COMPLETION_FIELDS if n in obj]
    if present:
        # The first present field that holds text: Spider carries ``sql`` as a parsed tree beside ``query``.
        cname = next((n for n in present if isinstance(obj[n], str)), present[0])
        out.update(prompt=prompt, completion=_required_str(obj, cname))
        out["_fields"]["completion"] = cname
        return
    if "instances" in obj:
        # Self-instruct: instruction + instances[{input, output}]. The first instance is the example;
        # later ones are ignored (record ids are one per source row, so they cannot be expanded in place).
        instances = obj["instances"]
        if not isinstance(instances, list):
            raise _Reject(f"mistyped field: instances is {_type(instances)}, expected a list")
        if not instances:
            raise _Reject("empty field: instances")
        first = instances[0]
        if not isinstance(first, dict):
            raise _Reject(f"mistyped field: instances[0] is {_type(first)}, expected an object")
        extra = _optional_str(first, "input", "instances[0].input")
        prompt = f"{prompt}\n\n{extra}" if extra.strip() else prompt
        out.update(prompt=prompt, completion=_required_str(first, "output", "instances[0].output"))
        out["_fields"]["completion"] = "instances[0].output"
        return
    raise _Reject(f"missing field: completion (expected one of {', '.join(COMPLETION_FIELDS)})")


def _final_reply(value: object, name: str) -> tuple[list[tuple[str, str, str]], str]:
    """A preference side as (turns before the reply, reply): plain text, or a chat list ending in the reply."""
    if isinstance(value, str):
        return [], value
    if not isinstance(value, list):
        raise _Reject(f"mistyped field: {name} is {_type(value)}, expected string or list of turns")
    turns = _turns(value, name)
    if turns[-1][1] != "assistant":
        raise _Reject(f"bad role order: {name} does not end with an assistant turn")
    return turns[:-1], turns[-1][2]


def _hh_dialogue(chosen: str, rejected: str) -> tuple[list[tuple[str, str, str]], str, str]:
    """Split an hh-rlhf pair: the shared text up to its last "\\n\\nAssistant:" is the dialogue so far.

    The common prefix (not each side's own last marker) decides: a reply may itself contain
    "\\n\\nAssistant:" or "Human:", and the two replies may share their first words.
    """
    cut = os.path.commonprefix([chosen, rejected]).rfind(HH_ASSISTANT)
    if cut < 0:
        if HH_ASSISTANT in chosen and HH_ASSISTANT in rejected:
            raise _Reject("preference mismatch: chosen and rejected share no dialogue before their replies")
        raise _Reject("missing field: prompt (chosen/rejected are neither chat lists nor "
                      "'\\n\\nHuman: ... \\n\\nAssistant: ...' dialogues)")
    parts = _HH_TURN.split(chosen[:cut])
    if parts[0].strip():
        raise _Reject("malformed dialogue: text before the first '\\n\\nHuman:' turn")
    turns = []
    for k, (speaker, text) in enumerate(zip(parts[1::2], parts[2::2], strict=True)):
        role = "user" if speaker == "Human" else "assistant"
        if not text.strip():
            raise _Reject(f"empty turn: dialogue turn {k} ({speaker})")
        turns.append((f"dialogue turn {k}", role, text.strip()))
    replies = []
    for side, text in (("chosen", chosen), ("rejected", rejected)):
        reply = text[cut + len(HH_ASSISTANT):].strip()
        if not reply:
            raise _Reject(f"empty turn: the final Assistant turn of {side}")
        replies.append(reply)
    return turns, replies[0], replies[1]


def _preference(obj: dict, out: dict) -> None:
    for side in ("chosen", "rejected"):
        if side not in obj:
            raise _Reject(f"missing field: {side}")
    if "prompt" in obj:
        prompt = obj["prompt"]
        if isinstance(prompt, str):
            dialogue = [("prompt", "user", prompt)]
        elif isinstance(prompt, list):
            dialogue = _turns(prompt, "prompt")
        else:
            raise _Reject(f"mistyped field: prompt is {_type(prompt)}, expected string or list of turns")
        _, chosen = _final_reply(obj["chosen"], "chosen")
        _, rejected = _final_reply(obj["rejected"], "rejected")
    elif isinstance(obj["chosen"], str) and isinstance(obj["rejected"], str):
        dialogue, chosen, rejected = _hh_dialogue(obj["chosen"], obj["rejected"])
    else:
        # Implicit prompt (TRL's format): both sides are whole conversations sharing all but the last turn.
        dialogue, chosen = _final_reply(obj["chosen"], "chosen")
        other, rejected = _final_reply(obj["rejected"], "rejected")
        if [t[1:] for t in dialogue] != [t[1:] for t in other]:
            raise _Reject("preference mismatch: chosen and rejected differ before the final assistant turn")
        if not dialogue:
            raise _Reject("missing field: prompt (chosen/rejected hold only the reply)")
    system, history, [(_, _, prompt_text)] = _split_dialogue(dialogue, "prompt", ends_with="user")
    out.update(kind="preference", system=system, history=history, prompt=prompt_text,
               chosen=chosen, rejected=rejected)


# Canonical fields a field map may name, and the source names that compete with each (a mapped field
# replaces their auto-detection: mapping completion -> query ignores a ``sql`` column beside it).
MAPPABLE_FIELDS: dict[str, tuple[str, ...]] = {
    "prompt": PROMPT_FIELDS, "completion": COMPLETION_FIELDS, "db_id": DB_FIELDS, "messages": CHAT_FIELDS,
    "system": ("system",), "input": ("input",), "chosen": ("chosen",), "rejected": ("rejected",),
}


class FieldMapError(ValueError):
    """A field map that cannot apply: an unknown canonical field, or a source column the data lacks."""


def check_field_map(field_map: dict[str, str] | None) -> dict[str, str]:
    """The map itself is sound: canonical names known, source names non-empty strings."""
    field_map = dict(field_map or {})
    unknown = sorted(set(field_map) - set(MAPPABLE_FIELDS))
    if unknown:
        raise FieldMapError(f"field_map names unknown canonical field(s) {', '.join(map(repr, unknown))}; "
                            f"known: {', '.join(MAPPABLE_FIELDS)}")
    bad = [k for k, v in field_map.items() if not isinstance(v, str) or not v]
    if bad:
        raise FieldMapError(f"field_map[{bad[0]!r}] must be a source column name (a non-empty string)")
    return field_map


def missing_mapped_columns(obj: object, field_map: dict[str, str]) -> list[str]:
    """Source columns of ``field_map`` that ``obj`` (a sample row) does not have."""
    if not isinstance(obj, dict):
        return []
    return [source for source in field_map.values() if source not in obj]


def _mapped(obj: dict, field_map: dict[str, str]) -> dict:
    missing = missing_mapped_columns(obj, field_map)
    if missing:
        canonical = next(k for k, v in field_map.items() if v == missing[0])
        raise _Reject(f"missing field: {missing[0]} (field_map {canonical} -> {missing[0]})")
    competing = {name for canonical in field_map for name in MAPPABLE_FIELDS[canonical]} | set(field_map.values())
    out = {k: v for k, v in obj.items() if k not in competing}
    out.update({canonical: obj[source] for canonical, source in field_map.items()})
    return out


def parse_record(obj: object, field_map: dict[str, str] | None = None,
                 fields_used: Counter | None = None) -> tuple[dict | None, str | None]:
    """Return (canonical fields, None) for a usable object or (None, reason) for a rejected one.

    The fields are kind, prompt, completion, system, history (JSON text), chosen, rejected and db_id.
    ``field_map`` (canonical field -> source column) overrides the field-name detection; ``fields_used``
    counts which source field filled each canonical one (``"completion<-query"``).
    """
    try:
        if not isinstance(obj, dict):
            raise _Reject(f"not a JSON object: got {_type(obj)}")
        if field_map:
            obj = _mapped(obj, field_map)
        out: dict = {"kind": "sft", "prompt": "", "completion": "", "system": "", "history": [],
                     "chosen": "", "rejected": "", "_fields": {}}
        if "chosen" in obj or "rejected" in obj:
            _preference(obj, out)
        elif any(name in obj for name in CHAT_FIELDS):
            _chat(obj, out)
        else:
            _pair(obj, out)
        if not out["system"]:
            # A top-level system field, as some instruction sets carry it; a leading system turn wins.
            out["system"] = _optional_str(obj, "system")
        db_name, db_id = _pick(obj, DB_FIELDS)
        out["db_id"] = "" if db_id is None else _required_str(obj, db_name)
        if db_name is not None:
            out["_fields"]["db_id"] = db_name
        texts = [(k, v) for k, v in out.items() if isinstance(v, str)]
        texts += [(f"history[{i}]", turn["content"]) for i, turn in enumerate(out["history"])]
        for name, text in texts:
            if "\x00" in text:
                raise _Reject(f"NUL byte: in field {name}")
    except _Reject as exc:
        return None, str(exc)
    used = out.pop("_fields")
    if fields_used is not None:
        sources = {k: v for k, v in (field_map or {}).items()}
        fields_used.update(f"{canonical}<-{sources.get(name, name)}" for canonical, name in used.items())
    out["history"] = json.dumps(out["history"], ensure_ascii=False)
    return out, None


# --- readers: one item per row seen ----------------------------------------------------------------


@dataclass(frozen=True)
class IngestLimits:
    """What one drop file may cost: past a limit the rest of the file is refused with a row naming the limit."""

    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES  # one row (a JSONL line, a CSV line, a JSON element)
    max_drop_bytes: int = 2 * 1024**3  # bytes read from one file after decompression (gzip bombs)
    max_rows: int = 2_000_000  # rows read from one file
    max_columns: int = 1_000  # CSV header / Parquet schema width
    max_document_bytes: int = 256 * 1024**2  # a .json file is parsed whole: its decompressed size

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ingest limit {name} must be a positive integer, got {value!r}")


class _LimitExceeded(Exception):
    """Reading further would pass a limit; the message is the quarantine reason."""


class _Limited(io.RawIOBase):
    """A byte stream that refuses to deliver more than ``limit`` bytes (counted after decompression)."""

    def __init__(self, inner: io.BufferedIOBase, limit: int, reason: str) -> None:
        self.inner, self.limit, self.reason, self.count = inner, limit, reason, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.inner.readinto(buffer) or 0
        self.count += n
        if self.count > self.limit:
            raise _LimitExceeded(self.reason)
        return n


def _invalid_utf8(data: bytes, exc: UnicodeDecodeError) -> str:
    return f"invalid UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start}"


def _wide_bom(head: bytes) -> str | None:
    if head.startswith(_WIDE_BOMS):
        return "unsupported encoding: UTF-16/UTF-32 byte order mark (save the file as UTF-8)"
    return None


_TOO_DEEP = "too deeply nested: JSON nesting deeper than the parser allows"


def _sized(line_no: int, obj: object, max_bytes: int) -> _Row:
    """A parsed row from JSON/CSV/Parquet, its size measured as compact JSON."""
    try:
        raw = json.dumps(obj, ensure_ascii=False, default=str)
    except RecursionError:
        return line_no, None, "", _TOO_DEEP
    size = len(raw.encode("utf-8", errors="replace"))
    if size > max_bytes:
        return line_no, None, raw[:_PREVIEW_READ], f"huge record: {size} bytes > {max_bytes}"
    return line_no, obj, raw[:_PREVIEW_READ], None


def _bounded_lines(handle: io.BufferedIOBase, max_bytes: int) -> Iterator[tuple[bytes, int]]:
    """(line, its size in bytes); a line over ``max_bytes`` comes as its head only, the rest skipped unread."""
    while line := handle.readline(max_bytes + 1):
        size = len(line)
        if size > max_bytes and not line.endswith(b"\n"):
            while (rest := handle.readline(1 << 20)) and not rest.endswith(b"\n"):
                size += len(rest)
            size += len(rest)
        yield line, size


def _jsonl_rows(lines: Iterable[tuple[bytes, int]], stats: Counter, max_bytes: int) -> Iterator[_Row]:
    for line_no, (raw_line, size) in enumerate(lines, start=1):
        if line_no == 1:
            if reason := _wide_bom(raw_line):
                yield 0, None, "", reason
                return
            if raw_line.startswith(codecs.BOM_UTF8):
                raw_line = raw_line[len(codecs.BOM_UTF8):]  # editors on Windows write one
        if not raw_line.strip():
            stats["blank"] += 1
            continue
        preview = raw_line[:_PREVIEW_READ].decode("utf-8", errors="replace").rstrip("\r\n")
        if size > max_bytes:
            yield line_no, None, preview, f"huge record: {size} bytes > {max_bytes}"
            continue
        if (nul := raw_line.find(b"\x00")) >= 0:
            yield line_no, None, preview.replace("\x00", "\\x00"), f"NUL byte: at offset {nul}"
            continue
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield line_no, None, preview, _invalid_utf8(raw_line, exc)
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield line_no, None, preview, f"malformed JSON: {exc.msg} at column {exc.colno}"
            continue
        except RecursionError:
            yield line_no, None, preview, _TOO_DEEP
            continue
        yield line_no, obj, preview, None


def _read_jsonl(path: Path, opener: Callable, stats: Counter, limits: IngestLimits) -> Iterator[_Row]:
    seen = 0
    try:
        with opener(path) as handle:
            for row in _jsonl_rows(_bounded_lines(handle, limits.max_record_bytes), stats, limits.max_record_bytes):
                seen += 1
                yield row
    except (OSError, EOFError, zlib.error) as exc:
        # A truncated gzip stream fails mid-file: the rows before it stand, the failure is one more row.
        seen += 1
        yield 0, None, "", f"unreadable file: {type(exc).__name__}: {exc}"
    if not seen:
        yield 0, None, "", "empty file"


def _read_text(path: Path, opener: Callable, limit: int) -> tuple[str | None, _Row | None]:
    """The whole file as text, or the one row that rejects it (empty, too big, unreadable, not UTF-8)."""
    try:
        with opener(path) as handle:
            data = handle.read(limit + 1)
    except (OSError, EOFError, zlib.error) as exc:
        return None, (0, None, "", f"unreadable file: {type(exc).__name__}: {exc}")
    if len(data) > limit:
        return None, (0, None, data[:_PREVIEW_READ].decode("utf-8", errors="replace"),
                      f"drop limit: {path.name} is over max_document_bytes={limit} bytes decompressed; a .json "
                      f"document is parsed whole (split it, or use JSON Lines)")
    if reason := _wide_bom(data[:4]):
        return None, (0, None, "", reason)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    if not data.strip():
        return None, (0, None, "", "empty file")
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        preview = data[:_PREVIEW_READ].decode("utf-8", errors="replace")
        return None, (0, None, preview, _invalid_utf8(data, exc))


def _read_json(path: Path, opener: Callable, stats: Counter, limits: IngestLimits) -> Iterator[_Row]:
    text, rejected = _read_text(path, opener, limits.max_document_bytes)
    if text is None:
        yield rejected
        return
    max_bytes = limits.max_record_bytes
    try:
        doc = json.loads(text)
    except RecursionError:
        yield 0, None, text[:_PREVIEW_READ], _TOO_DEEP
        return
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            # JSON Lines saved as .json (common in dataset dumps): read it line by line.
            lines = ((line, len(line)) for line in text.encode().splitlines(keepends=True))
            yield from _jsonl_rows(lines, stats, max_bytes)
            return
        reason = f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        if "\x00" in text:
            reason = f"NUL byte: at offset {text.index(chr(0))} ({reason})"
        yield 0, None, text[:_PREVIEW_READ], reason
        return
    del text
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list):
        yield 0, None, "", f"not a JSON object or array: got {_type(doc)}"
        return
    if not doc:
        yield 0, None, "[]", "empty file: the JSON array has no elements"
        return
    for index, obj in enumerate(doc, start=1):
        yield _sized(index, obj, max_bytes)


# Stands in for a physical CSV line that was too long to read: the row holding it is quarantined.
_HUGE_LINE = "\ufffehuge line\ufffe"


def _text_lines(text: io.TextIOBase, max_chars: int, sizes: dict[str, int]) -> Iterator[str]:
    """Physical lines for the csv module; one longer than ``max_chars`` is skipped unread, a marker in its place."""
    while line := text.readline(max_chars + 1):
        if len(line) > max_chars and not line.endswith(("\n", "\r")):
            size = len(line)
            while (rest := text.readline(1 << 20)) and not rest.endswith(("\n", "\r")):
                size += len(rest)
            sizes["huge"] = size + len(rest)
            line = _HUGE_LINE + "\n"
        yield line


def _read_csv(path: Path, opener: Callable, stats: Counter, limits: IngestLimits) -> Iterator[_Row]:
    max_bytes = limits.max_record_bytes
    # Its field limit is process-wide; raise it so only max_record_bytes decides what is too big.
    csv.field_size_limit(max(csv.field_size_limit(), max_bytes + 1))
    row_no = 0
    try:
        with opener(path) as handle:
            if reason := _wide_bom(handle.peek(4)[:4]):
                yield 0, None, "", reason
                return
            text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
            # The csv module, not pandas: a ragged or badly quoted row costs that row, not the whole file.
            # Not strict: a stray quote inside a quoted field (sql_eval has one) is read the way pandas and
            # spreadsheets read it; a row that comes out with the wrong number of fields is still caught below.
            sizes: dict[str, int] = {}
            reader = csv.reader(_text_lines(text, max_bytes, sizes))
            header = next(reader, None)
            while header == []:
                header = next(reader, None)
            if header is None:
                yield 0, None, "", "empty file"
                return
            preview = ",".join(header)[:_PREVIEW_READ]
            if not any(h.strip() for h in header):
                yield 0, None, preview, "malformed CSV: no header row"
                return
            if len(header) > limits.max_columns:
                yield 0, None, preview, f"too wide: {len(header)} columns > max_columns={limits.max_columns}"
                return
            duplicates = [h for h, n in Counter(header).items() if n > 1]
            if duplicates:
                yield 0, None, preview, f"malformed CSV: duplicate column {duplicates[0]!r} in header"
                return
            while True:
                try:
                    values = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    row_no += 1
                    yield row_no, None, "", f"malformed CSV: {exc} (physical line {reader.line_num})"
                    continue
                if not any(v.strip() for v in values):
                    stats["blank"] += 1
                    continue
                row_no += 1
                if any(_HUGE_LINE in v for v in values):
                    yield row_no, None, "", f"huge record: {sizes['huge']} bytes > {max_bytes}"
                    continue
                if len(values) != len(header):
                    yield (row_no, None, ",".join(values[:50])[:_PREVIEW_READ],
                           f"malformed CSV: row has {len(values)} fields, header has {len(header)}")
                    continue
                yield _sized(row_no, dict(zip(header, values, strict=True)), max_bytes)
    except UnicodeDecodeError as exc:
        # Decoding runs a chunk ahead of the rows: a small file is rejected whole, a big one from that chunk on.
        rest = "" if not row_no else "; the rest of the file was not read"
        yield 0, None, "", f"invalid UTF-8: byte 0x{exc.object[exc.start]:02x} in {path.name}{rest}"
        return
    except (OSError, EOFError, zlib.error) as exc:
        yield 0, None, "", f"unreadable file: {type(exc).__name__}: {exc}"
        return
    if not row_no:
        yield 0, None, "", "empty file: header only, no data rows"


def _read_parquet(path: Path, opener: Callable, stats: Counter, limits: IngestLimits) -> Iterator[_Row]:
    import pyarrow.parquet as pq

    row_no = 0
    try:
        parquet = pq.ParquetFile(path)
        if len(parquet.schema_arrow) > limits.max_columns:
            yield 0, None, "", f"too wide: {len(parquet.schema_arrow)} columns > max_columns={limits.max_columns}"
            return
        # Batches keep memory flat; to_pylist gives plain dicts and lists (pandas would give numpy arrays).
        for batch in parquet.iter_batches(batch_size=1024):
            for obj in batch.to_pylist():
                row_no += 1
                yield _sized(row_no, obj, limits.max_record_bytes)
    except Exception as exc:  # pyarrow raises many types; any of them means "unreadable"
        row_no += 1
        yield (0 if row_no == 1 else row_no), None, "", f"unreadable Parquet: {type(exc).__name__}: {exc}"
        return
    if not row_no:
        yield 0, None, "", "empty file: the Parquet file has no rows"


_READERS = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}


def drop_format(path: Path) -> tuple[str | None, str, bool]:
    """(reader name or None, drop id, gzipped) from the file name: ``a.jsonl.gz`` -> ("jsonl", "a", True)."""
    name = path.name
    gzipped = name.lower().endswith(".gz")
    base = name[:-3] if gzipped else name
    for suffix, fmt in FORMATS.items():
        if base.lower().endswith(suffix) and not (gzipped and fmt == "parquet"):
            return fmt, base[: -len(suffix)], gzipped
    return None, Path(base).stem, gzipped


def _opener(gzipped: bool, limits: IngestLimits) -> Callable:
    @contextlib.contextmanager
    def open_limited(path: Path) -> Iterator[io.BufferedReader]:
        reason = (f"drop limit: {path.name} gives more than max_drop_bytes={limits.max_drop_bytes} bytes "
                  f"{'decompressed' if gzipped else 'read'}; the rest of the file was not read")
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as raw:
            yield io.BufferedReader(_Limited(raw, limits.max_drop_bytes, reason), buffer_size=1 << 16)

    return open_limited


def outside_roots(path: Path, roots: Iterable[Path]) -> str | None:
    """The refusal reason when ``path`` (a symlink, or through one) resolves outside every allowed root."""
    target = path.resolve()
    if any(target.is_relative_to(Path(root).resolve()) for root in roots):
        return None
    return f"refused: {path.name} resolves to {target}, outside the drop location (a symlink out of it)"


def _file_rows(path: Path, fmt: str | None, gzipped: bool, stats: Counter, limits: IngestLimits,
               roots: list[Path] | None) -> Iterator[_Row]:
    """Every row of one file; limits and hostile structure end in a quarantine row, never an exception."""
    if fmt is None:
        yield 0, None, "", f"unsupported file type: {path.name!r} (expected {', '.join(FORMATS)}, optionally .gz)"
        return
    if roots is not None and (reason := outside_roots(path, roots)):
        yield 0, None, "", reason
        return
    rows = 0
    try:
        for row in _READERS[fmt](path, _opener(gzipped, limits), stats, limits):
            rows += 1
            if rows > limits.max_rows:
                yield (0, None, "", f"drop limit: {path.name} has more than max_rows={limits.max_rows} rows; "
                                    f"the rest of the file was not read")
                return
            yield row
    except _LimitExceeded as exc:
        yield 0, None, "", str(exc)
    except RecursionError:
        yield 0, None, "", _TOO_DEEP


def _unique_drop_id(drop_id: str, path: Path, used: set[str]) -> str:
    """Record ids stay unique across the files of one ingest: ``x.jsonl`` is ``x``, then ``x.csv`` is ``x.csv``."""
    candidate, n = drop_id, 1
    if candidate in used:
        candidate = path.name
    while candidate in used:
        n += 1
        candidate = f"{path.name}#{n}"
    used.add(candidate)
    return candidate


def iter_ingest(paths: Iterable[Path | str], field_map: dict[str, str] | None = None,
                limits: IngestLimits | None = None, roots: list[Path] | None = None,
                stats: Counter | None = None, fields_used: Counter | None = None,
                formats: dict[str, str] | None = None) -> Iterator[tuple[bool, dict]]:
    """(is_record, row) for every row of every file, in order: records and quarantine rows, streamed."""
    field_map = check_field_map(field_map)
    limits = limits or IngestLimits()
    stats = Counter() if stats is None else stats
    used: set[str] = set()
    for path in map(Path, paths):
        fmt, drop_id, gzipped = drop_format(path)
        drop_id = _unique_drop_id(drop_id, path, used)
        if fmt is not None and formats is not None:
            formats[str(path)] = fmt + (".gz" if gzipped else "")
        checked = not field_map
        for line_no, obj, preview, reason in _file_rows(path, fmt, gzipped, stats, limits, roots):
            stats["seen"] += 1
            where = {"drop_id": drop_id, "source_file": str(path), "line_no": line_no}
            if not checked and isinstance(obj, dict):
                checked = True
                if missing := missing_mapped_columns(obj, field_map):
                    raise FieldMapError(f"{path.name}: field_map names column(s) {', '.join(map(repr, missing))} "
                                        f"that its first row lacks; it has {', '.join(map(repr, list(obj)[:50]))}")
            fields = None
            if reason is None:
                fields, reason = parse_record(obj, field_map, fields_used)
            if reason is not None:
                # Previews are redacted: quarantine must not become the place PII survives.
                preview = redact_pii(preview[:_PREVIEW_READ], Counter())[:RAW_PREVIEW_CHARS]
                yield False, {**where, "stage": "ingest", "reason": reason, "raw": preview}
                continue
            yield True, {"record_id": f"{drop_id}:{line_no}", **where, **fields}


def _limits(limits: IngestLimits | None, max_record_bytes: int | None) -> IngestLimits:
    limits = limits or IngestLimits()
    if max_record_bytes is not None:
        limits = dataclasses.replace(limits, max_record_bytes=max_record_bytes)
    return limits


def ingest_drops(paths: Iterable[Path | str], max_record_bytes: int | None = None,
                 field_map: dict[str, str] | None = None, limits: IngestLimits | None = None,
                 roots: list[Path] | None = None) -> IngestResult:
    """Ingest drop files in the given order, into memory (``ingest_to_files`` streams to disk instead).

    The drop id is the file name without its format suffix (the whole name for a second file with the
    same stem); a record id is ``<drop_id>:<line_no>`` so it names exactly where the row came from.
    ``line_no`` is the 1-based line (JSONL), element (JSON array) or data row (CSV, Parquet); 0 marks a
    quarantine row that stands for a whole file or the rest of one (a limit, ``IngestLimits``).
    ``field_map`` (canonical field -> source column) names the columns to read; a file whose first row
    lacks a mapped column raises ``FieldMapError`` (a configuration mistake, not a bad row). With
    ``roots``, a file (a symlink) resolving outside all of them is refused.
    """
    paths = [Path(p) for p in paths]
    stats: Counter = Counter()
    fields_used: Counter = Counter()
    formats: dict[str, str] = {}
    rows: list[dict] = []
    rejected: list[dict] = []
    for is_record, row in iter_ingest(paths, field_map, _limits(limits, max_record_bytes), roots, stats,
                                      fields_used, formats):
        (rows if is_record else rejected).append(row)
    return IngestResult(records_frame(rows), quarantine_frame(rejected), stats["seen"], stats["blank"],
                        [str(p) for p in paths], formats, dict(fields_used))


@dataclass
class IngestSummary:
    """What ``ingest_to_files`` wrote: counts, not rows (those are on disk)."""

    rows_seen: int
    records: int
    quarantined: int
    blank_lines: int
    files: list[str]
    formats: dict[str, str]
    fields_used: dict[str, int]
    quarantine_reasons: dict[str, int]
    quarantine_sample: pd.DataFrame  # the first few quarantine rows of each reason kind


def ingest_to_files(paths: Iterable[Path | str], records_path: Path, quarantine_path: Path,
                    field_map: dict[str, str] | None = None, limits: IngestLimits | None = None,
                    roots: list[Path] | None = None, batch_rows: int = 20_000) -> IngestSummary:
    """Ingest streamed to disk: records to Parquet in row groups of ``batch_rows``, quarantine to JSON Lines.

    Memory holds one batch, whatever the size of the drop.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = [Path(p) for p in paths]
    stats: Counter = Counter()
    fields_used: Counter = Counter()
    reasons: Counter = Counter()
    formats: dict[str, str] = {}
    sample: list[dict] = []
    schema = pa.Schema.from_pandas(records_frame([]), preserve_index=False)
    batch: list[dict] = []
    n_records = n_quarantined = 0
    with pq.ParquetWriter(records_path, schema) as writer, quarantine_path.open("w", encoding="utf-8") as qfile:
        def flush() -> None:
            writer.write_table(pa.Table.from_pandas(records_frame(batch), schema=schema, preserve_index=False))
            batch.clear()

        for is_record, row in iter_ingest(paths, field_map, limits, roots, stats, fields_used, formats):
            if is_record:
                batch.append(row)
                n_records += 1
                if len(batch) >= batch_rows:
                    flush()
                continue
            n_quarantined += 1
            kind = row["reason"].split(":", 1)[0]
            reasons[kind] += 1
            if reasons[kind] <= 3:
                sample.append(row)
            qfile.write(json.dumps(row, ensure_ascii=False) + "\n")
        if batch or not n_records:
            flush()
    return IngestSummary(stats["seen"], n_records, n_quarantined, stats["blank"], [str(p) for p in paths], formats,
                         dict(fields_used), dict(reasons), quarantine_frame(sample))
