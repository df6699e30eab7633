"""Hostile input never crashes ingestion nor exhausts the machine: each fault ends in a quarantine row or a
refusal that names the limit, and rows in = kept + quarantined (+ duplicates downstream) holds."""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ft_assets.data.ingest import IngestLimits, IngestResult, ingest_drops
from ft_assets.data.preflight import preflight

REPO = Path(__file__).resolve().parents[2]
GOOD = {"question": "How many employees work in the sales department?", "sql": "SELECT count(*) FROM employees;"}


def _ingest(*paths: Path, **kwargs) -> IngestResult:
    result = ingest_drops(list(paths), **kwargs)
    assert result.rows_seen == len(result.records) + len(result.quarantine), "ingest lost rows"
    assert result.records["record_id"].is_unique
    return result


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _reasons(result: IngestResult) -> list[str]:
    return result.quarantine["reason"].tolist()


def _deep(depth: int) -> str:
    return '{"question": ' + "[" * depth + "]" * depth + ', "sql": "SELECT 1;"}'


def test_deep_nesting_40000_levels_is_quarantined_not_a_recursion_error(tmp_path, capsys):
    jsonl = _jsonl(tmp_path / "deep.jsonl", [json.dumps(GOOD), _deep(40_000), json.dumps(GOOD)])
    result = _ingest(jsonl)
    assert len(result.records) == 2 and _reasons(result) == [
        "too deeply nested: JSON nesting deeper than the parser allows"]
    document = tmp_path / "deep.json"
    document.write_text("[" + _deep(40_000) + "]")
    assert _reasons(_ingest(document))[0].startswith("too deeply nested")
    from ft_assets.cli import main

    assert main(["data", "validate", str(jsonl), "--min-rows", "1"]) == 0  # the check ran: no exit 2
    assert json.loads(capsys.readouterr().out)["quarantined_by_reason"] == {"too deeply nested": 1}


def test_huge_record_is_quarantined_without_holding_it(tmp_path):
    path = tmp_path / "huge.jsonl"
    huge = '{"question": "' + "x" * 20_000_000 + '", "sql": "SELECT 1;"}\n'
    path.write_text(json.dumps(GOOD) + "\n" + huge + json.dumps(GOOD) + "\n")
    result = _ingest(path, limits=IngestLimits(max_record_bytes=1_000_000))
    assert result.records["line_no"].tolist() == [1, 3]
    [row] = result.quarantine.to_dict("records")
    assert row["line_no"] == 2 and row["reason"] == f"huge record: {len(huge)} bytes > 1000000"
    assert len(row["raw"]) <= 500


def _bomb(path: Path, lines: int) -> Path:
    line = (json.dumps(GOOD) + "\n").encode()
    with gzip.open(path, "wb", compresslevel=9) as handle:
        for _ in range(lines // 1000):
            handle.write(line * 1000)
    return path


def test_compression_bomb_is_refused_at_max_drop_bytes(tmp_path):
    bomb = _bomb(tmp_path / "bomb.jsonl.gz", 100_000)  # ~10 MB of valid lines in ~40 kB
    assert bomb.stat().st_size < 100_000
    result = _ingest(bomb, limits=IngestLimits(max_drop_bytes=1_000_000))
    assert 0 < len(result.records) < 10_000
    [refusal] = result.quarantine.to_dict("records")
    assert refusal["line_no"] == 0 and refusal["reason"].startswith(
        "drop limit: bomb.jsonl.gz gives more than max_drop_bytes=1000000 bytes decompressed")


def test_rows_per_drop_are_limited(tmp_path):
    result = _ingest(_bomb(tmp_path / "many.jsonl.gz", 5_000), limits=IngestLimits(max_rows=1_000))
    assert len(result.records) == 1_000
    assert _reasons(result) == ["drop limit: many.jsonl.gz has more than max_rows=1000 rows; "
                                "the rest of the file was not read"]


def test_json_document_over_max_document_bytes_is_refused(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps([GOOD] * 20_000))
    [reason] = _reasons(_ingest(path, limits=IngestLimits(max_document_bytes=100_000)))
    assert reason.startswith("drop limit: big.json is over max_document_bytes=100000")


def test_very_wide_csv_is_refused_naming_the_limit(tmp_path):
    path = tmp_path / "wide.csv"
    header = ["question", "sql"] + [f"c{i}" for i in range(50_000)]
    path.write_text(",".join(header) + "\n" + ",".join(["Who?", "SELECT 1;"] + ["x"] * 50_000) + "\n")
    assert _reasons(_ingest(path)) == ["too wide: 50002 columns > max_columns=1000"]
    wide_parquet = tmp_path / "wide.parquet"
    pd.DataFrame({f"c{i}": ["x"] for i in range(1_500)}).to_parquet(wide_parquet)
    assert _reasons(_ingest(wide_parquet)) == ["too wide: 1500 columns > max_columns=1000"]


@pytest.mark.parametrize("name", ["junk.jsonl", "junk.json", "junk.csv", "junk.parquet", "junk.jsonl.gz",
                                  "junk.csv.gz"])
def test_binary_junk_in_every_format_is_quarantined(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(random.Random(7).randbytes(200_000))
    result = _ingest(path)
    assert result.records.empty and len(result.quarantine) >= 1
    assert all(result.quarantine["reason"].str.len() > 0)


@pytest.mark.parametrize(("encoding", "reason"), [
    ("latin-1", "invalid UTF-8"), ("cp1252", "invalid UTF-8"), ("shift_jis", "invalid UTF-8"),
    ("utf-16", "unsupported encoding"), ("utf-32", "unsupported encoding"),
    ("utf-16-le", ("NUL byte", "invalid UTF-8")),  # no BOM: NUL-laced ASCII, and "¿" is not UTF-8
])
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_wrong_encodings_are_named(tmp_path, encoding, reason, suffix):
    text = "社員は何人いますか？" if encoding == "shift_jis" else "¿Cuántos empleados hay en ventas?"
    body = (json.dumps({"question": text, "sql": "SELECT 1;"}, ensure_ascii=False) + "\n" if suffix == ".jsonl"
            else f"question,sql\n{text},SELECT 1;\n")
    path = tmp_path / f"enc{suffix}"
    path.write_bytes(body.encode(encoding))
    result = _ingest(path)
    assert result.records.empty
    assert any(r.startswith(reason) for r in _reasons(result)), _reasons(result)


def test_duplicate_stems_get_distinct_record_ids_and_pass_the_gates(tmp_path):
    drops = tmp_path / "drops"
    drops.mkdir()
    rows = [{"question": f"How many employees work in department {i}?", "sql": f"SELECT {i};"} for i in range(30)]
    _jsonl(drops / "x.jsonl", [json.dumps(r) for r in rows])
    pd.DataFrame([{"question": f"Which managers run office {i}?", "sql": f"SELECT m{i};"} for i in range(30)]
                 ).to_csv(drops / "x.csv", index=False)
    result = _ingest(drops / "x.csv", drops / "x.jsonl")
    assert set(result.records["drop_id"]) == {"x", "x.jsonl"}
    summary = preflight([str(drops)], min_rows=50)
    assert summary["success"], [e for e in summary["expectations"] if not e["success"]]


@pytest.mark.parametrize("name", ["with space.jsonl", "ünïcødé 数据.jsonl", "-leading-dash.jsonl", "a..b.jsonl",
                                  "..jsonl.jsonl", "quote'and\"double.jsonl"])
def test_odd_file_names_ingest_and_get_safe_partition_keys(tmp_path, name):
    from resources.drops import RawDrops

    drops = tmp_path / "drops"
    drops.mkdir()
    _jsonl(drops / name, [json.dumps(GOOD)])
    # A ".." inside a path is resolved, not trusted: the file is still inside the drop folder.
    result = _ingest(drops / ".." / "drops" / name, roots=[drops])
    assert len(result.records) == 1
    listed = RawDrops(path=str(drops), demo_if_empty=False).scan()
    if name.startswith("."):
        assert listed == []  # hidden files are not drops
        return
    [drop] = listed
    assert drop.key and "/" not in drop.key and " " not in drop.key
    if name.startswith("-"):  # on the command line after "--" it is a path, not an option
        from ft_assets.cli import main

        assert main(["data", "validate", "--min-rows", "1", "--", str(drops / name)]) == 0


def test_symlinks_out_of_the_drop_location_are_refused(tmp_path, capsys):
    from resources.drops import RawDrops

    outside = _jsonl(tmp_path / "secret.jsonl", [json.dumps(GOOD)])
    drops = tmp_path / "drops"
    drops.mkdir()
    _jsonl(drops / "real.jsonl", [json.dumps(GOOD)])
    (drops / "escape.jsonl").symlink_to(outside)
    (drops / "alias.jsonl").symlink_to(drops / "real.jsonl")  # stays inside: fine
    resource = RawDrops(path=str(drops), demo_if_empty=False)
    assert [d.key for d in resource.scan()] == ["alias", "real"]
    with pytest.raises(PermissionError, match="outside the drop location"):
        resource.fetch(type(resource.scan()[0])(key="escape", uri=str(drops / "escape.jsonl"), size=0, mtime=0.0))
    summary = preflight([str(drops)], min_rows=1)
    assert summary["quarantined_by_reason"] == {"refused": 1} and summary["kept"] == 1  # alias dedups with real
    assert summary["rows_in"] == 3


MEMORY_PROBE = """
import gzip, json, resource, sys
from pathlib import Path
from ft_assets.data.ingest import IngestLimits, ingest_to_files
n, work = int(sys.argv[1]), Path(sys.argv[2])
line = (json.dumps({GOOD!r}) + "\\n").encode()
src = work / f"drop{{n}}.jsonl.gz"
with gzip.open(src, "wb", compresslevel=1) as handle:
    for _ in range(n // 10_000):
        handle.write(line * 10_000)
summary = ingest_to_files([src], work / f"r{{n}}.parquet", work / f"q{{n}}.jsonl", limits=IngestLimits(max_rows=10**9))
assert summary.records == n, summary
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def _peak_rss_mb(rows: int, work: Path) -> int:
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE.format(GOOD=GOOD), str(rows), str(work)],
                         capture_output=True, text=True, check=True, cwd=REPO, env={**os.environ}).stdout
    return int(out.strip().splitlines()[-1])


def test_ingest_streams_so_memory_does_not_grow_with_the_drop(tmp_path):
    small, large = _peak_rss_mb(10_000, tmp_path), _peak_rss_mb(90_000, tmp_path)
    # Holding the rows would add ~110 MB for the 80k extra rows (measured: in-memory ingest_drops 126 -> 237 MB).
    assert large - small < 40, (small, large)
    assert large < 2048
