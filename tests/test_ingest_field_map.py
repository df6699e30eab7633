"""Which source field becomes the answer: the text one, or the one a field map names; and it is recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ft_assets.data.ingest import FieldMapError, check_field_map, ingest_drops

# Two rows exactly as Spider's dev.json has them: ``sql`` is the parsed tree, ``query`` the SQL text.
SPIDER = [
    {"db_id": "concert_singer", "query": "SELECT count(*) FROM singer",
     "query_toks": ["SELECT", "count", "(", "*", ")", "FROM", "singer"],
     "query_toks_no_value": ["select", "count", "(", "*", ")", "from", "singer"],
     "question": "How many singers do we have?", "question_toks": ["How", "many", "singers", "do", "we", "have", "?"],
     "sql": {"except": None, "from": {"conds": [], "table_units": [["table_unit", 1]]}, "groupBy": [],
             "having": [], "intersect": None, "limit": None, "orderBy": [],
             "select": [False, [[3, [0, [0, 0, False], None]]]], "union": None, "where": []}},
    {"db_id": "concert_singer", "query": "SELECT name ,  country ,  age FROM singer ORDER BY age DESC",
     "query_toks": [], "query_toks_no_value": [],
     "question": "Show name, country, age for all singers ordered by age from the oldest to the youngest.",
     "question_toks": [],
     "sql": {"except": None, "from": {"conds": [], "table_units": [["table_unit", 1]]}, "groupBy": [],
             "having": [], "intersect": None, "limit": None, "orderBy": ["desc", [[0, [0, [0, 13, False], None]]]],
             "select": [False, []], "union": None, "where": []}},
]


def _spider(tmp_path: Path) -> Path:
    path = tmp_path / "spider_dev.json"
    path.write_text(json.dumps(SPIDER, indent=2))
    return path


def test_spider_rows_take_the_sql_text_not_the_parsed_tree(tmp_path):
    result = ingest_drops([_spider(tmp_path)])
    assert result.quarantine.empty, result.quarantine["reason"].tolist()
    assert result.records["completion"].tolist() == [r["query"] for r in SPIDER]
    assert result.records["db_id"].tolist() == ["concert_singer"] * 2
    assert result.fields_used == {"prompt<-question": 2, "completion<-query": 2, "db_id<-db_id": 2}


def test_field_map_decides_the_columns(tmp_path):
    path = tmp_path / "cls.csv"
    path.write_text("id,text,label,answer\n1,This film was a delight from start to end.,positive,ignored\n")
    result = ingest_drops([path], field_map={"prompt": "text", "completion": "label"})
    [row] = result.records.to_dict("records")
    assert (row["prompt"], row["completion"]) == ("This film was a delight from start to end.", "positive")
    assert result.fields_used == {"prompt<-text": 1, "completion<-label": 1}


def test_field_map_on_spider_with_db_id(tmp_path):
    result = ingest_drops([_spider(tmp_path)],
                          field_map={"prompt": "question", "completion": "query", "db_id": "db_id"})
    assert result.quarantine.empty and len(result.records) == 2
    assert result.fields_used["completion<-query"] == 2


def test_field_map_column_missing_from_the_data_is_an_error_naming_it(tmp_path):
    with pytest.raises(FieldMapError, match=r"'answer_sql'.*has 'db_id'"):
        ingest_drops([_spider(tmp_path)], field_map={"prompt": "question", "completion": "answer_sql"})


def test_field_map_with_an_unknown_canonical_field_is_refused():
    with pytest.raises(FieldMapError, match="unknown canonical field.*'answer'"):
        check_field_map({"answer": "query"})


def test_raw_drops_resource_carries_a_field_map(tmp_path):
    from resources.drops import RawDrops

    drops = RawDrops(path=str(tmp_path), demo_if_empty=False, field_map={"prompt": "text", "completion": "label"})
    assert drops.field_map == {"prompt": "text", "completion": "label"}
