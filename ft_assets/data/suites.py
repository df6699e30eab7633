"""Great Expectations suites for the data stages, and a runner that summarizes results.

No Dagster here: the suites are plain lists of GX expectations, so the
pre-flight command and tests can run them too.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ft_assets.data.clean import redact_pii

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

EMAIL_REGEX = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"


@dataclass
class ExpectationOutcome:
    expectation: str
    kwargs: dict
    success: bool
    unexpected_count: int | None = None
    unexpected_examples: list = field(default_factory=list)
    observed_value: object = None
    unexpected_record_ids: list = field(default_factory=list)  # which rows, when the frame has record_id


@dataclass
class SuiteResult:
    suite: str
    success: bool
    outcomes: list[ExpectationOutcome]
    docs_index: str | None = None

    def failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def markdown(self) -> str:
        lines = ["| expectation | column / args | ok | unexpected | examples | rows |", "|---|---|---|---|---|---|"]
        for o in self.outcomes:
            args = ", ".join(f"{k}={v}" for k, v in o.kwargs.items() if k not in ("batch_id",))
            examples = "; ".join(repr(x)[:60] for x in o.unexpected_examples[:3]).replace("|", "\\|")
            rows = ", ".join(o.unexpected_record_ids[:5])
            lines.append(f"| {o.expectation} | {args} | {'yes' if o.success else 'NO'} | "
                         f"{o.unexpected_count if o.unexpected_count is not None else o.observed_value} | {examples} "
                         f"| {rows} |")
        return "\n".join(lines)


def _pii_found(text: str) -> set[str]:
    """The kinds of PII the cleaning stage would still redact in ``text``."""
    counts: Counter = Counter()
    redact_pii(text, counts)
    return {k for k, n in counts.items() if n}


def with_pii_column(frame: pd.DataFrame, columns: tuple[str, ...] = ("prompt", "completion")) -> pd.DataFrame:
    """A copy of ``frame`` with ``pii_left``: the PII kinds found in any of ``columns`` per row."""
    present = [c for c in columns if c in frame.columns]

    def kinds_of(values: tuple) -> str:
        found: set[str] = set()
        for value in values:
            if value is not None and value != "":  # most rows leave system / chosen / rejected empty
                found |= _pii_found(str(value))
        return ",".join(sorted(found))

    # Columns zipped, not iterrows(): iterrows builds a Series per row, slower than the PII scan itself.
    kinds = [kinds_of(values) for values in zip(*(frame[c] for c in present), strict=True)] if present \
        else [""] * len(frame)
    return frame.assign(pii_left=pd.Series(kinds, index=frame.index, dtype=object))


def prepare_records(frame: pd.DataFrame) -> pd.DataFrame:
    """Canonical records plus the derived columns the suites check: ``pii_left`` and ``answer_chars``."""
    frame = with_pii_column(frame, ("prompt", "completion", "system", "chosen", "rejected"))
    if "kind" in frame.columns:
        answers = [len(c.strip()) if k != "preference" else min(len(a.strip()), len(b.strip())) for k, c, a, b in
                   zip(frame["kind"], frame["completion"], frame["chosen"], frame["rejected"], strict=True)]
    else:
        answers = [len(str(c).strip()) for c in frame["completion"]]
    return frame.assign(answer_chars=pd.Series(answers, index=frame.index, dtype="int64"))


def records_suite(min_rows: int, max_prompt_chars: int = 1000, unique_column: str = "record_id") -> list:
    """Canonical records: the columns, their types, no nulls, length bounds, unique ids, no PII left."""
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=min_rows),
        *[gxe.ExpectColumnToExist(column=c) for c in ("record_id", "drop_id", "source_file", "line_no", "prompt",
                                                       "completion")],
        gxe.ExpectColumnValuesToBeOfType(column="prompt", type_="str"),
        gxe.ExpectColumnValuesToBeOfType(column="completion", type_="str"),
        gxe.ExpectColumnValuesToNotBeNull(column="prompt"),
        gxe.ExpectColumnValuesToNotBeNull(column="completion"),
        gxe.ExpectColumnValuesToBeUnique(column=unique_column),
        gxe.ExpectColumnValueLengthsToBeBetween(column="prompt", min_value=1, max_value=max_prompt_chars),
        gxe.ExpectColumnValuesToBeInSet(column="pii_left", value_set=[""]),
        # the completion, or both replies of a preference pair, are non-empty
        gxe.ExpectColumnValuesToBeBetween(column="answer_chars", min_value=1),
    ]


def clean_records_suite(min_rows: int = 50, max_prompt_chars: int = 1000) -> list:
    import great_expectations.expectations as gxe

    return records_suite(min_rows, max_prompt_chars) + [
        gxe.ExpectColumnValuesToNotMatchRegex(column="prompt", regex=EMAIL_REGEX),
    ]


def deduped_records_suite(min_rows: int = 50, max_duplicate_rate: float = 0.0) -> list:
    """Deduplicated records: as clean, and the normalized example key (``dedup_key``) is unique."""
    import great_expectations.expectations as gxe

    return records_suite(min_rows) + [
        gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(column="dedup_key", min_value=1.0 - max_duplicate_rate),
    ]


CHAT_ROLE_ORDER = r"^(system,)?(user,assistant,)*user,assistant$"


def sft_split_suite(min_train_rows: int = 50, min_eval_rows: int = 10, eval_prompts: list[str] | None = None) -> list:
    """SFT examples, one row per example with its ``split``, role sequence and shortest turn."""
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToBeUnique(column="record_id"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="user", min_value=1),
        gxe.ExpectColumnValueLengthsToBeBetween(column="assistant", min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "eval"]),
        gxe.ExpectColumnDistinctValuesToContainSet(column="split", value_set=["train", "eval"]),
        gxe.ExpectTableRowCountToBeBetween(min_value=min_train_rows + min_eval_rows),
        gxe.ExpectColumnValuesToMatchRegex(column="roles", regex=CHAT_ROLE_ORDER),
        gxe.ExpectColumnValuesToBeBetween(column="shortest_turn_chars", min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="in_both_splits", value_set=[False]),
        gxe.ExpectColumnValuesToBeInSet(column="pii_left", value_set=[""]),
    ]


# Preference prompts may carry consecutive same-role turns in their history (hh-rlhf does), never a late system turn.
PREFERENCE_ROLE_ORDER = r"^(system,)?(user,(user,|assistant,)*)?user,assistant$"


def preference_split_suite(min_train_rows: int = 16, min_eval_rows: int = 2) -> list:
    """DPO pairs, one row per pair with its ``split``, role sequence, shortest turn and ``same_reply``."""
    import great_expectations.expectations as gxe

    return [
        *[gxe.ExpectColumnToExist(column=c) for c in ("record_id", "split", "prompt", "chosen", "rejected")],
        gxe.ExpectColumnValuesToBeUnique(column="record_id"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="prompt", min_value=1),
        gxe.ExpectColumnValueLengthsToBeBetween(column="chosen", min_value=1),
        gxe.ExpectColumnValueLengthsToBeBetween(column="rejected", min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="same_reply", value_set=[False]),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "eval"]),
        gxe.ExpectColumnDistinctValuesToContainSet(column="split", value_set=["train", "eval"]),
        gxe.ExpectTableRowCountToBeBetween(min_value=min_train_rows + min_eval_rows),
        gxe.ExpectColumnValuesToMatchRegex(column="roles", regex=PREFERENCE_ROLE_ORDER),
        gxe.ExpectColumnValuesToBeBetween(column="shortest_turn_chars", min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="in_both_splits", value_set=[False]),
        gxe.ExpectColumnValuesToBeInSet(column="pii_left", value_set=[""]),
    ]


# Expectations about a whole column or the table (uniqueness, the row count, the distinct values): validated
# once, on the columns they name. Every other expectation judges each row alone, so a big frame is validated
# VALIDATE_ROWS rows at a time (GX's working copies are then a slice's, not the frame's) and the slices' results
# are added up: the same verdict, counts and first examples as one pass over every row.
_WHOLE_TABLE = {"expect_table_row_count_to_be_between", "expect_column_values_to_be_unique",
                "expect_column_proportion_of_unique_values_to_be_between",
                "expect_column_distinct_values_to_contain_set"}
VALIDATE_ROWS = 100_000


def validate_frame(frame: pd.DataFrame, suite_name: str, expectations: list,
                   result_format: str = "COMPLETE", docs_dir: str | None = None,
                   batch_rows: int = VALIDATE_ROWS) -> SuiteResult:
    """Run ``expectations`` on every row of ``frame`` in an ephemeral GX context; build Data Docs into ``docs_dir``
    if given. Frames over ``batch_rows`` rows are validated a slice at a time (see ``_WHOLE_TABLE``)."""
    validator = _Validator(result_format, docs_dir)
    if len(frame) <= batch_rows:
        result = validator.run(frame, suite_name, expectations)
    else:
        whole = [e for e in expectations if e.expectation_type in _WHOLE_TABLE]
        rows = [e for e in expectations if e.expectation_type not in _WHOLE_TABLE]
        named = {getattr(e, "column", None) for e in whole} | {"record_id"}
        columns = [c for c in frame.columns if c in named] or list(frame.columns[:1])
        parts = [validator.run(frame[columns], f"{suite_name}_whole_table", whole)] if whole else []
        parts += [validator.run(frame.iloc[lo: lo + batch_rows], f"{suite_name}_rows", rows)
                  for lo in range(0, len(frame), batch_rows)] if rows else []
        result = _merged(suite_name, expectations, parts)
    result.docs_index = str(Path(docs_dir) / "index.html") if docs_dir else None
    return result


class _Validator:
    """One ephemeral GX context (one Data Docs site); a suite and checkpoint per name, run on any frame."""

    def __init__(self, result_format: str, docs_dir: str | None) -> None:
        import great_expectations as gx

        self.gx, self.result_format = gx, result_format
        self.context = gx.get_context(mode="ephemeral")
        self.actions = []
        if docs_dir:
            self.context.add_data_docs_site(site_name="ftops", site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            })
            self.actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["ftops"]))
        self.source = self.context.data_sources.add_pandas("ftops")
        self.checkpoints: dict = {}

    def _checkpoint(self, frame: pd.DataFrame, name: str, expectations: list):
        if name not in self.checkpoints:
            gx = self.gx
            batch_definition = self.source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("whole")
            suite = self.context.suites.add(gx.ExpectationSuite(name=name))
            for expectation in expectations:
                suite.add_expectation(expectation)
            definition = self.context.validation_definitions.add(
                gx.ValidationDefinition(name=name, data=batch_definition, suite=suite))
            result_format_config: dict = {"result_format": self.result_format}
            if "record_id" in frame.columns:
                result_format_config["unexpected_index_column_names"] = ["record_id"]
            self.checkpoints[name] = self.context.checkpoints.add(gx.Checkpoint(
                name=name, validation_definitions=[definition], actions=self.actions,
                result_format=result_format_config))
        return self.checkpoints[name]

    def run(self, frame: pd.DataFrame, name: str, expectations: list) -> SuiteResult:
        checkpoint = self._checkpoint(frame, name, expectations)
        result = next(iter(checkpoint.run(batch_parameters={"dataframe": frame}).run_results.values()))
        outcomes = []
        for r in result.results:
            details = r.result or {}
            kwargs = {k: v for k, v in r.expectation_config.kwargs.items() if k != "batch_id"}
            outcomes.append(ExpectationOutcome(
                expectation=r.expectation_config.type, kwargs=kwargs, success=bool(r.success),
                unexpected_count=details.get("unexpected_count"),
                unexpected_examples=list(details.get("partial_unexpected_list") or [])[:10],
                observed_value=details.get("observed_value"),
                unexpected_record_ids=[row["record_id"] for row in (details.get("unexpected_index_list") or [])
                                       if isinstance(row, dict) and "record_id" in row][:20],
            ))
        return SuiteResult(name, bool(result.success), outcomes)


def _merged(suite_name: str, expectations: list, parts: list[SuiteResult]) -> SuiteResult:
    """One outcome per expectation, in suite order, from its outcomes on every slice."""
    import json

    groups: dict[str, list[ExpectationOutcome]] = {}
    for part in parts:
        for o in part.outcomes:
            groups.setdefault(o.expectation + json.dumps(o.kwargs, sort_keys=True, default=str), []).append(o)

    def position(o: ExpectationOutcome) -> int:
        return next((i for i, e in enumerate(expectations) if e.expectation_type == o.expectation
                     and getattr(e, "column", None) == o.kwargs.get("column")), len(expectations))

    outcomes = []
    for group in groups.values():
        first = group[0]
        counts = [o.unexpected_count for o in group if o.unexpected_count is not None]
        outcomes.append(ExpectationOutcome(
            expectation=first.expectation, kwargs=first.kwargs, success=all(o.success for o in group),
            unexpected_count=sum(counts) if counts else None,
            unexpected_examples=[x for o in group for x in o.unexpected_examples][:10],
            observed_value=next((o.observed_value for o in group if o.observed_value is not None), None),
            unexpected_record_ids=[x for o in group for x in o.unexpected_record_ids][:20]))
    outcomes.sort(key=position)
    return SuiteResult(suite_name, all(o.success for o in outcomes), outcomes)


def prepared_batch(batch: pd.DataFrame, keys: bool = False) -> pd.DataFrame:
    """``prepare_records`` of one batch, plus ``dedup_key`` when ``keys`` (the deduped_records gate's column)."""
    from ft_assets.data.dedup import example_keys

    frame = prepare_records(batch)
    if keys:
        frame["dedup_key"] = example_keys(frame)
    return frame


def records_gate_frame(directory: Path, keys: bool = False, workers: int | None = None,
                       batch_rows: int | None = None) -> pd.DataFrame:
    """What a records gate validates: every row of the artifact with the derived columns, built a batch at a
    time (over ``workers`` processes, default ``data_workers()``); equal to ``prepared_batch`` of the whole."""
    from functools import partial

    from ft_assets.data import artifact_files as files
    from ft_assets.data.streaming import BATCH_ROWS, data_workers, ordered_map, record_batches, record_rows

    batch_rows = batch_rows or BATCH_ROWS
    workers = 1 if record_rows([directory]) <= batch_rows else (workers or data_workers())
    parts = [p for p in ordered_map(partial(prepared_batch, keys=keys), record_batches(directory, batch_rows), workers)
             if len(p)]
    if not parts:
        return prepared_batch(files.read_records(directory), keys)
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


SFT_FRAME_COLUMNS = ["record_id", "split", "user", "assistant", "roles", "shortest_turn_chars", "key"]


def _sft_rows(split: str, examples: list[dict]) -> pd.DataFrame:
    """The per-example columns of ``sft_frame`` (all but ``in_both_splits``) for one split's examples."""
    import json

    from ft_assets.data.dedup import dedup_key

    rows, keys = [], []
    for r in examples:
        # The key is the whole conversation: chats that end alike after different histories do not overlap.
        history = json.dumps([t for t in r["prompt"][:-1] if t["role"] != "system"])
        turns = r["prompt"] + r["completion"]
        user, assistant = r["prompt"][-1]["content"], r["completion"][-1]["content"]
        rows.append((r["record_id"], split, user, assistant, ",".join(t["role"] for t in turns),
                     min(len(t["content"].strip()) for t in turns)))
        keys.append(dedup_key(user, assistant, history))
    frame = pd.DataFrame(rows, columns=SFT_FRAME_COLUMNS[:-1])
    frame["key"] = keys
    return with_pii_column(frame, ("user", "assistant"))


def _sft_lines(split: str, lines: list[str]) -> pd.DataFrame:
    import json

    return _sft_rows(split, [json.loads(line) for line in lines if line.strip()])


def _with_overlap(parts: list[pd.DataFrame]) -> pd.DataFrame:
    nonempty = [p for p in parts if len(p)]
    frame = pd.concat(nonempty, ignore_index=True) if len(nonempty) > 1 else (nonempty or parts)[0]
    both = set(frame.loc[frame["split"] == "train", "key"]) & set(frame.loc[frame["split"] == "eval", "key"])
    frame["in_both_splits"] = frame["key"].isin(both)
    return frame[[*SFT_FRAME_COLUMNS, "in_both_splits", "pii_left"]]


def sft_frame(train: list[dict], evaluation: list[dict]) -> pd.DataFrame:
    """One row per example: split, last user and assistant turns, role order, shortest turn, cross-split overlap,
    PII left."""
    return _with_overlap([_sft_rows("train", train), _sft_rows("eval", evaluation)])


def sft_frame_from_files(directory: Path, workers: int | None = None, batch_rows: int | None = None) -> pd.DataFrame:
    """``sft_frame`` of an example artifact's train and eval files, read and built a batch of lines at a time
    (over ``workers`` processes, default ``data_workers()``): the example dicts are never all held at once."""
    from itertools import islice

    from ft_assets.data import artifact_files as files
    from ft_assets.data.streaming import BATCH_ROWS, data_workers, ordered_map

    batch_rows = batch_rows or BATCH_ROWS

    def chunks():
        for split in ("train", "eval"):
            with files.examples_path(directory, split).open(encoding="utf-8") as handle:
                while lines := list(islice(handle, batch_rows)):
                    yield split, lines

    def n_lines(split: str) -> int:
        with files.examples_path(directory, split).open("rb") as handle:
            return sum(1 for _ in handle)

    workers = 1 if n_lines("train") + n_lines("eval") <= batch_rows else (workers or data_workers())
    parts = list(ordered_map(_sft_chunk, chunks(), workers))
    return _with_overlap(parts or [_sft_rows("train", [])])


def _sft_chunk(item: tuple[str, list[str]]) -> pd.DataFrame:
    return _sft_lines(*item)
