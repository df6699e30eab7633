"""Lineage audit of a model version, read from Dagster's own records and the artifact cards.

The walk starts at the model's materialization event and follows Dagster's data provenance
(``dagster/input_event_pointer/<upstream>`` tags: the storage id of the exact upstream event each step
read) up to the raw drops. Every node is checked against its ``card.json``: same version, same run,
same input versions. Records are read per run (one query brings a run's materializations and check
evaluations) or by storage id, never by scanning the whole event log.

Dagster is imported inside functions: ``ftops lineage`` must answer in well under two seconds.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ft_assets.lineage.freshness import store_audit
from ft_assets.lineage.registry import ModelVersion, Registry, UnknownModel, gates_for_variant, model_id

if TYPE_CHECKING:
    from dagster import DagsterInstance
    from dagster._core.event_api import EventLogRecord

POINTER = "dagster/input_event_pointer/"
DATA_ASSETS = ("raw_records", "clean_records", "deduped_records", "sft_dataset")
ADAPTERS = ("sft_adapter", "dpo_adapter", "grpo_adapter")
CHAIN_ORDER = (*DATA_ASSETS, "preference_dataset", "base_model", *ADAPTERS, "policy", "merged_model",
               "quantized_model", "eval_report")
CARD_KEYS = {"asset", "run_id", "inputs", "config", "code_version", "version", "published_at"}
UNKNOWN = "unknown"
# Metadata that the chain already shows elsewhere (drops, files) or that says nothing about the data.
DATASET_NOISE = {"size_bytes", "drops", "file", "sha256", "bytes", "drop_id", "formats", "example"}
MAX_JSON_CHARS = 2000  # metadata bigger than this (loss histories, tables) stays in the UI, not in the audit


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _plain(value: Any) -> Any:
    """A metadata value as plain JSON data; None for Markdown and oversized values."""
    from dagster import MarkdownMetadataValue

    if isinstance(value, MarkdownMetadataValue):
        return None
    raw = getattr(value, "value", value)
    raw = str(raw) if isinstance(raw, Path) else raw
    if isinstance(raw, (dict, list)) and len(json.dumps(raw, default=str)) > MAX_JSON_CHARS:
        return None
    return raw if isinstance(raw, (str, int, float, bool, dict, list, type(None))) else str(raw)


def _split(name: str) -> tuple[str, str | None]:
    """``raw_records[drop-0001]`` (a partitioned input, as cards name them) -> asset and partition."""
    match = re.fullmatch(r"(.+)\[(.+)\]", name)
    return (match[1], match[2]) if match else (name, None)


def _read_card(path: str | None) -> dict:
    card = Path(path) / "card.json" if path else None
    return json.loads(card.read_text()) if card and card.is_file() else {}


class Records:
    """Targeted reads of one instance's event log: materializations by storage id, check evaluations by run.

    Storage ids here are the event-log index ids that provenance pointers and check targets name; a run's
    own records (``get_records_for_run``) are numbered per run shard on SQLite, so they are used for check
    evaluations only.
    """

    def __init__(self, instance: DagsterInstance):
        self.instance = instance
        self._by_storage_id: dict[int, EventLogRecord] = {}
        self._checks: dict[int, list[dict]] = {}
        self._runs: set[str] = set()

    def load_run(self, run_id: str) -> None:
        """Every check evaluation of a run, by the storage id of the materialization it judged."""
        from dagster import DagsterEventType

        if run_id in self._runs:
            return
        self._runs.add(run_id)
        for record in self.instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
                                                        ).records:
            evaluation = record.event_log_entry.dagster_event.event_specific_data
            target = evaluation.target_materialization_data
            if target is not None:
                self._checks.setdefault(target.storage_id, []).append({
                    "check": evaluation.check_name, "asset": evaluation.asset_key.to_user_string(),
                    "passed": evaluation.passed, "severity": getattr(evaluation.severity, "value", None),
                    "blocking": evaluation.blocking, "description": evaluation.description,
                    "run_id": record.run_id, "at": _iso(record.event_log_entry.timestamp)})

    def materialization(self, asset: str, storage_id: int) -> EventLogRecord | None:
        if storage_id not in self._by_storage_id:
            from dagster import AssetKey, AssetRecordsFilter

            found = self.instance.fetch_materializations(
                AssetRecordsFilter(AssetKey(asset), storage_ids=[storage_id]), limit=1).records
            if not found:
                return None
            self._by_storage_id[storage_id] = found[0]
        return self._by_storage_id[storage_id]

    def by_version(self, asset: str, version: str, run_id: str | None = None, partition: str | None = None,
                   limit: int = 200) -> EventLogRecord | None:
        """The newest materialization of ``asset`` (``partition``) whose version is (or starts with) ``version``."""
        from dagster import AssetKey, AssetRecordsFilter

        records_filter = AssetRecordsFilter(AssetKey(asset), asset_partitions=[partition] if partition else None)
        for record in self.instance.fetch_materializations(records_filter, limit=limit).records:
            recorded = record.asset_materialization.metadata.get("version")
            if recorded is not None and str(recorded.value).startswith(version) and run_id in (None, record.run_id):
                self._by_storage_id.setdefault(record.storage_id, record)
                return record
        return None

    def checks_for(self, storage_id: int) -> list[dict]:
        return self._checks.get(storage_id, [])


def node(records: Records, record: EventLogRecord) -> dict:
    """One step of the chain: the Dagster record, its card, and any disagreement between them."""
    mat = record.asset_materialization
    metadata = {k: v for k, v in ((k, _plain(v)) for k, v in mat.metadata.items()) if v is not None}
    records.load_run(record.run_id)
    card = _read_card(metadata.get("path"))
    tags = mat.tags or {}
    inputs = metadata.get("input_versions") or {k: v.get("version") for k, v in card.get("inputs", {}).items()}
    asset = record.asset_key.to_user_string()
    name = f"{asset}[{mat.partition}]" if mat.partition else asset
    problems = []
    if not card:
        problems.append(f"{asset}: no card.json at {metadata.get('path')}")
    else:
        if card.get("version") != metadata.get("version"):
            problems.append(f"{asset}: card version {card.get('version')} != recorded {metadata.get('version')}")
        if card.get("run_id") != record.run_id:
            problems.append(f"{asset}: card run {card.get('run_id')} != recorded run {record.run_id}")
        card_inputs = {k: v.get("version") for k, v in card.get("inputs", {}).items()}
        if card_inputs != inputs:
            problems.append(f"{asset}: card inputs {card_inputs} != recorded input_versions {inputs}")
    return {
        "name": name, "asset": asset, "version": metadata.get("version"), "path": metadata.get("path"),
        "data_version": tags.get("dagster/data_version"), "dvc_md5": metadata.get("dvc_md5") or None,
        "partition": mat.partition, "run_id": record.run_id, "storage_id": record.storage_id,
        "materialized_at": _iso(record.timestamp),
        "code_version": metadata.get("code_version") or card.get("code_version") or UNKNOWN,
        "config": card.get("config", {}), "inputs": inputs,
        # Dagster writes "NULL" for an input it could not point at an event; the card's inputs still name it.
        "input_event_pointers": {k[len(POINTER):]: int(v) for k, v in tags.items()
                                 if k.startswith(POINTER) and str(v).isdigit()},
        "metadata": {k: v for k, v in metadata.items() if k not in ("path", "version", "input_versions",
                                                                    "code_version", "dvc_md5")},
        "card": {k: v for k, v in card.items() if k not in CARD_KEYS},
        "checks": records.checks_for(record.storage_id),
        "problems": problems,
    }


def walk(records: Records, start: EventLogRecord) -> tuple[dict[str, dict], list[str]]:
    """Every upstream node of ``start``, by name, following the recorded input event pointers.

    A partitioned input (``raw_records[drop-0001]``: one per drop) has no single pointer; it is found by
    the version the card and the ``input_versions`` metadata record, among that partition's events.
    """
    nodes: dict[str, dict] = {}
    problems: list[str] = []
    stack = [start]
    while stack:
        current = node(records, stack.pop())
        seen = nodes.get(current["name"])
        if seen is not None:
            if seen["version"] != current["version"]:
                problems.append(f"two versions of {current['name']} in one chain: {seen['version']}, "
                                f"{current['version']}")
            continue
        nodes[current["name"]] = current
        problems += current["problems"]
        card_inputs = _read_card(current["path"]).get("inputs", {})
        partitioned = {_split(n)[0] for n in current["inputs"] if _split(n)[1]}
        names = set(current["inputs"]) | (set(current["input_event_pointers"]) - partitioned)
        for name in sorted(names):
            asset, partition = _split(name)
            expected = current["inputs"].get(name)
            pointer = current["input_event_pointers"].get(name)
            upstream = records.materialization(asset, pointer) if pointer is not None else None
            if upstream is None and expected:
                upstream_run = _read_card(card_inputs.get(name, {}).get("path")).get("run_id")
                upstream = records.by_version(asset, expected, upstream_run, partition)
            if upstream is None:
                problems.append(f"{current['name']}: no Dagster record of its input {name} {expected}")
                continue
            recorded = upstream.asset_materialization.metadata.get("version")
            if expected and recorded is not None and recorded.value != expected:
                problems.append(f"{current['name']} records input {name}={expected} but read event "
                                f"{upstream.storage_id} with version {recorded.value}")
            stack.append(upstream)
    order = {a: i for i, a in enumerate(CHAIN_ORDER)}
    ordered = dict(sorted(nodes.items(), key=lambda kv: (order.get(kv[1]["asset"], len(order)), kv[0])))
    return ordered, problems


def raw_drops(nodes: dict[str, dict]) -> list[dict]:
    """The drops behind the data: ids, files, sizes, content hashes (``unknown`` where not recorded).

    Read from every raw_records node's card (one per drop partition, or one for all drops) and from the
    clean_records card, which lists the drops it read with their raw versions.
    """
    drops: dict[str, dict] = {}
    sources = [n for n in nodes.values() if n["asset"] == "raw_records"]
    sources += [n for n in nodes.values() if n["asset"] == "clean_records"]
    for source in sources:
        found = source["card"].get("drops") or {}
        if isinstance(found, list):  # a list of drop dicts or ids
            found = {(d.get("drop_id") or d.get("id") or d.get("file")) if isinstance(d, dict) else str(d): d
                     for d in found}
        if not found and source["asset"] == "raw_records" and source["partition"]:
            found = {source["partition"]: {}}
        for drop_id, info in found.items():
            info = info if isinstance(info, dict) else {"file": str(info)}
            entry = drops.setdefault(drop_id, {"id": drop_id})
            for key, value in (("file", info.get("file") or info.get("path")), ("bytes", info.get("bytes")),
                               ("sha256", info.get("sha256") or info.get("content_hash")),
                               ("raw_version", info.get("raw_version") or (
                                   source["version"] if source["asset"] == "raw_records" else None))):
                if value is not None and entry.get(key) is None:
                    entry[key] = value
    for entry in drops.values():
        entry.setdefault("sha256", UNKNOWN)
    return [drops[k] for k in sorted(drops)]


def shipped_adapter(nodes: dict[str, dict]) -> dict | None:
    """The adapter node the policy chose (SFT, DPO or GRPO); the SFT adapter for chains without a policy."""
    policy = next((n for n in nodes.values() if n["asset"] == "policy"), None)
    name = ((policy or {}).get("card", {}).get("adapter") or {}).get("asset", "sft_adapter")
    return next((n for n in nodes.values() if n["asset"] == name), None)


def training(nodes: dict[str, dict]) -> dict:
    adapter = shipped_adapter(nodes)
    if adapter is None:
        return {}
    policy = next((n for n in nodes.values() if n["asset"] == "policy"), None)
    summary = adapter["card"].get("training") or {}
    config = adapter["config"]

    def pick(key: str) -> Any:
        for source in (summary, adapter["card"], config):
            if source.get(key) not in (None, ""):
                return source[key]
        return UNKNOWN

    return {"adapter": adapter["asset"], "policy_reason": (policy or {}).get("card", {}).get("reason"),
            "method": pick("method"), "config_hash": pick("config_hash"), "seed": pick("seed"),
            "library_versions": pick("library_versions"), "git_commit": adapter["code_version"],
            "config": config, "summary": {k: v for k, v in summary.items() if k not in (
                "method", "config_hash", "library_versions", "seed")}}


def lineage_keys(nodes: dict[str, dict]) -> dict[str, list[str]]:
    """What a reverse lookup may ask by: dataset versions and DVC md5s, base model, raw drops and hashes."""
    keys: dict[str, list[str]] = {}
    for n in nodes.values():
        if n["asset"] in (*DATA_ASSETS, "base_model"):
            keys.setdefault(n["asset"], []).append(n["version"])
            if n["dvc_md5"]:
                keys.setdefault(f"{n['asset']}:dvc_md5", []).append(n["dvc_md5"])
    drops = raw_drops(nodes)
    keys["drop"] = [d["id"] for d in drops]
    keys["drop:sha256"] = [d["sha256"] for d in drops if d["sha256"] != UNKNOWN]
    return keys


# -- registration -----------------------------------------------------------------------------------------


def evaluated_models(records: Records, eval_record: EventLogRecord, cards_dir: Path | None = None
                     ) -> list[tuple[ModelVersion, dict[str, list[str]]]]:
    """The merged and quantized model versions one eval_report materialization judged, with their lineage keys."""
    evaluation = node(records, eval_record)
    report = json.loads((Path(evaluation["path"]) / "report.json").read_text())
    variants = list(report["variants"])
    pointers, inputs = evaluation["input_event_pointers"], evaluation["inputs"]
    out = []
    for asset in ("merged_model", "quantized_model"):
        if asset in pointers:
            record = records.materialization(asset, pointers[asset])
        else:
            record = records.by_version(asset, inputs[asset], evaluation["run_id"]) if asset in inputs else None
        if record is None:
            continue
        chain, _ = walk(records, record)
        model = chain[asset]
        keys = lineage_keys(chain)
        targets = [("merged", None, model["path"])] if asset == "merged_model" else [
            (name, info["method"], info["path"]) for name, info in report["variants"].items()
            if info.get("kind") == "quantized"]
        for variant, method, path in targets:
            card = cards_dir / variant / "MODEL_CARD.md" if cards_dir else None
            out.append((ModelVersion(
                id=model_id(asset, model["version"], method), asset=asset, variant=variant,
                method=method or f"merge ({model['config'].get('dtype', UNKNOWN)})", version=model["version"],
                path=str(path), created_at=model["materialized_at"], run_id=model["run_id"],
                storage_id=model["storage_id"], eval_report=evaluation["version"],
                eval_storage_id=evaluation["storage_id"], evaluated_at=evaluation["materialized_at"],
                metrics=report["models"].get(variant, {}), gates=gates_for_variant(report["gates"], variant, variants),
                card_path=str(card) if card and card.is_file() else None), keys))
    return out


def register_evaluation(registry: Registry, records: Records, eval_record: EventLogRecord,
                        cards_dir: Path | None = None) -> list[ModelVersion]:
    return [registry.register(model, keys) for model, keys in evaluated_models(records, eval_record, cards_dir)]


def _cursor_key(instance: DagsterInstance) -> str:
    try:
        return f"eval_cursor:{instance.root_directory}"
    except Exception:  # an instance without a local root (e.g. Postgres-only) still gets one cursor
        return "eval_cursor"


def sync(registry: Registry, instance: DagsterInstance, records: Records | None = None) -> list[ModelVersion]:
    """Register every eval_report materialization the registry has not seen, gates failed or not.

    A run whose model gate fails stops before ``registered_models``; its versions still belong in the
    registry (listed, with the failed gate, and refused promotion), so every reader catches up first.
    """
    from dagster import AssetKey, AssetRecordsFilter

    records = records or Records(instance)
    key = _cursor_key(instance)
    cursor = start = int(registry.get_meta(key) or 0)
    registered: list[ModelVersion] = []
    while True:
        result = instance.fetch_materializations(
            AssetRecordsFilter(AssetKey("eval_report"), after_storage_id=cursor), limit=50, ascending=True)
        for record in result.records:
            try:
                registered += register_evaluation(registry, records, record)
            except (OSError, KeyError, ValueError) as exc:  # a deleted report must not wedge the registry
                registry.set_meta(f"skipped:{record.storage_id}", f"{type(exc).__name__}: {exc}")
            cursor = record.storage_id
        if cursor != start:
            registry.set_meta(key, str(cursor))
        if not result.has_more:
            return registered


# -- the audit ----------------------------------------------------------------------------------------------


def resolve(registry: Registry, records: Records, ref: str) -> ModelVersion:
    """A registered version (id, alias or prefix); else a merged/quantized materialization never evaluated."""
    try:
        return registry.resolve(ref)
    except UnknownModel:
        asset, _, rest = ref.partition("@") if "@" in ref else ("", "", ref)
        version, _, method = rest.partition("/")
        for name in [asset] if asset else ["merged_model", "quantized_model"]:
            record = records.by_version(name, version) if len(version) >= 4 else None
            if record is not None:
                metadata = record.asset_materialization.metadata
                found = metadata["version"].value
                path = Path(metadata["path"].value) / method if method else Path(metadata["path"].value)
                return ModelVersion(id=model_id(name, found, method or None), asset=name,
                                    variant="merged" if name == "merged_model" else method or UNKNOWN,
                                    version=found, path=str(path), method=method or None, run_id=record.run_id,
                                    storage_id=record.storage_id, created_at=_iso(record.timestamp))
        raise


def audit(registry: Registry, instance: DagsterInstance, ref: str, synced: bool = False) -> dict:
    """The whole chain behind one model version, as plain JSON data (``synced``: the caller just ran sync)."""
    records = Records(instance)
    if not synced:
        sync(registry, instance, records)
    model = resolve(registry, records, ref)
    start = records.materialization(model.asset, model.storage_id) if model.storage_id else None
    start = start or records.by_version(model.asset, model.version)
    if start is None:
        raise UnknownModel(f"{model.id} has no materialization in the Dagster instance at "
                           f"{getattr(instance, 'root_directory', '?')}")
    nodes, problems = walk(records, start)
    evaluation = None
    if model.eval_storage_id:
        eval_record = records.materialization("eval_report", model.eval_storage_id)
        if eval_record is not None:
            eval_node = node(records, eval_record)
            report_path = Path(eval_node["path"]) / "report.json"
            evaluation = {"eval_report": eval_node["version"], "run_id": eval_node["run_id"],
                          "evaluated_at": eval_node["materialized_at"], "report": str(report_path),
                          "eval_rows": eval_node["metadata"].get("eval_rows"),
                          "metrics": model.metrics, "gates": model.gates, "gates_passed": model.gates_passed,
                          "checks": eval_node["checks"], "inputs": eval_node["inputs"]}
            if report_path.is_file():
                report = json.loads(report_path.read_text())
                evaluation["eval_rows"] = report.get("eval_rows")
                evaluation["compared_to"] = {k: report["models"][k] for k in ("base", "adapter")
                                             if k in report["models"]}
            if eval_node["inputs"].get(model.asset) not in (None, model.version):
                problems.append(f"eval_report {eval_node['version']} evaluated {model.asset} "
                                f"{eval_node['inputs'].get(model.asset)}, not {model.version}")
    base = nodes.get("base_model", {}).get("card", {}).get("base_model") or {}
    result = {
        "model": {**model.as_dict(), "aliases": model.aliases},
        "raw_drops": raw_drops(nodes),
        "datasets": {name: {"version": n["version"], "dvc_md5": n["dvc_md5"], "data_version": n["data_version"],
                            "run_id": n["run_id"], "config": n["config"],
                            "counts": {k: v for k, v in n["metadata"].items() if k not in DATASET_NOISE},
                            **({"pii_redacted": n["card"]["pii_redacted"]} if "pii_redacted" in n["card"] else {})}
                     for name, n in nodes.items() if n["asset"] in DATA_ASSETS},
        "base_model": {"version": nodes.get("base_model", {}).get("version"),
                       "model_id": base.get("model_id", UNKNOWN), "revision": base.get("revision") or UNKNOWN,
                       "source": base.get("source", UNKNOWN), "parameters": base.get("parameters")},
        "training": training(nodes),
        "chain": list(nodes.values()),
        "evaluation": evaluation,
        "checks": [c for n in nodes.values() for c in n["checks"]],
        "promotions": [m.as_dict() for m in registry.history(model.id)],
        "verified": not problems,
        "problems": problems,
    }
    if evaluation is not None and not problems:  # a registered, verified chain is final: later readers skip Dagster
        store_audit(registry, result)
    return result


def trained_on(registry: Registry, instance: DagsterInstance, value: str, synced: bool = False) -> dict:
    """Reverse lookup: the model versions whose lineage holds this dataset version, DVC md5, drop id or hash."""
    if not synced:
        sync(registry, instance)
    hits = registry.find_by_lineage(value)
    models: dict[str, dict] = {}
    for hit in hits:
        entry = models.setdefault(hit["model_id"], {"matched": []})
        entry["matched"].append({"kind": hit["kind"], "value": hit["value"]})
    for mid, entry in models.items():
        model = registry.get(mid)
        entry.update(id=mid, variant=model.variant, created_at=model.created_at, aliases=model.aliases,
                     gates_passed=model.gates_passed)
    return {"query": value, "models": sorted(models.values(), key=lambda m: m["created_at"] or "", reverse=True)}


# -- text rendering -----------------------------------------------------------------------------------------


def _short(value: Any, n: int = 16) -> str:
    return UNKNOWN if value in (None, "") else str(value)[:n]


def _kv(data: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in data.items() if not isinstance(v, (dict, list))) or "-"


def render(result: dict) -> str:
    """The audit as a readable, top-to-bottom chain."""
    model, lines = result["model"], []
    aliases = ", ".join(model["aliases"]) or "none"
    lines += [f"{model['id']}  variant {model['variant']}  aliases: {aliases}", f"  path {model['path']}", ""]
    lines.append("raw drops")
    for drop in result["raw_drops"]:
        lines.append(f"  {drop['id']}  sha256 {_short(drop['sha256'], 16)}  {drop.get('bytes') or '?'} B  "
                     f"{drop.get('file') or ''}")
    for asset, data in result["datasets"].items():
        counts = data["counts"]
        dvc = f"  dvc {data['dvc_md5']}" if data["dvc_md5"] else ""
        lines += [f"{asset} {data['version']}{dvc}", f"  config  {_kv(data['config'])}",
                  f"  counts  {_kv(counts)}"]
        for key in ("quarantine_reasons", "pii_redacted"):
            if counts.get(key) or data.get(key):
                lines.append(f"  {key.replace('_', ' ')}  {json.dumps(counts.get(key) or data.get(key))}")
    base = result["base_model"]
    lines += [f"base_model {base['version']}", f"  {base['model_id']}  revision {base['revision']}  "
              f"({base['source']}, {base['parameters'] or '?'} parameters)"]
    train = result["training"]
    if train:
        adapter = next(n for n in result["chain"] if n["asset"] == train.get("adapter", "sft_adapter"))
        libraries = train["library_versions"]
        libraries = _kv(libraries) if isinstance(libraries, dict) else libraries
        lines += [f"{adapter['asset']} {adapter['version']}  run {adapter['run_id']}"
                  + (f"  (policy: {train['policy_reason']})" if train.get("policy_reason") else ""),
                  f"  method {train['method']}  config hash {train['config_hash']}  seed {train['seed']}",
                  f"  git commit {train['git_commit']}", f"  libraries  {libraries}",
                  f"  config  {_kv(train['config'])}", f"  result  {_kv(train['summary'])}"]
    for n in result["chain"]:
        if n["asset"] in ("merged_model", "quantized_model"):
            extra = n["card"].get("merge_check") or {v: {"size_bytes": i.get("size_bytes")} for v, i in
                                                     (n["card"].get("variants") or {}).items()}
            lines += [f"{n['asset']} {n['version']}  run {n['run_id']}  inputs {_kv(n['inputs'])}",
                      f"  config  {_kv(n['config'])}  {_kv(extra) if n['asset'] == 'merged_model' else ''}".rstrip()]
    evaluation = result["evaluation"]
    if evaluation:
        lines.append(f"eval_report {evaluation['eval_report']}  run {evaluation['run_id']}  "
                     f"{evaluation.get('eval_rows') or '?'} held-out rows")
        metrics = {k: round(v, 4) if isinstance(v, float) else v for k, v in evaluation["metrics"].items()}
        lines.append(f"  metrics  {_kv(metrics)}")
        for gate in evaluation["gates"]:
            lines.append(f"  gate {gate['name']}: {'passed' if gate['passed'] else 'FAILED'} "
                         f"({gate.get('value')} vs threshold {gate.get('threshold')})")
    else:
        lines.append("eval_report: not evaluated")
    lines.append("dagster checks")
    for check in result["checks"] + (evaluation["checks"] if evaluation else []):
        lines.append(f"  {check['asset']}:{check['check']}  {'passed' if check['passed'] else 'FAILED'}"
                     f"{'' if check['blocking'] else ' (warning)'}")
    lines.append("promotions")
    for move in result["promotions"] or []:
        lines.append(f"  {move['at']}  {move['alias']}: {move['from_id'] or '-'} -> {move['to_id']}  "
                     f"by {move['actor']}{'  (' + move['reason'] + ')' if move['reason'] else ''}")
    if not result["promotions"]:
        lines.append("  none")
    lines.append("verified: Dagster records and artifact cards agree" if result["verified"]
                 else "NOT VERIFIED:\n  " + "\n  ".join(result["problems"]))
    return "\n".join(lines)
