"""The demo task: natural-language questions over a small SQLite schema, paired with SQL.

Everything here is deterministic (seeded), so the same call always writes the
same drops and builds the same database; evaluation runs gold and predicted
SQL against that database.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

DB_ID = "company"

SCHEMA_SQL = """
CREATE TABLE departments (name TEXT PRIMARY KEY, floor INTEGER, budget INTEGER);
CREATE TABLE employees (
  id INTEGER PRIMARY KEY, name TEXT, department TEXT REFERENCES departments(name),
  city TEXT, salary INTEGER, hire_year INTEGER
);
"""

# The compact form the model sees in its system prompt.
SCHEMA_SUMMARY = (
    "SQLite tables: departments(name, floor, budget); "
    "employees(id, name, department, city, salary, hire_year). "
    "Answer with one SQL query."
)

CITIES = ["Paris", "Berlin", "Oslo", "Lima", "Tokyo", "Madrid", "Toronto", "Nairobi"]
DEPARTMENTS = ["Sales", "Engineering", "Finance", "Marketing", "Legal", "Support"]
FIRST = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lea"]
LAST = ["Ito", "Khan", "Lopez", "Moreau", "Novak", "Okafor", "Park", "Quinn", "Rossi", "Silva"]


@dataclass(frozen=True)
class Template:
    questions: tuple[str, ...]
    sql: str


TEMPLATES: tuple[Template, ...] = (
    Template(
        ("How many employees work in {city}?", "Count the employees based in {city}.",
         "What is the number of staff located in {city}?"),
        "SELECT COUNT(*) FROM employees WHERE city = '{city}';",
    ),
    Template(
        ("List the names of employees in the {dept} department.", "Who works in {dept}?",
         "Show me everyone in {dept}."),
        "SELECT name FROM employees WHERE department = '{dept}';",
    ),
    Template(
        ("What is the average salary in {dept}?", "Give the mean salary of the {dept} department."),
        "SELECT AVG(salary) FROM employees WHERE department = '{dept}';",
    ),
    Template(
        ("Which employees were hired after {year}?", "List staff who joined after {year}.",
         "Name the employees with a hire year later than {year}."),
        "SELECT name FROM employees WHERE hire_year > {year};",
    ),
    Template(
        ("Show employees earning more than {amount}.", "Which employees have a salary above {amount}?"),
        "SELECT name FROM employees WHERE salary > {amount};",
    ),
    Template(
        ("Who are the {n} highest paid employees?", "List the top {n} earners."),
        "SELECT name FROM employees ORDER BY salary DESC LIMIT {n};",
    ),
    Template(
        ("What is the highest salary in {city}?", "Find the maximum salary paid in {city}."),
        "SELECT MAX(salary) FROM employees WHERE city = '{city}';",
    ),
    Template(
        ("How many employees does each department have in {city}?",
         "Count employees per department in {city}."),
        "SELECT department, COUNT(*) FROM employees WHERE city = '{city}' GROUP BY department;",
    ),
    Template(
        ("What is the budget of the {dept} department?", "How big is the {dept} budget?"),
        "SELECT budget FROM departments WHERE name = '{dept}';",
    ),
    Template(
        ("List employees who work on floor {floor}.", "Who sits on floor {floor}?"),
        "SELECT e.name FROM employees e JOIN departments d ON e.department = d.name "
        "WHERE d.floor = {floor};",
    ),
    Template(
        ("How many {dept} employees are in {city}?", "Count the {dept} staff in {city}.",
         "What is the headcount of {dept} in {city}?"),
        "SELECT COUNT(*) FROM employees WHERE department = '{dept}' AND city = '{city}';",
    ),
    Template(
        ("What is the total payroll of {dept}?", "Sum the salaries in the {dept} department."),
        "SELECT SUM(salary) FROM employees WHERE department = '{dept}';",
    ),
    Template(
        ("List {dept} employees hired after {year}.", "Who in {dept} joined after {year}?"),
        "SELECT name FROM employees WHERE department = '{dept}' AND hire_year > {year};",
    ),
    Template(
        ("Which employees in {city} earn more than {amount}?",
         "Show staff in {city} with a salary above {amount}."),
        "SELECT name FROM employees WHERE city = '{city}' AND salary > {amount};",
    ),
)

SLOT_VALUES: dict[str, list] = {
    "city": CITIES,
    "dept": DEPARTMENTS,
    "year": list(range(2012, 2024)),
    "amount": [40000, 50000, 60000, 70000, 80000, 90000],
    "n": [3, 5, 10],
    "floor": [1, 2, 3, 4],
}


def build_database(path: Path | str, seed: int = 7) -> Path:
    """Create the demo SQLite database at ``path`` (overwrites) and return it."""
    path = Path(path)
    path.unlink(missing_ok=True)
    rng = random.Random(seed)
    con = sqlite3.connect(path)
    con.executescript(SCHEMA_SQL)
    for i, dept in enumerate(DEPARTMENTS):
        con.execute("INSERT INTO departments VALUES (?, ?, ?)", (dept, i % 4 + 1, 100_000 * (i + 2)))
    for emp_id in range(1, 81):
        con.execute(
            "INSERT INTO employees VALUES (?, ?, ?, ?, ?, ?)",
            (emp_id, f"{rng.choice(FIRST)} {rng.choice(LAST)}", rng.choice(DEPARTMENTS),
             rng.choice(CITIES), rng.randrange(35_000, 120_000, 500), rng.randint(2010, 2024)),
        )
    con.commit()
    con.close()
    return path


def _pairs_per_template() -> list[list[tuple[str, str]]]:
    """Every (question, sql) each template can produce, in a fixed order."""
    per_template = []
    for template in TEMPLATES:
        slots = sorted(name for name in SLOT_VALUES if any("{" + name + "}" in q for q in template.questions))
        combos: list[dict] = [{}]
        for name in slots:
            combos = [{**c, name: v} for c in combos for v in SLOT_VALUES[name]]
        per_template.append(
            [(q.format(**combo), template.sql.format(**combo)) for combo in combos for q in template.questions]
        )
    return per_template


def generate_clean_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` distinct (question, sql) pairs, balanced across templates."""
    rng = random.Random(seed)
    pools = _pairs_per_template()
    for pool in pools:
        rng.shuffle(pool)
    out: list[tuple[str, str]] = []
    while len(out) < n and any(pools):
        for pool in pools:
            if pool and len(out) < n:
                out.append(pool.pop())
    rng.shuffle(out)
    return out


# --- noise, as real drops have it -------------------------------------------------

_EMAILS = ["jane.doe@example.com", "ops-team@corp.example.org", "m.rossi@mail.example.net"]
_PHONES = ["+1 415-555-0132", "(212) 555-0199", "+44 20 7946 0958"]


def _noisy(question: str, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.08:
        return f"<p>{question.replace(' ', ' <b>', 1)}</b></p>"
    if roll < 0.12:
        return f"{question}<br/>Thanks &amp; regards"
    if roll < 0.16:
        return f"{question} Reply to {rng.choice(_EMAILS)}"
    if roll < 0.19:
        return f"{question} Call me at {rng.choice(_PHONES)}."
    return question


def _near_duplicate(question: str, rng: random.Random) -> str:
    variants = [question.upper(), "  " + question.replace(" ", "  "), question.rstrip("?.") + " ?"]
    return rng.choice(variants)


# --- preference pairs: the gold SQL chosen, a plausible but wrong query rejected ------------------

# Each column swapped for another that exists, so the wrong query still reads like SQL.
_WRONG_COLUMN = {"salary": "hire_year", "hire_year": "salary", "city": "department", "department": "city",
                 "budget": "floor", "floor": "budget"}
_WRONG_AGGREGATE = {"COUNT(*)": "SUM(salary)", "AVG(": "SUM(", "SUM(": "AVG(", "MAX(": "MIN(", "DESC": "ASC"}


def corrupt_sql(sql: str, rng: random.Random) -> tuple[str, str]:
    """(a wrong query, what is wrong with it): a swapped column, a missing WHERE or a wrong aggregate."""
    options: list[tuple[str, str]] = []
    columns = [c for c in _WRONG_COLUMN if re.search(rf"\b{c}\b", sql)]
    for column in columns:
        options.append((re.sub(rf"\b{column}\b", _WRONG_COLUMN[column], sql, count=1), "wrong column"))
    where = re.sub(r"\s+WHERE\s+.*?(?=\s+GROUP BY|\s+ORDER BY|;$)", "", sql)
    if where != sql:
        options.append((where, "missing WHERE"))
    for old, new in _WRONG_AGGREGATE.items():
        if old in sql:
            options.append((sql.replace(old, new, 1), "wrong order" if old == "DESC" else "wrong aggregate"))
    options = [o for o in options if o[0] != sql]
    if not options:
        raise ValueError(f"no corruption applies to {sql!r}")
    return rng.choice(options)


def generate_preference_pairs(n: int, exclude: set[tuple[str, str]] = frozenset(), seed: int = 0,
                              ) -> list[tuple[str, str, str]]:
    """Up to ``n`` (question, gold sql, wrong sql) triples over questions not in ``exclude``."""
    rng = random.Random(seed)
    pool = [p for p in generate_clean_pairs(10**9, seed=seed) if p not in exclude]
    return [(q, sql, corrupt_sql(sql, rng)[0]) for q, sql in pool[:n]]


def _preference_lines(pairs: list[tuple[str, str, str]], rng: random.Random) -> list[str]:
    """JSONL lines in the two shapes real preference sets use, with the noise ingestion and cleaning must catch."""
    lines = []
    for i, (question, chosen, rejected) in enumerate(pairs):
        if i % 4 == 3:  # conversational: message lists, as TRL's datasets store them
            record = {"prompt": [{"role": "user", "content": question}],
                      "chosen": [{"role": "assistant", "content": chosen}],
                      "rejected": [{"role": "assistant", "content": rejected}], "db": DB_ID}
        else:
            record = {"prompt": question, "chosen": chosen, "rejected": rejected, "db": DB_ID}
        lines.append(json.dumps(record))
        # Every kind of noise shows up once per 20 pairs, so even a small drop carries each of them.
        plain = {"prompt": question, "chosen": chosen, "db": DB_ID}
        noise = {5: {**plain, "rejected": chosen},  # no preference signal
                 9: {**plain, "rejected": chosen.lower()},  # the same query, only recased
                 13: {**plain, "rejected": ""},
                 17: plain}.get(i % 20)  # a side missing
        if noise is not None:
            lines.append(json.dumps(noise))
        elif i % 20 == 19:
            lines.append(json.dumps(record)[: rng.randint(5, 40)])  # truncated: malformed JSON
    return lines


PREFERENCE_DROP = "preference-0001.jsonl"


def write_demo_drops(out_dir: Path | str, n_records: int = 500, n_drops: int = 3, seed: int = 0,
                     n_preference: int | None = None) -> list[Path]:
    """Write ``n_drops`` JSONL drops holding about ``n_records`` rows plus realistic noise.

    Noise: exact and near duplicates, HTML fragments, e-mail addresses and phone
    numbers, empty and overlong fields, malformed JSON lines.

    Then a preference drop (``preference-0001.jsonl``) of ``n_preference`` pairs (default
    ``min(60, n_records // 5)``, so a tiny demo stays too small for the gates): gold SQL chosen,
    a corrupted query rejected, over questions the SFT drops do not hold.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lines: list[str] = []
    for question, sql in generate_clean_pairs(n_records, seed=seed):
        record = {"question": _noisy(question, rng), "sql": sql, "db": DB_ID}
        lines.append(json.dumps(record))
        roll = rng.random()
        if roll < 0.05:
            lines.append(json.dumps(record))  # exact duplicate
        elif roll < 0.09:
            lines.append(json.dumps({**record, "question": _near_duplicate(question, rng)}))
        elif roll < 0.11:
            lines.append(json.dumps({**record, "sql": ""}))  # empty field
        elif roll < 0.12:
            lines.append(json.dumps({**record, "question": "   "}))
        elif roll < 0.13:
            lines.append(json.dumps({**record, "question": question + " " + "really " * 800}))  # overlong
        elif roll < 0.15:
            lines.append(json.dumps(record)[: rng.randint(5, 40)])  # truncated: malformed JSON
        elif roll < 0.16:
            lines.append("{'question': " + repr(question) + "}")  # python repr, not JSON
    paths = []
    per_drop = -(-len(lines) // n_drops)
    for i in range(n_drops):
        path = out_dir / f"drop-{i + 1:04d}.jsonl"
        chunk = lines[i * per_drop : (i + 1) * per_drop]
        path.write_text("\n".join(chunk) + "\n", encoding="utf-8")
        paths.append(path)
    n_preference = min(60, n_records // 5) if n_preference is None else n_preference
    if n_preference > 0:
        # Its own generator, so adding preference pairs leaves the SFT drops byte-identical.
        prng = random.Random(seed + 1)
        pairs = generate_preference_pairs(n_preference, exclude=set(generate_clean_pairs(n_records, seed=seed)),
                                          seed=seed + 1)
        path = out_dir / PREFERENCE_DROP
        path.write_text("\n".join(_preference_lines(pairs, prng)) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


# --- the task: what the demo recipe trains and how it is scored ----------------------------------

def _build_demo_database(workdir: Path) -> dict[str, dict]:
    """The demo's database, built (deterministically) where the SQL scorer looks for ``<db_id>.sqlite``."""
    Path(workdir).mkdir(parents=True, exist_ok=True)
    build_database(Path(workdir) / f"{DB_ID}.sqlite")
    return {"execution_accuracy": {"db_folder": str(workdir)}}


PROBE_QUESTIONS = (
    "How many employees work in Oslo?",
    "What is the average salary in Legal?",
    "List the top 5 earners.",
    "Who sits on floor 2?",
    "Count the Finance staff in Lima.",
    "Which employees in Tokyo earn more than 60000?",
)


def _task():
    from ft_assets.tasks.common import Task

    return Task(
        name="text_to_sql",
        metrics={"exact_match": {"scorer": "exact_match", "extract": "sql"},
                 # one database: rows without a db_id (e.g. plain question/sql drops) are run against it
                 "execution_accuracy": {"scorer": "sql_execution", "db_id": DB_ID},
                 "rouge_l": {"scorer": "rouge_l", "extract": "sql"}},
        primary_metric="exact_match",
        system_prompts={DB_ID: SCHEMA_SUMMARY},
        probes=tuple(({"role": "system", "content": SCHEMA_SUMMARY}, {"role": "user", "content": q})
                     for q in PROBE_QUESTIONS) + (({"role": "user", "content": "Say hello in one word."},),),
        probe_max_new_tokens=64,
        intended_use=("Translating natural-language questions about the demo's SQLite company database "
                      "(departments, employees) into one SQLite query."),
        limitations=("Trained on templated questions over one small schema: other schemas, phrasings or SQL "
                     "dialects are out of scope. Generated SQL must be reviewed before it runs on real data."),
        setup=_build_demo_database,
    )


TASK = _task()
