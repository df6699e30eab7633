"""Which loaded model version answers a request: registry aliases, polled and swapped live, and an A/B split.

Each route follows one alias (the primary one, default ``production`` else ``candidate``, plus any A/B
aliases). A poll thread re-resolves the aliases; when one moved, the new version is loaded beside the old,
the route table is replaced in one assignment, and the old engine finishes what it holds before it stops.
A request that took the old engine just before the swap is still answered by it, so none fails.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ft_assets.lineage.registry import CANDIDATE, PRODUCTION, ModelVersion, Registry, UnknownModel
from ft_assets.serving.engine import Engine

log = logging.getLogger("ftops.serve")
DEFAULT_ALIASES = (PRODUCTION, CANDIDATE)


class NoModel(LookupError):
    """The request names no served alias or version, or nothing is loaded yet."""


@dataclass(frozen=True)
class Route:
    name: str  # the alias as configured (the primary one may be the fallback chain)
    alias: str  # the alias it resolved to
    engine: Engine

    @property
    def version(self) -> str:
        return self.engine.model_id


def parse_ab(specs: list[str] | None) -> dict[str, float]:
    """``["candidate=0.2"]`` -> ``{"candidate": 0.2}``, refusing weights that leave the primary nothing."""
    weights: dict[str, float] = {}
    for spec in specs or []:
        alias, sep, weight = spec.partition("=")
        try:
            value = float(weight)
        except ValueError:
            value = -1.0
        if not sep or not alias or not 0 < value < 1:
            raise ValueError(f"--ab {spec!r}: write ALIAS=WEIGHT with 0 < WEIGHT < 1, e.g. candidate=0.2")
        weights[alias] = value
    if sum(weights.values()) >= 1:
        raise ValueError(f"--ab weights sum to {sum(weights.values()):.3f}: leave the primary alias a share (< 1)")
    return weights


def resolve_variant(registry: Registry, model: ModelVersion, variant: str | None) -> ModelVersion:
    """The alias's version, or its sibling of ``variant`` from the same run (e.g. the quantized model)."""
    if not variant or model.variant == variant:
        return model
    siblings = [m for m in registry.versions() if m.run_id and m.run_id == model.run_id and m.variant == variant]
    if not siblings:
        raise UnknownModel(f"{model.id} has no {variant!r} sibling from its run {model.run_id}: serve "
                           f"--variant {model.variant} or register that variant")
    return siblings[0]


class Router:
    def __init__(self, registry_path: str, loader: Callable[[ModelVersion], Engine], *, alias: str | None = None,
                 ab: dict[str, float] | None = None, variant: str | None = None, poll_interval: float = 5.0,
                 seed: int | None = None, on_swap: Callable[[str, str | None, str], None] | None = None):
        self.registry_path, self.loader, self.variant = registry_path, loader, variant
        self.primary_chain = (alias,) if alias else DEFAULT_ALIASES
        self.primary = alias or PRODUCTION
        self.ab = dict(ab or {})
        self.weights = {self.primary: 1 - sum(self.ab.values()), **self.ab}
        self.poll_interval, self.on_swap = poll_interval, on_swap
        self.routes: dict[str, Route] = {}
        self.errors: dict[str, str] = {}
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- following the registry ----------------------------------------------------------------------------

    def _resolve(self, registry: Registry, name: str) -> tuple[str, ModelVersion]:
        chain = self.primary_chain if name == self.primary else (name,)
        for alias in chain:
            try:
                return alias, resolve_variant(registry, registry.resolve(alias), self.variant)
            except UnknownModel as exc:
                last = exc
                if alias in registry.aliases():
                    raise
        raise UnknownModel(f"no alias {' or '.join(chain)} in the registry {self.registry_path}"
                           f" ({last.args[0]}); promote a model first: ftops models promote VERSION")

    def refresh(self) -> None:
        """Re-resolve every alias; load and swap in versions that moved. Failures keep the old version."""
        with Registry(self.registry_path) as registry:
            current = dict(self.routes)
            loaded = {r.version: r.engine for r in current.values()}
            new = dict(current)
            for name in self.weights:
                try:
                    alias, model = self._resolve(registry, name)
                    if name in current and current[name].version == model.id:
                        self.errors.pop(name, None)
                        continue
                    engine = loaded.get(model.id) or self.loader(model)
                    loaded[model.id] = engine
                    new[name] = Route(name, alias, engine)
                    self.errors.pop(name, None)
                    log.info("route %s (%s) now serves %s", name, alias, model.id)
                    if self.on_swap:
                        self.on_swap(name, current[name].version if name in current else None, model.id)
                except Exception as exc:  # a bad alias move or load must not take the server down
                    self.errors[name] = f"{type(exc).__name__}: {exc}"
                    log.error("route %s: %s", name, self.errors[name])
        self.routes = new  # one assignment: a request sees the old table or the new one
        in_use = {id(r.engine) for r in new.values()}
        for route in current.values():
            if id(route.engine) not in in_use:
                route.engine.retire()

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name="registry-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        for route in self.routes.values():
            route.engine.retire()

    # -- choosing --------------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return all(name in self.routes for name in self.weights)

    def names(self) -> list[str]:
        return list(self.weights)

    def pick(self, requested: str | None, user: str | None = None) -> Route:
        """A named A/B alias or served version goes there; the primary alias (or none) is split by weight.

        A ``user`` always lands on the same side (a hash of it picks the side), so one person sees one model.
        """
        routes = self.routes
        if requested and requested != self.primary:
            for route in routes.values():
                if requested in (route.name, route.alias, route.version):
                    return route
            served = sorted({self.primary, *self.ab} | {r.version for r in routes.values()})
            raise NoModel(f"model {requested!r} is not served here; use one of {', '.join(served)}")
        if user:
            draw = int.from_bytes(hashlib.sha256(user.encode()).digest()[:8], "big") / 2**64
        else:
            with self._rng_lock:
                draw = self._rng.random()
        for name, weight in self.weights.items():
            draw -= weight
            if draw < 0 and name in routes:
                return routes[name]
        if self.primary in routes:
            return routes[self.primary]
        raise NoModel(f"no model loaded yet: {'; '.join(self.errors.values()) or 'still loading'}")
