"""SQL metrics: extraction from model output, exact match, and safe, bounded execution match."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from ft_assets.data.text_to_sql import build_database
from ft_assets.evaluation.sql_metrics import exact_match, execution_match, extract_sql, run_query

NAMES_IN_SALES = "SELECT name FROM employees WHERE department = 'Sales';"


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return build_database(tmp_path_factory.mktemp("db") / "company.db")


# --- extract_sql -----------------------------------------------------------------


def test_extract_sql_from_chatty_output():
    generated = "Sure! Here is the query you need:\nSELECT name FROM employees; This lists every employee."
    assert extract_sql(generated) == "SELECT name FROM employees;"


def test_extract_sql_from_code_fence():
    generated = "Here you go:\n```sql\nSELECT COUNT(*)\nFROM employees\n```\nLet me know if that helps."
    assert extract_sql(generated) == "SELECT COUNT(*)\nFROM employees;"


def test_extract_sql_from_bare_fence():
    assert extract_sql("```\nselect name from employees;\n```") == "select name from employees;"


def test_extract_sql_keeps_only_first_statement():
    assert extract_sql("SELECT 1; DROP TABLE employees;") == "SELECT 1;"


def test_extract_sql_keeps_with_queries():
    sql = "WITH s AS (SELECT * FROM employees) SELECT COUNT(*) FROM s;"
    assert extract_sql(f"Answer: {sql}") == sql


def test_extract_sql_ignores_select_and_with_in_prose():
    assert extract_sql("With pleasure! SELECT name FROM employees;") == "SELECT name FROM employees;"
    assert extract_sql("To select the names use: SELECT name FROM employees;") == "SELECT name FROM employees;"


def test_extract_sql_finds_lower_case_sql_in_chatter():
    assert extract_sql("the answer is: select name from employees; done") == "select name from employees;"


def test_extract_sql_of_empty_output_is_empty():
    assert extract_sql("") == ""
    assert extract_sql("   \n") == ""


# --- exact_match ------------------------------------------------------------------


def test_exact_match_ignores_case_whitespace_and_trailing_semicolon():
    assert exact_match("select name\n  from employees  WHERE department = 'Sales'", NAMES_IN_SALES)


def test_exact_match_rejects_different_query():
    assert not exact_match("SELECT name FROM employees WHERE department = 'Legal';", NAMES_IN_SALES)
    assert not exact_match("SELECT id FROM employees WHERE department = 'Sales';", NAMES_IN_SALES)


# --- execution_match ----------------------------------------------------------------


def test_execution_match_same_query(db):
    assert execution_match(db, NAMES_IN_SALES, NAMES_IN_SALES)


def test_execution_match_is_order_insensitive_without_order_by(db):
    predicted = "SELECT name FROM employees WHERE department = 'Sales' ORDER BY name DESC;"
    assert run_query(db, predicted) != run_query(db, NAMES_IN_SALES)  # the rows really come back in another order
    assert execution_match(db, predicted, NAMES_IN_SALES)


def test_execution_match_is_order_sensitive_when_gold_orders(db):
    gold = "SELECT name FROM employees ORDER BY salary DESC LIMIT 5;"
    reversed_order = ("SELECT name FROM (SELECT name, salary FROM employees ORDER BY salary DESC LIMIT 5) "
                      "ORDER BY salary;")
    assert execution_match(db, "select name from employees order by salary desc limit 5", gold)
    assert not execution_match(db, reversed_order, gold)


def test_execution_match_counts_duplicate_rows(db):
    gold = "SELECT department FROM employees;"
    assert not execution_match(db, "SELECT DISTINCT department FROM employees;", gold)


def test_equivalent_but_different_sql_matches_by_execution(db):
    predicted = "SELECT e.name FROM employees AS e WHERE e.department IN ('Sales');"
    assert not exact_match(predicted, NAMES_IN_SALES)
    assert execution_match(db, predicted, NAMES_IN_SALES)


def test_wrong_query_does_not_match(db):
    assert not execution_match(db, "SELECT name FROM employees WHERE department = 'Legal';", NAMES_IN_SALES)


def test_invalid_or_empty_prediction_does_not_match(db):
    assert not execution_match(db, "SELEC name FROM employees;", NAMES_IN_SALES)
    assert not execution_match(db, "SELECT name FROM nowhere;", NAMES_IN_SALES)
    assert not execution_match(db, "", NAMES_IN_SALES)


def test_gold_that_does_not_run_is_an_error(db):
    with pytest.raises(ValueError, match="gold SQL"):
        execution_match(db, NAMES_IN_SALES, "SELECT nope FROM nowhere;")


@pytest.mark.parametrize("statement", [
    "DROP TABLE employees;",
    "DELETE FROM employees;",
    "UPDATE employees SET salary = 0;",
    "INSERT INTO departments VALUES ('X', 1, 1);",
])
def test_destructive_prediction_cannot_modify_the_database(tmp_path, statement):
    db = build_database(tmp_path / "company.db")
    before = db.read_bytes()
    assert run_query(db, statement) is None
    assert not execution_match(db, statement, "SELECT COUNT(*) FROM employees;")
    assert db.read_bytes() == before
    con = sqlite3.connect(db)
    try:
        assert con.execute("SELECT COUNT(*) FROM employees").fetchone() == (80,)
    finally:
        con.close()


def test_multiple_statements_are_rejected_not_raised(db):
    assert run_query(db, "SELECT 1; SELECT 2;") is None


def test_run_query_returns_rows(db):
    assert run_query(db, "SELECT COUNT(*) FROM employees;") == [(80,)]


def test_runaway_query_is_stopped(db):
    runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c;"
    start = time.monotonic()
    assert run_query(db, runaway) is None
    assert time.monotonic() - start < 5
