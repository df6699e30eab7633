"""Eval report rendering: ROUGE-L, the Markdown summary and the self-contained HTML page."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from ft_assets.evaluation.report import markdown_report, render_html, rouge_l

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
VARIANTS = ("base", "adapter", "merged", "quantized", "quantized_int8")


def make_report() -> dict:
    models = {name: {"exact_match": 0.1 * i, "execution_accuracy": 0.1 * i + 0.05, "perplexity": 40.0 / (i + 1),
                     "rouge_l": 0.5 + 0.1 * i, "n": 20, "generation_seconds": 3.2}
              for i, name in enumerate(VARIANTS)}
    variants = {"base": {"kind": "base", "method": "hub", "size_bytes": 270_000_000, "load_seconds": 1.5},
                "adapter": {"kind": "adapter", "method": "lora", "size_bytes": 4_500_000, "load_seconds": 2.0},
                "merged": {"kind": "merged", "method": "merge_and_unload", "size_bytes": None, "load_seconds": None},
                "quantized": {"kind": "quantized", "method": "nf4", "size_bytes": 120_000_000, "load_seconds": 3.1}}
    gates = [{"name": "execution_accuracy_min", "passed": True, "value": 0.45, "threshold": 0.3,
              "detail": "adapter beats the floor"},
             {"name": "quantized_drop_max", "passed": False, "value": 0.12, "threshold": 0.05,
              "detail": "quantized | adapter gap too large"}]
    failures = {"adapter": [{"question": f"How many employees in dept {i}?",
                             "gold": f"SELECT COUNT(*) FROM employees WHERE dept_id = {i};",
                             "predicted": "SELECT name FROM employees WHERE a = 1 OR b = 2 | 3;"} for i in range(8)],
                "quantized": [{"question": "<script>alert('x')</script> list departments",
                               "gold": "SELECT name FROM departments;", "predicted": "SELECT * FROM t;"}]}
    return {"models": models, "variants": variants, "gates": gates,
            "generation": {"do_sample": False, "max_new_tokens": 64, "batch_size": 16},
            "failures": failures, "eval_rows": 20}


LOSS = [{"step": s, "loss": 3.0 / s, "learning_rate": 2e-4, "grad_norm": 1.0, "tokens_per_s": 900.0}
        for s in range(1, 31)]


# --- rouge_l ---------------------------------------------------------------------------


def test_rouge_l_identical_sql_is_one():
    sql = "SELECT name FROM employees WHERE salary > 50000;"
    assert rouge_l(sql, sql) == pytest.approx(1.0)
    # the default tokenizer lowercases and ignores punctuation and spacing
    assert rouge_l("select name from employees where salary>50000", sql) == pytest.approx(1.0)


def test_rouge_l_disjoint_is_zero():
    assert rouge_l("SELECT name FROM employees;", "DELETE departments budget") == 0.0
    assert rouge_l("", "SELECT 1;") == 0.0


def test_rouge_l_partial_overlap_is_between():
    gold = "SELECT name FROM employees WHERE department = 'Sales';"
    close = rouge_l("SELECT name FROM employees WHERE department = 'Finance';", gold)
    far = rouge_l("SELECT COUNT(*) FROM projects;", gold)
    assert 0.0 < far < close < 1.0


def test_rouge_l_is_symmetric_and_order_sensitive():
    a, b = "SELECT name FROM employees", "SELECT name, salary FROM employees ORDER BY salary"
    assert rouge_l(a, b) == pytest.approx(rouge_l(b, a))
    # longest common subsequence: reordered tokens score below the identical sequence
    assert rouge_l("FROM employees SELECT name", a) < 1.0


# --- markdown_report -------------------------------------------------------------------


def test_markdown_has_a_row_per_variant_and_gate():
    md = markdown_report(make_report())
    for name in VARIANTS:
        assert re.search(rf"^\| {name} \|", md, re.M), name
    assert "| model | exact match | execution accuracy | ROUGE-L | perplexity | n | size (MB) | load s |" in md
    assert "| base | 0.000 | 0.050 | 0.500 | 40.000 | 20 | 270.0 | 1.5 |" in md
    assert "| merged | 0.200 | 0.250 | 0.700 | 13.333 | 20 | – | – |" in md
    assert re.search(r"^\| execution_accuracy_min \| yes \| 0\.450 \| 0\.300 \|", md, re.M)
    assert re.search(r"^\| quantized_drop_max \| NO \| 0\.120 \| 0\.050 \|", md, re.M)


def test_markdown_escapes_pipes_and_caps_failures():
    md = markdown_report(make_report())
    assert "quantized \\| adapter gap too large" in md
    assert "2 \\| 3;" in md
    # every table line keeps the column count of its header: no unescaped | leaked into a cell
    for line in md.splitlines():
        if line.startswith("| question"):
            assert len(re.split(r"(?<!\\)\|", line)) == 5
        elif line.startswith("| How many") or line.startswith("| <script>"):
            assert len(re.split(r"(?<!\\)\|", line)) == 5, line
    assert md.count("| How many employees") == 5  # 8 adapter failures, capped at 5
    assert "### adapter" in md and "### quantized" in md


def test_markdown_tolerates_missing_keys():
    md = markdown_report({"models": {"base": {"exact_match": 0.5}}})
    assert "| base | 0.500 | – | – |" in md  # exact match, perplexity, n
    assert "size (MB)" not in md
    assert markdown_report({})  # nothing at all still renders


def test_markdown_columns_are_the_tasks_metrics():
    report = {"models": {"base": {"numeric_match": 0.1, "exact_match": 0.0, "perplexity": 9.0, "n": 5},
                         "adapter": {"numeric_match": 0.6, "exact_match": 0.2, "perplexity": 3.0, "n": 5}},
              "metric_names": ["numeric_match", "exact_match"], "task": "math", "primary_metric": "numeric_match",
              "reused_generations": {"merged": "adapter"},
              "forgetting": {"path": "gsm8k.jsonl", "scorer": "numeric_match", "n": 5, "base": 0.4, "tuned": 0.2,
                             "tolerance": 0.05}}
    md = markdown_report(report)
    assert "| model | numeric match | exact match | perplexity | n |" in md
    assert "| adapter | 0.600 | 0.200 | 3.000 | 5 |" in md
    assert "execution accuracy" not in md and "ROUGE-L" not in md
    assert "primary metric: numeric_match" in md
    assert "merged: generations and perplexity reused from adapter" in md
    assert "| gsm8k.jsonl | numeric_match | 5 | 0.400 | 0.200 | 0.200 | 0.050 |" in md


# --- render_html -----------------------------------------------------------------------


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(b64, validate=True) for b64 in DATA_URI.findall(page)]


def test_render_html_is_self_contained_with_three_plots(tmp_path: Path):
    out = render_html(make_report(), LOSS, tmp_path / "sub" / "report.html")
    assert out == tmp_path / "sub" / "report.html" and out.is_file()
    page = out.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?https?://""", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert page.count("data:image/png;base64,") == 3
    images = _images(page)
    assert len(images) == 3
    assert all(img.startswith(PNG_SIGNATURE) for img in images)
    for name in VARIANTS:
        assert f"<td>{name}</td>" in page
    assert '<tr class="fail"><td>quantized_drop_max</td><td>NO</td>' in page
    assert '<tr class="pass"><td>execution_accuracy_min</td><td>yes</td>' in page
    assert "max_new_tokens" in page


def test_render_html_escapes_text(tmp_path: Path):
    page = render_html(make_report(), LOSS, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; list departments" in page


def test_render_html_without_loss_history_skips_the_curve(tmp_path: Path):
    page = render_html(make_report(), [], tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2
    assert all(img.startswith(PNG_SIGNATURE) for img in _images(page))
    assert "no training loss history" in page


def test_render_html_tolerates_sparse_report(tmp_path: Path):
    report = {"models": {"base": {"exact_match": 0.2, "perplexity": float("inf")}}}
    history = [{"step": 1, "eval_loss": 2.0}, {"step": 2, "loss": 1.5}]  # eval-only entries carry no "loss"
    page = render_html(report, history, tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 3
    assert render_html({}, [], tmp_path / "empty.html").read_text(encoding="utf-8").count("data:image") == 0
