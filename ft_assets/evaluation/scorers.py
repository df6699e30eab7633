"""Scorers: plain functions that grade generations against references, chosen by a task's metric specs.

Each scorer is called as ``scorer(generations, references, rows, **options)`` and returns a :class:`Score`
(the metric in [0, 1], one value per example, and what was extracted from each generation). A task names
them in its metric specs: ``{"scorer": "numeric_match"}``, ``{"scorer": "sql_execution", "db_folder": ...}``,
or a user's own function by import path ``{"scorer": "my_pkg.metrics:score"}``. No Dagster here.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ft_assets.evaluation.sql_metrics import execution_match, extract_sql, normalize_sql


@dataclass
class Score:
    value: float
    per_example: list[float]
    extracted: list[str]


Scorer = Callable[..., Score]

_WS = re.compile(r"\s+")
# 1,000 / 1,000.5 (thousands groups), 3.0, .5, -12; a minus only where it is a sign, not "16-3".
_NUMBER = re.compile(r"(?<![\w.)])-?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)")
_GSM8K_ANSWER = re.compile(r"####\s*(.*)")
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)
_LABEL_PUNCT = " \t\n\"'`.,;:!?()[]{}*"


# --- extraction ---------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """Whitespace collapsed, case folded, trailing sentence punctuation dropped."""
    return _WS.sub(" ", text).strip().rstrip(".;!").strip().casefold()


def parse_number(text: str) -> float | None:
    """The answer number of a text: after GSM8K's last ``####`` if present, else the last number in it."""
    marked = _GSM8K_ANSWER.findall(text)
    if marked:
        found = _NUMBER.findall(marked[-1].replace("$", ""))
        if found:
            return float(found[0].replace(",", ""))
    found = _NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def _format_number(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if value.is_integer() else repr(value)


def extract_json(text: str) -> str:
    """The JSON part of a generation: all of it, a fenced block, or the outermost {...} / [...] span."""
    stripped = text.strip()
    fenced = _FENCE.search(stripped)
    if fenced:
        return fenced.group(1).strip()
    if stripped[:1] in "{[":
        return stripped
    starts = [i for i in (stripped.find("{"), stripped.find("[")) if i >= 0]
    if not starts:
        return stripped
    start = min(starts)
    end = stripped.rfind("}" if stripped[start] == "{" else "]")
    return stripped[start:end + 1] if end > start else stripped[start:]


EXTRACTORS: dict[str, Callable[[str], str]] = {
    "none": lambda text: text,
    "sql": extract_sql,
    "number": lambda text: _format_number(parse_number(text)),
    "json": extract_json,
}


def _extract(generations: list[str], how: str) -> list[str]:
    if how not in EXTRACTORS:
        raise ValueError(f"unknown extract {how!r}: use one of {sorted(EXTRACTORS)}")
    return [EXTRACTORS[how](g) for g in generations]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _check_lengths(generations: list[str], references: list[str]) -> None:
    if len(generations) != len(references):
        raise ValueError(f"{len(generations)} generations for {len(references)} references")


# --- scorers ------------------------------------------------------------------------------------


def exact_match(generations: list[str], references: list[str], rows: list[dict] | None = None, *,
                extract: str = "none") -> Score:
    """Normalized exact match (SQL-normalized when ``extract="sql"``)."""
    _check_lengths(generations, references)
    extracted = _extract(generations, extract)
    norm = normalize_sql if extract == "sql" else normalize_text
    per = [float(norm(p) == norm(r)) for p, r in zip(extracted, references, strict=True)]
    return Score(_mean(per), per, extracted)


def numeric_match(generations: list[str], references: list[str], rows: list[dict] | None = None, *,
                  tolerance: float = 1e-6) -> Score:
    """The generation's answer number equals the reference's (``#### N`` or the last number; 3.0 == 3)."""
    _check_lengths(generations, references)
    per, extracted = [], []
    for i, (generated, reference) in enumerate(zip(generations, references, strict=True)):
        gold = parse_number(reference)
        if gold is None:
            raise ValueError(f"reference {i} ({_row_id(rows, i)}) holds no number: {reference[:80]!r}")
        predicted = parse_number(generated)
        extracted.append(_format_number(predicted))
        per.append(float(predicted is not None and math.isclose(predicted, gold, rel_tol=1e-9, abs_tol=tolerance)))
    return Score(_mean(per), per, extracted)


def _row_id(rows: list[dict] | None, i: int) -> str:
    return str((rows[i] if rows and i < len(rows) else {}).get("record_id", f"row {i}"))


def database_path(db_folder: str | Path, db_id: str) -> Path:
    """``<db_folder>/<db_id>/<db_id>.sqlite`` (Spider's layout) or ``<db_folder>/<db_id>.sqlite``."""
    folder = Path(db_folder)
    for candidate in (folder / db_id / f"{db_id}.sqlite", folder / f"{db_id}.sqlite", folder / f"{db_id}.db"):
        if candidate.is_file():
            return candidate
    raise ValueError(f"no SQLite database for db_id {db_id!r} under {folder} (looked for "
                     f"{db_id}/{db_id}.sqlite and {db_id}.sqlite): set the sql_execution metric's db_folder")


def sql_execution(generations: list[str], references: list[str], rows: list[dict] | None = None, *,
                  db_folder: str = "", db_id: str = "") -> Score:
    """The extracted SQL returns the gold query's rows on the row's ``db_id`` database; SQL that errors scores 0."""
    _check_lengths(generations, references)
    if not db_folder:
        raise ValueError("sql_execution needs db_folder: a folder of <db_id>.sqlite or <db_id>/<db_id>.sqlite")
    extracted = [extract_sql(g) for g in generations]
    paths: dict[str, Path] = {}
    per = []
    for i, (predicted, gold) in enumerate(zip(extracted, references, strict=True)):
        row_db = (rows[i].get("db_id") if rows and i < len(rows) else None) or db_id
        if not row_db:
            raise ValueError(f"{_row_id(rows, i)} has no db_id and the metric names none: set db_id")
        path = paths.get(row_db) or paths.setdefault(row_db, database_path(db_folder, row_db))
        per.append(float(execution_match(path, predicted, gold)))
    return Score(_mean(per), per, extracted)


_rouge = None


def rouge_l(generations: list[str], references: list[str], rows: list[dict] | None = None, *,
            extract: str = "none") -> Score:
    """Mean ROUGE-L F-measure (rouge_score's tokenizer)."""
    global _rouge
    _check_lengths(generations, references)
    if _rouge is None:
        from rouge_score import rouge_scorer

        _rouge = rouge_scorer.RougeScorer(["rougeL"])
    extracted = _extract(generations, extract)
    per = [float(_rouge.score(r, p)["rougeL"].fmeasure) for p, r in zip(extracted, references, strict=True)]
    return Score(_mean(per), per, extracted)


def chrf(generations: list[str], references: list[str], rows: list[dict] | None = None, *,
         extract: str = "none") -> Score:
    """sacrebleu's corpus chrF, scaled to [0, 1]; per example its sentence chrF."""
    from sacrebleu.metrics import CHRF

    _check_lengths(generations, references)
    extracted = _extract(generations, extract)
    metric = CHRF()
    per = [metric.sentence_score(p, [r]).score / 100 for p, r in zip(extracted, references, strict=True)]
    value = metric.corpus_score(extracted, [references]).score / 100 if extracted else 0.0
    return Score(value, per, extracted)


def bleu(generations: list[str], references: list[str], rows: list[dict] | None = None, *,
         extract: str = "none") -> Score:
    """sacrebleu's corpus BLEU, scaled to [0, 1]; per example its sentence BLEU (effective order)."""
    from sacrebleu.metrics import BLEU

    _check_lengths(generations, references)
    extracted = _extract(generations, extract)
    sentence = BLEU(effective_order=True)
    per = [sentence.sentence_score(p, [r]).score / 100 for p, r in zip(extracted, references, strict=True)]
    value = BLEU().corpus_score(extracted, [references]).score / 100 if extracted else 0.0
    return Score(value, per, extracted)


def _parse_json(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return False, None


def json_valid(generations: list[str], references: list[str], rows: list[dict] | None = None) -> Score:
    """Share of generations holding parseable JSON (a fenced block or a {...} span counts)."""
    _check_lengths(generations, references)
    extracted = [extract_json(g) for g in generations]
    per = [float(_parse_json(e)[0]) for e in extracted]
    return Score(_mean(per), per, extracted)


def json_schema(generations: list[str], references: list[str], rows: list[dict] | None = None, *,
                schema: dict | str | None = None) -> Score:
    """Share of generations whose JSON conforms to ``schema`` (a dict, or a path to a schema file)."""
    import jsonschema

    _check_lengths(generations, references)
    if schema is None:
        raise ValueError("json_schema needs a schema: a JSON-schema dict or the path of a .json schema file")
    if isinstance(schema, str):
        schema = json.loads(Path(schema).read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)  # a broken schema is the recipe's error, not the model's
    validator = validator_cls(schema)
    extracted = [extract_json(g) for g in generations]
    per = []
    for text in extracted:
        ok, value = _parse_json(text)
        per.append(float(ok and validator.is_valid(value)))
    return Score(_mean(per), per, extracted)


def _normalize_label(text: str) -> str:
    return _WS.sub(" ", text).strip(_LABEL_PUNCT).casefold()


def _label_set(references: list[str], labels: list[str] | None) -> dict[str, str]:
    """normalized -> canonical label; every reference must be one of ``labels`` when they are given."""
    if not labels:
        return {_normalize_label(r): r.strip() for r in references}
    known = {_normalize_label(label): label for label in labels}
    strays = sorted({r for r in references if _normalize_label(r) not in known})
    if strays:
        raise ValueError(f"references {strays[:5]} are not in the label set {sorted(labels)}: "
                         "add them to the metric's labels")
    return known


def extract_label(generated: str, known: dict[str, str]) -> str:
    """The label a generation names: all of it, its first line, or the only label it mentions; else ''."""
    text = _normalize_label(generated)
    if text in known:
        return known[text]
    first = _normalize_label(generated.strip().split("\n", 1)[0]) if generated.strip() else ""
    if first in known:
        return known[first]
    mentioned = {canonical for norm, canonical in known.items() if norm and re.search(
        rf"(?<!\w){re.escape(norm)}(?!\w)", text)}
    return mentioned.pop() if len(mentioned) == 1 else ""


def _labels_of(generations: list[str], references: list[str], labels: list[str] | None
               ) -> tuple[list[str], list[str], dict[str, str]]:
    _check_lengths(generations, references)
    known = _label_set(references, labels)
    predicted = [extract_label(g, known) for g in generations]
    gold = [known[_normalize_label(r)] for r in references]
    return predicted, gold, known


def label_accuracy(generations: list[str], references: list[str], rows: list[dict] | None = None, *,
                   labels: list[str] | None = None) -> Score:
    """Share of generations naming the reference label; a label outside the set counts wrong."""
    predicted, gold, _ = _labels_of(generations, references, labels)
    per = [float(p == g) for p, g in zip(predicted, gold, strict=True)]
    return Score(_mean(per), per, predicted)


def macro_f1(generations: list[str], references: list[str], rows: list[dict] | None = None, *,
             labels: list[str] | None = None) -> Score:
    """Unweighted mean of per-label F1 over the label set; unknown predictions are misses, no label's hits."""
    predicted, gold, known = _labels_of(generations, references, labels)
    f1s = []
    for label in sorted(set(known.values())):
        tp = sum(p == label and g == label for p, g in zip(predicted, gold, strict=True))
        fp = sum(p == label and g != label for p, g in zip(predicted, gold, strict=True))
        fn = sum(p != label and g == label for p, g in zip(predicted, gold, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    per = [float(p == g) for p, g in zip(predicted, gold, strict=True)]
    return Score(_mean(f1s), per, predicted)


SCORERS: dict[str, Scorer] = {
    "exact_match": exact_match, "numeric_match": numeric_match, "sql_execution": sql_execution,
    "rouge_l": rouge_l, "chrf": chrf, "bleu": bleu, "json_valid": json_valid, "json_schema": json_schema,
    "label_accuracy": label_accuracy, "macro_f1": macro_f1,
}


def get_scorer(name_or_import_path: str) -> Scorer:
    """A registered scorer by name, or a user's function by ``package.module:function``."""
    if name_or_import_path in SCORERS:
        return SCORERS[name_or_import_path]
    module_name, sep, attribute = name_or_import_path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"unknown scorer {name_or_import_path!r}: use one of {sorted(SCORERS)} "
                         "or 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import scorer module {module_name!r} (from {name_or_import_path!r}): {exc}"
                         ) from exc
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ValueError(f"{module_name!r} has no function {attribute!r} (from {name_or_import_path!r})")
    return function


def _as_score(result: Any, n: int, name: str) -> Score:
    """A user scorer may return a Score, a list of per-example values, or one float."""
    if isinstance(result, Score):
        return result
    if isinstance(result, (list, tuple)):
        if len(result) != n:
            raise ValueError(f"scorer {name!r} returned {len(result)} values for {n} examples")
        per = [float(v) for v in result]
        return Score(_mean(per), per, [""] * n)
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        return Score(float(result), [], [])
    raise ValueError(f"scorer {name!r} returned {type(result).__name__}: return a Score, a list of floats or a float")


def score(metric_spec: dict, generations: list[str], references: list[str], rows: list[dict]) -> Score:
    """Run the scorer a metric spec names, with the spec's other keys as its options."""
    options = {k: v for k, v in metric_spec.items() if k != "scorer"}
    name = metric_spec.get("scorer")
    if not name:
        raise ValueError(f"metric spec {metric_spec} names no scorer")
    scorer = get_scorer(name)
    try:
        result = scorer(generations, references, rows, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc) or "positional argument" in str(exc):
            raise ValueError(f"scorer {name!r} does not take options {sorted(options)}: {exc}") from exc
        raise
    return _as_score(result, len(generations), name)
