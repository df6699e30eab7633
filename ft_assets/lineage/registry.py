"""The model registry: every evaluated merged and quantized model version, its aliases and every alias move.

Plain SQLite, no Dagster. A model version's id is ``<asset>@<artifact version>`` for the merged model and
``quantized_model@<artifact version>/<method>`` for each quantized variant, so the id names the immutable
artifact directory it stands for. Its gates are those of its latest evaluation. Aliases (``candidate``,
``production`` or any free name) point at one version each; every move is appended to ``alias_events``
(who, when, from, to, why) and never rewritten. ``production`` only moves onto a version whose gates passed.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ft_assets.secrets import scrub

PRODUCTION = "production"
CANDIDATE = "candidate"
ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
# Variants whose gates every model derived from the adapter inherits: a quantized model of a merge that
# does not match its adapter is no better than that merge.
ANCESTOR_VARIANTS = ("adapter", "merged")
MIN_PREFIX = 4

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY, asset TEXT NOT NULL, variant TEXT NOT NULL, method TEXT, version TEXT NOT NULL,
    path TEXT NOT NULL, created_at TEXT, registered_at TEXT NOT NULL, run_id TEXT, storage_id INTEGER,
    eval_report TEXT, eval_storage_id INTEGER, evaluated_at TEXT, metrics TEXT, gates TEXT, card_path TEXT
);
CREATE TABLE IF NOT EXISTS aliases (alias TEXT PRIMARY KEY, model_id TEXT NOT NULL REFERENCES models(id),
                                    updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alias_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, alias TEXT NOT NULL, from_id TEXT, to_id TEXT NOT NULL,
    actor TEXT NOT NULL, at TEXT NOT NULL, reason TEXT, source TEXT
);
CREATE TABLE IF NOT EXISTS lineage_index (
    model_id TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (model_id, kind, value)
);
CREATE INDEX IF NOT EXISTS lineage_value ON lineage_index (value);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


class UnknownModel(KeyError):
    """No model version, alias or unique prefix matches."""


class PromotionRefused(ValueError):
    """The version may not take the alias: its gates failed, it was never evaluated, or its artifact is gone."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def model_id(asset: str, version: str, method: str | None = None) -> str:
    return f"{asset}@{version}" + (f"/{method}" if method else "")


def gate_owner(gate_name: str, variants: list[str]) -> str | None:
    """The variant a report gate judges: the longest variant name the gate name starts with."""
    owners = [v for v in variants if gate_name.startswith(v + "_")]
    return max(owners, key=len) if owners else None


def gates_for_variant(gates: list[dict], variant: str, variants: list[str]) -> list[dict]:
    """The report gates that must pass for ``variant``: its own and those of the models it derives from."""
    owners = {variant, *ANCESTOR_VARIANTS}
    return [g for g in gates if gate_owner(g["name"], variants) in owners or gate_owner(g["name"], variants) is None]


@dataclass
class ModelVersion:
    id: str
    asset: str
    variant: str
    version: str
    path: str
    method: str | None = None
    created_at: str | None = None
    registered_at: str | None = None
    run_id: str | None = None
    storage_id: int | None = None
    eval_report: str | None = None
    eval_storage_id: int | None = None
    evaluated_at: str | None = None
    metrics: dict = field(default_factory=dict)
    gates: list[dict] = field(default_factory=list)
    card_path: str | None = None
    aliases: list[str] = field(default_factory=list)

    @property
    def failed_gates(self) -> list[dict]:
        return [g for g in self.gates if not g.get("passed")]

    @property
    def gates_passed(self) -> bool | None:
        """None: never evaluated."""
        return None if not self.gates else not self.failed_gates

    def as_dict(self) -> dict:
        return {**asdict(self), "gates_passed": self.gates_passed}


@dataclass
class AliasMove:
    alias: str
    from_id: str | None
    to_id: str
    actor: str
    at: str
    reason: str | None = None
    source: str | None = None
    seq: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class Registry:
    """One SQLite file; safe for several processes (moves run in an immediate transaction)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so a gate check and the move it allows are one step.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- versions ---------------------------------------------------------------------------------------

    def register(self, model: ModelVersion, lineage: dict[str, list[str]] | None = None) -> ModelVersion:
        """Insert a version, or record a newer evaluation of it; the first registration time is kept."""
        with self._transaction() as db:
            row = db.execute("SELECT registered_at, eval_storage_id FROM models WHERE id = ?", (model.id,)).fetchone()
            registered_at = row["registered_at"] if row else now()
            # An older evaluation synced late must not overwrite a newer one.
            if row and row["eval_storage_id"] and model.eval_storage_id and row["eval_storage_id"] > \
                    model.eval_storage_id:
                return self.get(model.id)
            db.execute(
                "INSERT OR REPLACE INTO models (id, asset, variant, method, version, path, created_at, registered_at,"
                " run_id, storage_id, eval_report, eval_storage_id, evaluated_at, metrics, gates, card_path)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (model.id, model.asset, model.variant, model.method, model.version, model.path, model.created_at,
                 registered_at, model.run_id, model.storage_id, model.eval_report, model.eval_storage_id,
                 model.evaluated_at, json.dumps(scrub(model.metrics)), json.dumps(scrub(model.gates)),
                 scrub(model.card_path)))
            for kind, values in (lineage or {}).items():
                db.executemany("INSERT OR IGNORE INTO lineage_index (model_id, kind, value) VALUES (?, ?, ?)",
                               [(model.id, kind, scrub(str(v))) for v in values if v])
        return self.get(model.id)

    def _from_row(self, row: sqlite3.Row) -> ModelVersion:
        data = dict(row)
        data["metrics"] = json.loads(data["metrics"] or "{}")
        data["gates"] = json.loads(data["gates"] or "[]")
        data["aliases"] = [r[0] for r in self._db.execute(
            "SELECT alias FROM aliases WHERE model_id = ? ORDER BY alias", (data["id"],))]
        return ModelVersion(**data)

    def get(self, model_id_: str) -> ModelVersion:
        row = self._db.execute("SELECT * FROM models WHERE id = ?", (model_id_,)).fetchone()
        if row is None:
            raise UnknownModel(f"no model version {model_id_!r} in the registry {self.path}")
        return self._from_row(row)

    def versions(self) -> list[ModelVersion]:
        rows = self._db.execute("SELECT * FROM models ORDER BY registered_at DESC, created_at DESC, id").fetchall()
        return [self._from_row(r) for r in rows]

    def resolve(self, ref: str) -> ModelVersion:
        """A model id, an alias, or a unique prefix of an id or of an artifact version."""
        row = self._db.execute("SELECT model_id FROM aliases WHERE alias = ?", (ref,)).fetchone()
        if row:
            return self.get(row[0])
        exact = self._db.execute("SELECT * FROM models WHERE id = ?", (ref,)).fetchone()
        if exact:
            return self._from_row(exact)
        if len(ref) < MIN_PREFIX:
            raise UnknownModel(f"{ref!r} is no alias or model id (prefixes need {MIN_PREFIX}+ characters)")
        rows = self._db.execute("SELECT * FROM models WHERE id LIKE ? || '%' OR version LIKE ? || '%' ORDER BY id",
                                (ref, ref)).fetchall()
        if len(rows) > 1:
            # A bare artifact version names its merged model first; quantized variants need the /method.
            merged = [r for r in rows if r["asset"] == "merged_model"]
            if len(merged) == 1 and all(r["version"].startswith(ref) for r in rows) and "/" not in ref:
                return self._from_row(merged[0])
            raise UnknownModel(f"{ref!r} is ambiguous: {', '.join(r['id'] for r in rows)}")
        if not rows:
            raise UnknownModel(f"no model version, alias or prefix {ref!r} in the registry {self.path}")
        return self._from_row(rows[0])

    # -- aliases ----------------------------------------------------------------------------------------

    def aliases(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self._db.execute("SELECT alias, model_id FROM aliases ORDER BY alias")}

    def set_alias(self, alias: str, ref: str, *, actor: str, reason: str | None = None,
                  source: str | None = None) -> AliasMove | None:
        """Point ``alias`` at a version; None when it already points there. ``production`` is gate-checked."""
        if not ALIAS_PATTERN.match(alias):
            raise ValueError(f"alias {alias!r}: use lower-case letters, digits, '_', '.', '-' (start with a letter)")
        model = self.resolve(ref)
        with self._transaction() as db:
            if alias == PRODUCTION:
                # Re-read inside the lock: a concurrent re-evaluation may just have failed this version.
                check_promotable(self._from_row(db.execute("SELECT * FROM models WHERE id = ?",
                                                           (model.id,)).fetchone()))
            row = db.execute("SELECT model_id FROM aliases WHERE alias = ?", (alias,)).fetchone()
            current = row[0] if row else None
            if current == model.id:
                return None
            move = AliasMove(alias, current, model.id, actor, now(), reason, source)
            db.execute("INSERT OR REPLACE INTO aliases (alias, model_id, updated_at) VALUES (?, ?, ?)",
                       (alias, model.id, move.at))
            cursor = db.execute("INSERT INTO alias_events (alias, from_id, to_id, actor, at, reason, source)"
                                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                                (alias, current, model.id, actor, move.at, reason, source))
            move.seq = cursor.lastrowid
        return move

    def promote(self, ref: str, *, actor: str, reason: str | None = None, source: str | None = None
                ) -> AliasMove | None:
        return self.set_alias(PRODUCTION, ref, actor=actor, reason=reason, source=source)

    def history(self, model_id_: str | None = None, alias: str | None = None) -> list[AliasMove]:
        query, args = "SELECT * FROM alias_events WHERE 1=1", []
        if model_id_:
            query += " AND (to_id = ? OR from_id = ?)"
            args += [model_id_, model_id_]
        if alias:
            query += " AND alias = ?"
            args.append(alias)
        return [AliasMove(**dict(r)) for r in self._db.execute(query + " ORDER BY seq", args)]

    # -- reverse lineage and bookkeeping ----------------------------------------------------------------

    def find_by_lineage(self, value: str) -> list[dict]:
        """Model versions whose recorded lineage holds ``value`` (exactly, or as a prefix of 6+ characters)."""
        if len(value) >= 6:
            rows = self._db.execute("SELECT * FROM lineage_index WHERE value = ? OR value LIKE ? || '%' "
                                    "ORDER BY model_id, kind", (value, value))
        else:
            rows = self._db.execute("SELECT * FROM lineage_index WHERE value = ? ORDER BY model_id, kind", (value,))
        return [dict(r) for r in rows]

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def check_promotable(model: ModelVersion) -> None:
    """Raise PromotionRefused unless the version was evaluated, every gate passed and its artifact exists."""
    if not model.gates:
        raise PromotionRefused(f"{model.id} has no evaluation: run eval_report on it first")
    if model.failed_gates:
        failed = "; ".join(f"{g['name']} ({g.get('value')} vs threshold {g.get('threshold')})"
                           for g in model.failed_gates)
        raise PromotionRefused(f"{model.id} failed its gates in eval_report {model.eval_report}: {failed}")
    if not Path(model.path).exists():
        raise PromotionRefused(f"{model.id}: its artifact {model.path} no longer exists")
