"""Ingest of every file format and record shape, and of every kind of broken input, with the accounting held."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from ft_assets.data.ingest import IngestResult, drop_format, ingest_drops
from ft_assets.data.records import reason_counts

Q, S = "How many employees?", "SELECT COUNT(*) FROM employees;"


def _ingest(*paths: Path, **kwargs) -> IngestResult:
    result = ingest_drops(list(paths), **kwargs)
    # The invariant every test leans on: nothing read is lost.
    assert result.rows_seen == len(result.records) + len(result.quarantine)
    return result


def _jsonl(path: Path, objs: list) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return path


def _one(obj: dict, tmp_path: Path) -> dict:
    result = _ingest(_jsonl(tmp_path / "d.jsonl", [obj]))
    assert result.quarantine.empty, result.quarantine.to_dict("records")
    [row] = result.records.to_dict("records")
    row["history"] = json.loads(row["history"])
    return row


def _reason(obj: object, tmp_path: Path) -> str:
    result = _ingest(_jsonl(tmp_path / "d.jsonl", [obj]))
    assert result.records.empty, result.records.to_dict("records")
    [reason] = result.quarantine["reason"]
    return reason


def _file_reason(path: Path, **kwargs) -> dict:
    """The single quarantine row that stands for a whole rejected file."""
    result = _ingest(path, **kwargs)
    assert result.records.empty
    [row] = result.quarantine.to_dict("records")
    return row


# --- file formats -----------------------------------------------------------------------------------


def test_json_array_line_no_is_the_element_index(tmp_path):
    path = tmp_path / "arr.json"
    rows = [{"question": Q, "sql": S}, ["not", "an", "object"], {"prompt": "p", "completion": "c"}]
    path.write_text(json.dumps(rows))
    result = _ingest(path)
    assert list(result.records["record_id"]) == ["arr:1", "arr:3"]
    [bad] = result.quarantine.to_dict("records")
    assert (bad["line_no"], bad["reason"]) == (2, "not a JSON object: got list")
    assert result.formats == {str(path): "json"}


def test_json_single_object_is_one_record(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"question": Q, "sql": S}, indent=2))
    [row] = _ingest(path).records.to_dict("records")
    assert (row["record_id"], row["line_no"], row["prompt"]) == ("one:1", 1, Q)


def test_json_with_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"question": Q, "sql": S}]).encode())
    assert list(_ingest(path).records["prompt"]) == [Q]


def test_malformed_json_file_is_one_row_with_position(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[{"question": "a", "sql": "b"},\n {"question": ]')
    row = _file_reason(path)
    assert row["line_no"] == 0 and row["reason"].startswith("malformed JSON: Expecting value at line 2 column")


def test_json_scalar_and_empty_array_are_rejected(tmp_path):
    (tmp_path / "n.json").write_text("42")
    (tmp_path / "e.json").write_text("[]")
    assert _file_reason(tmp_path / "n.json")["reason"] == "not a JSON object or array: got int"
    assert _file_reason(tmp_path / "e.json")["reason"] == "empty file: the JSON array has no elements"


def test_json_lines_saved_as_json_is_read_line_by_line(tmp_path):
    path = tmp_path / "lines.json"
    path.write_text(json.dumps({"question": Q, "sql": S}) + "\n{broken\n"
                    + json.dumps({"prompt": "p", "completion": "c"}))
    result = _ingest(path)
    assert list(result.records["line_no"]) == [1, 3]
    assert list(result.quarantine["reason"].str.split(":").str[0]) == ["malformed JSON"]


def test_json_file_that_is_not_utf8_is_one_row(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(json.dumps([{"question": "cafe", "sql": S}]).replace("cafe", "caf\xe9").encode("latin-1"))
    row = _file_reason(path)
    assert row["line_no"] == 0 and row["reason"].startswith("invalid UTF-8: byte 0xe9 at offset")


def test_csv_maps_columns_and_numbers_data_rows(tmp_path):
    path = tmp_path / "qs.csv"
    path.write_text('db_name,query,question\nacademic,"SELECT a, b FROM t;",Who?\n\n'
                    'atis,SELECT 1;,"Multi\nline question"\n', encoding="utf-8")
    result = _ingest(path)
    rows = result.records.to_dict("records")
    assert [(r["record_id"], r["db_id"], r["completion"]) for r in rows] == [
        ("qs:1", "academic", "SELECT a, b FROM t;"), ("qs:2", "atis", "SELECT 1;")]
    assert rows[1]["prompt"] == "Multi\nline question"  # quoted newlines stay inside the field
    assert result.blank_lines == 1 and result.formats == {str(path): "csv"}


def test_csv_bom_and_ragged_row(tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes(b"\xef\xbb\xbfquestion,sql\nWho?,SELECT 1;\nWhere?,SELECT 2;,extra\nWhen?,SELECT 3;\n")
    result = _ingest(path)
    assert list(result.records["prompt"]) == ["Who?", "When?"]  # the BOM is not part of the first column name
    [bad] = result.quarantine.to_dict("records")
    assert (bad["line_no"], bad["reason"]) == (2, "malformed CSV: row has 3 fields, header has 2")


def test_csv_stray_quote_inside_quoted_field_is_read_leniently(tmp_path):
    # The way sql_eval's CSV has it: quotes inside a quoted field not doubled.
    path = tmp_path / "q.csv"
    path.write_text('question,sql\n"Cars count as "in stock" if flagged.",SELECT 1;\n')
    [row] = _ingest(path).records.to_dict("records")
    assert "in stock" in row["prompt"] and row["completion"] == "SELECT 1;"


def test_csv_header_only_duplicate_columns_and_bad_encoding(tmp_path):
    (tmp_path / "h.csv").write_text("question,sql\n")
    (tmp_path / "dup.csv").write_text("question,question\na,b\n")
    (tmp_path / "enc.csv").write_bytes("question,sql\ncaf\xe9,SELECT 1;\n".encode("latin-1"))
    assert _file_reason(tmp_path / "h.csv")["reason"] == "empty file: header only, no data rows"
    assert _file_reason(tmp_path / "dup.csv")["reason"] == "malformed CSV: duplicate column 'question' in header"
    assert _file_reason(tmp_path / "enc.csv")["reason"].startswith("invalid UTF-8: byte 0xe9")


def test_csv_cells_carry_chat_lists_as_json_text(tmp_path):
    path = tmp_path / "chat.csv"
    messages = [{"role": "user", "content": Q}, {"role": "assistant", "content": S}]
    pd.DataFrame({"messages": [json.dumps(messages), "not json"]}).to_csv(path, index=False)
    result = _ingest(path)
    assert list(result.records["completion"]) == [S]
    assert list(result.quarantine["reason"]) == [
        "mistyped field: messages is a string that is not a JSON list of turns"]


def test_parquet_rows_and_nested_chat_columns(tmp_path):
    path = tmp_path / "p.parquet"
    pd.DataFrame({
        "instruction": ["Translate to French", "Sum the numbers", None],
        "input": ["cat", None, "x"],
        "output": ["chat", "3", "y"],
    }).to_parquet(path)
    result = _ingest(path)
    assert list(result.records["prompt"]) == ["Translate to French\n\ncat", "Sum the numbers"]  # null input is ""
    [bad] = result.quarantine.to_dict("records")
    assert (bad["line_no"], bad["reason"]) == (3, "mistyped field: instruction is NoneType, expected string")
    chat = tmp_path / "chat.parquet"
    pd.DataFrame({"messages": [[{"role": "user", "content": Q}, {"role": "assistant", "content": S}]]}).to_parquet(chat)
    [row] = _ingest(chat).records.to_dict("records")
    assert (row["prompt"], row["completion"], row["line_no"]) == (Q, S, 1)


def test_unreadable_and_empty_parquet(tmp_path):
    (tmp_path / "junk.parquet").write_bytes(b"this is not parquet at all")
    pd.DataFrame({"question": pd.Series([], dtype=str), "sql": pd.Series([], dtype=str)}).to_parquet(
        tmp_path / "empty.parquet")
    row = _file_reason(tmp_path / "junk.parquet")
    assert row["line_no"] == 0 and row["reason"].startswith("unreadable Parquet: ")
    assert _file_reason(tmp_path / "empty.parquet")["reason"] == "empty file: the Parquet file has no rows"


def test_gzipped_jsonl_drop_id_drops_both_suffixes(tmp_path):
    path = tmp_path / "harmless_base_test.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"question": Q, "sql": S}) + "\n" + "{bad\n")
    result = _ingest(path)
    assert list(result.records["record_id"]) == ["harmless_base_test:1"]
    assert list(result.quarantine["line_no"]) == [2]
    assert result.formats == {str(path): "jsonl.gz"}
    assert drop_format(Path("a.b.csv.gz")) == ("csv", "a.b", True)
    assert drop_format(Path("x.parquet.gz"))[0] is None


def test_truncated_gzip_keeps_rows_before_the_break(tmp_path):
    path = tmp_path / "cut.jsonl.gz"
    lines = "".join(json.dumps({"question": f"{Q} {i}", "sql": S}) + "\n" for i in range(2000))
    data = gzip.compress(lines.encode())
    path.write_bytes(data[: len(data) // 2])
    result = _ingest(path)
    assert 0 < len(result.records) < 2000
    [bad] = result.quarantine.to_dict("records")
    assert bad["reason"].startswith("unreadable file: EOFError")


@pytest.mark.parametrize("name", ["e.jsonl", "e.json", "e.csv", "e.jsonl.gz"])
def test_empty_files_are_one_row_at_line_zero(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(gzip.compress(b"") if name.endswith(".gz") else b"")
    row = _file_reason(path)
    assert (row["line_no"], row["reason"], row["drop_id"]) == (0, "empty file", "e")


def test_unsupported_missing_and_utf16_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "u16.jsonl").write_bytes(json.dumps({"question": Q, "sql": S}).encode("utf-16"))
    assert _file_reason(tmp_path / "notes.txt")["reason"].startswith("unsupported file type: 'notes.txt'")
    assert _file_reason(tmp_path / "gone.jsonl")["reason"].startswith("unreadable file: FileNotFoundError")
    assert _file_reason(tmp_path / "u16.jsonl")["reason"].startswith("unsupported encoding: UTF-16/UTF-32")


def test_nul_bytes_raw_and_escaped(tmp_path):
    path = tmp_path / "nul.jsonl"
    path.write_bytes(b'{"question": "a\x00b", "sql": "s"}\n' + json.dumps({"question": "a\u0000b", "sql": "s"}).encode()
                     + b"\n")
    reasons = list(_ingest(path).quarantine["reason"])
    assert reasons == ["NUL byte: at offset 15", "NUL byte: in field prompt"]
    assert reason_counts(_ingest(path).quarantine) == {"NUL byte": 2}


@pytest.mark.parametrize("name", ["big.jsonl", "big.json", "big.csv", "big.parquet"])
def test_huge_records_are_quarantined_per_row(tmp_path, name):
    rows = [{"question": Q, "sql": S}, {"question": "x" * 5000, "sql": S}]
    path = tmp_path / name
    if name.endswith(".jsonl"):
        _jsonl(path, rows)
    elif name.endswith(".json"):
        path.write_text(json.dumps(rows))
    elif name.endswith(".csv"):
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path)
    result = _ingest(path, max_record_bytes=1000)
    assert list(result.records["line_no"]) == [1]
    [bad] = result.quarantine.to_dict("records")
    assert bad["line_no"] == 2
    assert bad["reason"].startswith("huge record: ") and bad["reason"].endswith(" bytes > 1000")
    assert int(bad["reason"].split()[2]) > 5000


def test_accounting_over_a_mix_of_formats(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [{"question": Q, "sql": S}, [1]])
    b = tmp_path / "b.json"
    b.write_text(json.dumps([{"question": Q, "sql": S}] * 3))
    c = tmp_path / "c.csv"
    c.write_text("question,sql\nWho?,SELECT 1;\nbroken\n")
    d = tmp_path / "d.parquet"
    pd.DataFrame({"prompt": ["p"], "completion": ["c"]}).to_parquet(d)
    e = tmp_path / "e.json"
    e.write_text("")
    result = _ingest(a, b, c, d, e)
    assert result.rows_seen == 2 + 3 + 2 + 1 + 1
    assert len(result.records) == 1 + 3 + 1 + 1
    assert result.records["record_id"].is_unique
    assert result.files == [str(p) for p in (a, b, c, d, e)]


# --- record shapes ----------------------------------------------------------------------------------


def test_alpaca_input_joins_the_instruction(tmp_path):
    row = _one({"instruction": "Translate to French.", "input": "The cat", "output": "Le chat"}, tmp_path)
    assert (row["prompt"], row["completion"]) == ("Translate to French.\n\nThe cat", "Le chat")
    row = _one({"instruction": "Name a colour.", "input": "  ", "output": "Blue"}, tmp_path)
    assert row["prompt"] == "Name a colour."


def test_alpaca_mistyped_input_is_named(tmp_path):
    assert _reason({"instruction": "i", "input": 3, "output": "o"}, tmp_path) == \
        "mistyped field: input is int, expected string"


def test_question_answer_and_field_preference(tmp_path):
    row = _one({"question": "2+2?", "answer": "4\n#### 4"}, tmp_path)
    assert (row["prompt"], row["completion"], row["kind"]) == ("2+2?", "4\n#### 4", "sft")
    # The existing preference order holds: "sql" beats "answer", "prompt" beats "question".
    assert _one({"prompt": "p", "question": "q", "sql": "s", "answer": "a"}, tmp_path)["completion"] == "s"
    assert _one({"prompt": "p", "question": "q", "sql": "s"}, tmp_path)["prompt"] == "p"


def test_self_instruct_maps_the_first_instance(tmp_path):
    obj = {"instruction": "Antonym?",
           "instances": [{"input": "hot", "output": "cold"}, {"input": "up", "output": "down"}]}
    row = _one(obj, tmp_path)
    assert (row["prompt"], row["completion"]) == ("Antonym?\n\nhot", "cold")
    assert _reason({"instruction": "i", "instances": []}, tmp_path) == "empty field: instances"
    assert _reason({"instruction": "i", "instances": [{"input": "x"}]}, tmp_path) == \
        "missing field: instances[0].output"
    assert _reason({"instruction": "i", "instances": {"output": "o"}}, tmp_path) == \
        "mistyped field: instances is dict, expected a list"


def test_top_level_system_field(tmp_path):
    assert _one({"system": "Be brief.", "prompt": "p", "completion": "c"}, tmp_path)["system"] == "Be brief."


def test_openai_messages_split_into_system_history_prompt_completion(tmp_path):
    row = _one({"messages": [
        {"role": "system", "content": "You write SQL."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! What do you need?"},
        {"role": "user", "content": Q},
        {"role": "assistant", "content": S},
    ], "db_id": "company"}, tmp_path)
    assert row["system"] == "You write SQL."
    assert row["history"] == [{"role": "user", "content": "Hi"},
                              {"role": "assistant", "content": "Hello! What do you need?"}]
    assert (row["prompt"], row["completion"], row["db_id"], row["kind"]) == (Q, S, "company", "sft")


def test_sharegpt_conversations(tmp_path):
    row = _one({"conversations": [
        {"from": "system", "value": "Be kind."},
        {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello"},
        {"from": "human", "value": "Bye"},
        {"from": "gpt", "value": "Goodbye"},
    ]}, tmp_path)
    assert (row["system"], row["prompt"], row["completion"]) == ("Be kind.", "Bye", "Goodbye")
    assert row["history"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


def test_multipart_text_content_is_joined(tmp_path):
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    row = _one({"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": "c"}]}, tmp_path)
    assert row["prompt"] == "a\nb"


def test_consecutive_turns_inside_the_history_are_kept(tmp_path):
    # Real logs (and hh-rlhf) have them; only the final user turn and its reply must be in place.
    row = _one({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                             {"role": "assistant", "content": "b2"}, {"role": "user", "content": "c"},
                             {"role": "assistant", "content": "d"}]}, tmp_path)
    assert [t["content"] for t in row["history"]] == ["a", "b", "b2"]


@pytest.mark.parametrize(("messages", "reason"), [
    ([{"role": "user", "content": "a"}], "bad role order: messages has no assistant turn"),
    ([{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}],
     "bad role order: messages[0] is an assistant turn before any user turn"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
     "bad role order: messages[2] is a user turn after the last assistant turn (nothing answers it)"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "assistant", "content": "c"}],
     "bad role order: messages[1] before the final assistant turn is an assistant turn, expected user"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "c"}],
     "bad role order: system turn at messages[1] (only a leading system turn is supported)"),
    ([{"role": "system", "content": "s"}], "bad role order: messages has no user turn"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "  "}], "empty turn: messages[1] (assistant)"),
    ([{"role": "user", "content": "a"}, {"role": "tool", "content": "x"}], "unknown role: messages[1] has role 'tool'"),
    ([{"role": "user"}, {"role": "assistant", "content": "x"}], "missing field: messages[0].content"),
    ([{"content": "a"}], "missing field: messages[0].role"),
    ([{"role": "user", "content": None}], "mistyped field: messages[0].content is NoneType, expected string"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
     "mistyped field: messages[0].content has non-text parts (image_url)"),
    (["hi"], "mistyped field: messages[0] is str, expected an object"),
    ([], "empty field: messages"),
    ({"role": "user"}, "mistyped field: messages is dict, expected a list of turns"),
])
def test_broken_chats_are_quarantined_with_the_turn_named(tmp_path, messages, reason):
    assert _reason({"messages": messages}, tmp_path) == reason


def test_sharegpt_errors_name_its_own_keys(tmp_path):
    assert _reason({"conversations": [{"value": "a"}]}, tmp_path) == "missing field: conversations[0].from"
    assert _reason({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": ""}]}, tmp_path) == \
        "empty turn: conversations[1] (assistant)"


def test_preference_strings(tmp_path):
    row = _one({"prompt": Q, "chosen": S, "rejected": "SELECT 1;", "system": "SQL only."}, tmp_path)
    assert (row["kind"], row["prompt"], row["chosen"], row["rejected"], row["completion"], row["system"]) == \
        ("preference", Q, S, "SELECT 1;", "", "SQL only.")


def test_preference_chat_lists_take_the_final_assistant_content(tmp_path):
    row = _one({
        "prompt": [{"role": "system", "content": "sys"}, {"role": "user", "content": "a"},
                   {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "bad"}],
    }, tmp_path)
    assert (row["system"], row["prompt"], row["chosen"], row["rejected"]) == ("sys", "c", "good", "bad")
    assert row["history"] == [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]


def test_preference_implicit_prompt_in_both_conversations(tmp_path):
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    row = _one({"chosen": turns + [{"role": "assistant", "content": "good"}],
                "rejected": turns + [{"role": "assistant", "content": "bad"}]}, tmp_path)
    assert (row["prompt"], row["chosen"], row["rejected"], len(row["history"])) == ("c", "good", "bad", 2)
    other = [{"role": "user", "content": "different"}, {"role": "assistant", "content": "bad"}]
    assert _reason({"chosen": turns + [{"role": "assistant", "content": "good"}], "rejected": other}, tmp_path) == \
        "preference mismatch: chosen and rejected differ before the final assistant turn"


def test_hh_rlhf_dialogues(tmp_path):
    prefix = "\n\nHuman: Hi there\n\nAssistant: Hello.\n\nHuman: Tell me a secret"
    row = _one({"chosen": prefix + "\n\nAssistant: I'd rather not.",
                "rejected": prefix + "\n\nAssistant: I'd love to. Human: really?"}, tmp_path)
    assert row["kind"] == "preference"
    assert (row["prompt"], row["chosen"], row["rejected"]) == (
        "Tell me a secret", "I'd rather not.", "I'd love to. Human: really?")
    assert row["history"] == [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello."}]


def test_hh_rlhf_reply_holding_a_marker_splits_at_the_shared_prefix(tmp_path):
    # hh-rlhf has replies that themselves contain "\n\nAssistant:": the shared dialogue decides the split.
    prefix = "\n\nHuman: Find me a serial."
    row = _one({"chosen": prefix + "\n\nAssistant: Here:\n\nAssistant: ABC-123",
                "rejected": prefix + "\n\nAssistant: No."}, tmp_path)
    assert (row["prompt"], row["chosen"], row["rejected"]) == (
        "Find me a serial.", "Here:\n\nAssistant: ABC-123", "No.")


@pytest.mark.parametrize(("obj", "reason"), [
    ({"chosen": "\n\nHuman: hi\n\nAssistant: ", "rejected": "\n\nHuman: hi\n\nAssistant: hello"},
     "empty turn: the final Assistant turn of chosen"),
    ({"chosen": "just text", "rejected": "other text"},
     "missing field: prompt (chosen/rejected are neither chat lists nor "
     "'\\n\\nHuman: ... \\n\\nAssistant: ...' dialogues)"),
    ({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: z\n\nAssistant: b"},
     "preference mismatch: chosen and rejected share no dialogue before their replies"),
    ({"chosen": "\n\nAssistant: b\n\nAssistant: c", "rejected": "\n\nAssistant: b\n\nAssistant: d"},
     "bad role order: dialogue turn 0 is an assistant turn before any user turn"),
    ({"chosen": "Hey\n\nHuman: a\n\nAssistant: b", "rejected": "Hey\n\nHuman: a\n\nAssistant: c"},
     "malformed dialogue: text before the first '\\n\\nHuman:' turn"),
    ({"prompt": "p", "chosen": "c"}, "missing field: rejected"),
    ({"prompt": 3, "chosen": "c", "rejected": "r"}, "mistyped field: prompt is int, expected string or list of turns"),
    ({"prompt": "p", "chosen": 1, "rejected": "r"}, "mistyped field: chosen is int, expected string or list of turns"),
    ({"prompt": "p", "chosen": [{"role": "user", "content": "x"}], "rejected": "r"},
     "bad role order: chosen does not end with an assistant turn"),
    ({"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "chosen": "c",
      "rejected": "r"}, "bad role order: prompt must end with a user turn, prompt[1] is an assistant turn"),
])
def test_broken_preference_rows(tmp_path, obj, reason):
    assert _reason(obj, tmp_path) == reason


def test_missing_prompt_names_every_accepted_field(tmp_path):
    reason = _reason({"text": "hello"}, tmp_path)
    assert reason.startswith("missing field: prompt (expected one of prompt, question, instruction")
    assert "messages" in reason and "conversations" in reason


def test_quarantine_preview_of_a_parsed_row_is_redacted(tmp_path):
    result = _ingest(_jsonl(tmp_path / "d.jsonl", [{"question": "mail jane.doe@example.com", "sql": 1}]))
    [row] = result.quarantine.to_dict("records")
    assert "jane.doe@example.com" not in row["raw"] and "[EMAIL]" in row["raw"]


def test_preview_redaction_sees_an_email_across_the_preview_cut(tmp_path):
    # Cut first and redact second would leave "jane.doe@exam" behind, which no pattern recognizes.
    line = '{"question": "' + "x" * 480 + ' jane.doe@example.com", "sql": 1}'
    [raw] = _ingest(_jsonl_raw(tmp_path / "d.jsonl", line)).quarantine["raw"]
    assert "jane" not in raw and len(raw) <= 500


def _jsonl_raw(path: Path, line: str) -> Path:
    path.write_text(line + "\n", encoding="utf-8")
    return path
