"""API keys for ``ftops serve``: only a SHA-256 of each key is stored; per-key token-bucket rate limits.

Keys are 256-bit random tokens, so an unsalted hash is enough (as for GitHub or Stripe tokens): nobody can
guess a preimage, and a fast hash keeps the check cheap per request. Every stored hash is compared with
``hmac.compare_digest`` and the loop never exits early, so timing says nothing about which key came close.
The file is re-read when it changes, so ``keys revoke`` takes effect on a running server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ft_assets.lineage.registry import ALIAS_PATTERN, now
from resources.paths import ftops_home

KEY_PREFIX = "ftops-"


def default_keys_path() -> Path:
    return Path(os.environ.get("FTOPS_SERVE_KEYS", ftops_home() / "serve_keys.json"))


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class KeyInfo:
    name: str
    hash: str
    created_at: str
    rate_limit: float | None = None  # requests per minute; None: the server's default


class KeyStore:
    """A small JSON file ``{name: {hash, created_at, rate_limit}}`` written atomically with mode 0600."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_keys_path()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, KeyInfo] = {}

    def _read(self) -> dict[str, KeyInfo]:
        if not self.path.exists():
            return {}
        data = json.loads(self.path.read_text() or "{}")
        return {name: KeyInfo(name=name, **info) for name, info in data.items()}

    def _write(self, keys: dict[str, KeyInfo]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({k.name: {"hash": k.hash, "created_at": k.created_at, "rate_limit": k.rate_limit}
                       for k in keys.values()}, handle, indent=2)
        os.replace(tmp, self.path)

    def add(self, name: str, rate_limit: float | None = None) -> str:
        """Create a key and return it; it is shown this once and never stored."""
        if not ALIAS_PATTERN.match(name):
            raise ValueError(f"key name {name!r}: use lower-case letters, digits, '_', '.', '-' (start with a letter)")
        if rate_limit is not None and rate_limit <= 0:
            raise ValueError(f"rate limit {rate_limit}: give requests per minute > 0")
        with self._lock:
            keys = self._read()
            if name in keys:
                raise ValueError(f"a key named {name!r} exists: revoke it first or pick another name")
            key = KEY_PREFIX + secrets.token_urlsafe(32)
            keys[name] = KeyInfo(name, key_hash(key), now(), rate_limit)
            self._write(keys)
        return key

    def revoke(self, name: str) -> None:
        with self._lock:
            keys = self._read()
            if name not in keys:
                raise KeyError(f"no key named {name!r} in {self.path}")
            del keys[name]
            self._write(keys)

    def list(self) -> list[KeyInfo]:
        return sorted(self._read().values(), key=lambda k: k.name)

    def _current(self) -> dict[str, KeyInfo]:
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._keys, self._stamp = self._read(), stamp
            return self._keys

    def verify(self, presented: str | None) -> KeyInfo | None:
        """The key's record, or None; constant-time over every stored hash."""
        if not presented:
            return None
        digest = key_hash(presented)
        found = None
        for info in self._current().values():
            if hmac.compare_digest(digest, info.hash):
                found = info
        return found


class RateLimiter:
    """A token bucket per key: ``per_minute`` requests a minute, bursts of up to ``per_minute``."""

    def __init__(self, default_per_minute: float):
        self.default = default_per_minute
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: KeyInfo) -> float:
        """0 when the request may go; else the seconds until it may (the Retry-After)."""
        rate = key.rate_limit or self.default
        capacity, per_second = max(rate, 1.0), rate / 60.0
        with self._lock:
            tokens, stamp = self._buckets.get(key.name, (capacity, time.monotonic()))
            current = time.monotonic()
            tokens = min(capacity, tokens + (current - stamp) * per_second)
            if tokens >= 1:
                self._buckets[key.name] = (tokens - 1, current)
                return 0.0
            self._buckets[key.name] = (tokens, current)
            return max(1.0, math.ceil((1 - tokens) / per_second))
