"""Eval report rendering: ROUGE-L, a Markdown summary and one self-contained HTML page.

A plain module (no Dagster): the eval_report asset calls it with the report dict it writes as report.json.
matplotlib and rouge_score are imported lazily so that loading the code location stays fast.
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
from pathlib import Path
from typing import Any

from ft_assets.evaluation.gates import forgetting_loss

MAX_FAILURES = 5
MD_CELL_CHARS = 80
HTML_CELL_CHARS = 400
METRIC_LABELS = {"exact_match": "exact match", "execution_accuracy": "execution accuracy", "rouge_l": "ROUGE-L",
                 "chrf": "chrF", "bleu": "BLEU", "macro_f1": "macro-F1", "numeric_match": "numeric match"}
NOT_SCORES = {"perplexity", "n", "generation_seconds", "generations_reused_from"}

_scorer = None  # rouge_scorer.RougeScorer, built on first use


def rouge_l(predicted: str, gold: str) -> float:
    """ROUGE-L F-measure of ``predicted`` against ``gold`` (rouge_score's lowercasing alphanumeric tokenizer)."""
    global _scorer
    if _scorer is None:
        from rouge_score import rouge_scorer

        _scorer = rouge_scorer.RougeScorer(["rougeL"])
    return float(_scorer.score(gold, predicted)["rougeL"].fmeasure)


# --- shared helpers ------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, non-numeric, NaN or infinite)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value) if math.isfinite(float(value)) else None


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return str(value)


def _shorten(text: Any, limit: int) -> str:
    text = " ".join(str(text if text is not None else "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _variant_names(report: dict) -> list[str]:
    """Models with metrics first, then variants that only have size/load information."""
    names = list(report.get("models") or {})
    return names + [n for n in (report.get("variants") or {}) if n not in names]


def metric_names(report: dict) -> list[str]:
    """The task's metrics (the report's ``metric_names``; else every score-like key, first seen first)."""
    if report.get("metric_names"):
        return list(report["metric_names"])
    names: list[str] = []
    for m in (report.get("models") or {}).values():
        names += [k for k in m if k not in NOT_SCORES and k not in names]
    return names


def _label(name: str) -> str:
    return METRIC_LABELS.get(name, name.replace("_", " "))


def _metric_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of the metrics table (size/load columns only when some variant has them)."""
    models = report.get("models") or {}
    variants = report.get("variants") or {}
    names = _variant_names(report)
    has_size = any((variants.get(n) or {}).get("size_bytes") is not None for n in names)
    has_load = any((variants.get(n) or {}).get("load_seconds") is not None for n in names)
    scores = metric_names(report)
    header = ["model", *[_label(k) for k in scores], "perplexity", "n"]
    header += ["size (MB)"] * has_size + ["load s"] * has_load
    rows = []
    for name in names:
        m, v = models.get(name) or {}, variants.get(name) or {}
        row = [name, *[_fmt(m.get(k)) for k in scores], _fmt(m.get("perplexity")), _fmt(m.get("n"))]
        if has_size:
            size = _number(v.get("size_bytes"))
            row.append(_fmt(size / 1e6, 1) if size is not None else "–")
        if has_load:
            row.append(_fmt(_number(v.get("load_seconds")), 1))
        rows.append(row)
    return header, rows


def _gate_rows(report: dict) -> list[tuple[bool, list[str]]]:
    return [(bool(g.get("passed")), [str(g.get("name", "?")), "yes" if g.get("passed") else "NO",
                                     _fmt(g.get("value")), _fmt(g.get("threshold")), str(g.get("detail") or "")])
            for g in report.get("gates") or []]


def _notes(report: dict) -> list[str]:
    notes = []
    if report.get("task"):
        notes.append(f"Task: {report['task']}; primary metric: {report.get('primary_metric')}")
    if report.get("eval_rows") is not None:
        notes.append(f"Eval rows: {report['eval_rows']}")
    for name, source in (report.get("reused_generations") or {}).items():
        if source.startswith("policy"):
            notes.append(f"{name}: generations and perplexity reused from the {source} ranking (same model, rows "
                         "and generation settings); metrics rescored")
        else:
            notes.append(f"{name}: generations and perplexity reused from {source} (merged_matches_adapter holds: "
                         "logit-identical); metrics rescored")
    cache = report.get("base_cache")
    if cache:
        notes.append(f"base: {'cache hit' if cache.get('hit') else 'evaluated and cached'} (key {cache.get('key')})")
    return [f"- {n}" for n in notes]


def _forgetting_lines(report: dict) -> list[str]:
    f = report.get("forgetting")
    if not f:
        return []
    if "skipped" in f:
        return ["", "## Forgetting (general ability)", "", f"Skipped: {f['skipped']}"]
    return ["", "## Forgetting (general ability)", "",
            *_md_table(["set", "scorer", "n", "base", "tuned", "loss", "tolerance"],
                       [[str(f.get("path")), str(f.get("scorer")), _fmt(f.get("n")), _fmt(f.get("base")),
                         _fmt(f.get("tuned")), _fmt(forgetting_loss(f)), _fmt(f.get("tolerance"))]])]


def _policy_lines(report: dict) -> list[str]:
    p = report.get("policy")
    if not p:
        return []
    lines = ["", "## Policy", "", f"Shipped policy: {p.get('chosen')} ({p.get('reason', '')})"]
    prefs = p.get("preference_metrics") or {}
    if prefs:
        lines += ["", *_md_table(["adapter", "prefers chosen", "mean log-prob margin", "pairs"],
                                 [[k, _fmt(v.get("prefers_chosen")), _fmt(v.get("mean_margin")), _fmt(v.get("pairs"))]
                                  for k, v in prefs.items()])]
    return lines


def _failure_samples(report: dict) -> dict[str, list[dict]]:
    return {name: list(rows)[:MAX_FAILURES] for name, rows in (report.get("failures") or {}).items() if rows}


# --- Markdown ------------------------------------------------------------------------


def _md_cell(text: Any, limit: int = MD_CELL_CHARS) -> str:
    return _shorten(text, limit).replace("|", "\\|")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def markdown_report(report: dict) -> str:
    """The report as Markdown: metrics table, gates table and a few failures per variant."""
    header, rows = _metric_rows(report)
    lines = ["## Metrics", ""]
    lines += _md_table(header, rows) if rows else ["_no models were evaluated_"]
    lines += [""] + _notes(report)
    lines += _forgetting_lines(report) + _policy_lines(report)
    gates = _gate_rows(report)
    lines += ["", "## Gates", ""]
    lines += _md_table(["gate", "passed", "value", "threshold", "detail"], [r for _, r in gates]) if gates \
        else ["_no gates_"]
    failures = _failure_samples(report)
    if failures:
        lines += ["", "## Failures"]
        for name, samples in failures.items():
            lines += ["", f"### {_md_cell(name)}", ""]
            lines += _md_table(["question", "expected", "predicted"],
                               [[s.get("question", ""), s.get("gold", ""), s.get("predicted", "")] for s in samples])
    return "\n".join(lines) + "\n"


# --- HTML ----------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png_data_uri(fig) -> str:
    """Render ``fig`` to a base64 PNG data URI and close it."""
    plt = _pyplot()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _metrics_chart(report: dict) -> str | None:
    models = report.get("models") or {}
    if not models:
        return None
    plt = _pyplot()
    names = list(models)
    bars_of = [(k, _label(k)) for k in metric_names(report)] or [("exact_match", "exact match")]
    width = 0.8 / len(bars_of)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(names)), 4))
    for i, (key, label) in enumerate(bars_of):
        values = [_number(models[n].get(key)) for n in names]
        xs = [j + (i - (len(bars_of) - 1) / 2) * width for j in range(len(names))]
        bars = ax.bar(xs, [v if v is not None else math.nan for v in values], width, label=label)
        ax.bar_label(bars, labels=[_fmt(v, 2) if v is not None else "" for v in values], fontsize=7, padding=1)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1.22)  # headroom for the legend above bars at 1.0
    ax.set_ylabel("score")
    ax.set_title("Accuracy per model variant")
    ax.legend(loc="upper center", fontsize=8, ncols=len(bars_of), frameon=False)
    return _png_data_uri(fig)


def _perplexity_chart(report: dict) -> str | None:
    models = report.get("models") or {}
    if not models:
        return None
    plt = _pyplot()
    names = list(models)
    values = [_number(models[n].get("perplexity")) for n in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(names)), 3.5))
    bars = ax.bar(names, [v if v is not None else math.nan for v in values], color="tab:purple")
    ax.bar_label(bars, labels=[_fmt(v, 2) if v is not None else "n/a" for v in values], fontsize=8)
    finite = [v for v in values if v is not None and v > 0]
    if finite and max(finite) / min(finite) > 50:
        ax.set_yscale("log")  # a base model's perplexity can dwarf the fine-tuned ones
    ax.set_ylabel("perplexity (lower is better)")
    ax.set_title("Completion perplexity per model variant")
    return _png_data_uri(fig)


def _loss_chart(loss_history: list[dict]) -> str | None:
    points = [(r.get("step", i), _number(r.get("loss"))) for i, r in enumerate(loss_history or [])]
    points = [(s, v) for s, v in points if v is not None]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([s for s, _ in points], [v for _, v in points], marker="." if len(points) < 50 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    return _png_data_uri(fig)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_table(header: list[str], rows: list[list[str]], row_classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{_e(row_classes[i])}"' if row_classes else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(uri: str | None, alt: str, missing: str) -> str:
    return f'<img src="{uri}" alt="{_e(alt)}">' if uri else f'<p class="note">{_e(missing)}</p>'


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td { font-family: ui-monospace, monospace; font-size: 0.85rem; max-width: 28rem; overflow-wrap: anywhere; }
tr.pass td { background: #e6f4ea; }
tr.fail td { background: #fce8e6; }
.note { color: #666; font-style: italic; }
img { max-width: 100%; display: block; margin: 0.5rem 0 1.5rem; }
"""


def render_html(report: dict, loss_history: list[dict], out_path: Path) -> Path:
    """Write the report as one self-contained HTML file (plots embedded as PNG data URIs) and return its path."""
    out_path = Path(out_path)
    generation = report.get("generation") or {}
    settings = [[k, _fmt(v)] for k, v in generation.items()]
    if report.get("eval_rows") is not None:
        settings.append(["eval rows", _fmt(report["eval_rows"])])
    header, rows = _metric_rows(report)
    gates = _gate_rows(report)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>ftops eval report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>ftops eval report</h1>",
        "<h2>Generation settings</h2>",
        _html_table(["setting", "value"], settings) if settings else '<p class="note">not recorded</p>',
        "<h2>Metrics</h2>",
        _html_table(header, rows) if rows else '<p class="note">no models were evaluated</p>',
        _img(_metrics_chart(report), "the task's metrics per variant",
             "no metrics to plot"),
        _img(_perplexity_chart(report), "perplexity per variant", "no perplexity to plot"),
        *[f'<p class="note">{_e(n[2:])}</p>' for n in _notes(report)],
        *([f"<pre>{_e(chr(10).join(_forgetting_lines(report) + _policy_lines(report)))}</pre>"]
          if report.get("forgetting") or report.get("policy") else []),
        "<h2>Training loss</h2>",
        _img(_loss_chart(loss_history), "training loss per step", "no training loss history was recorded"),
        "<h2>Gates</h2>",
        _html_table(["gate", "passed", "value", "threshold", "detail"], [r for _, r in gates],
                    ["pass" if ok else "fail" for ok, _ in gates]) if gates else '<p class="note">no gates</p>',
        "<h2>Failure samples</h2>",
    ]
    failures = _failure_samples(report)
    for name, samples in failures.items():
        parts.append(f"<h3>{_e(name)}</h3>")
        parts.append(_html_table(
            ["question", "expected", "predicted"],
            [[_shorten(s.get(k, ""), HTML_CELL_CHARS) for k in ("question", "gold", "predicted")] for s in samples]))
    if not failures:
        parts.append('<p class="note">no failures recorded</p>')
    parts.append("</body></html>")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return out_path
