"""Keep the platform's own secrets out of everything it writes: cards, summaries, metadata, the registry, MLflow.

Two kinds of secret reach the code through its configuration: credentials inside URLs
(``FTOPS_MLFLOW_URI=http://user:PASSWORD@host/``, a DVC remote, a Postgres URL) and the values of secret
environment variables (``AWS_SECRET_ACCESS_KEY``, ``HF_TOKEN``, ``MLFLOW_TRACKING_PASSWORD``, ``PGPASSWORD``...).
``scrub`` replaces both, anywhere inside a JSON-like value, with ``REDACTED``. The values are read from the
environment at call time, so a secret exported after import is still caught.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"
# Variable names whose values are secrets whatever they look like.
_SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL"
                          r"|AUTH)", re.IGNORECASE)
# Names that match the pattern but hold no secret (paths to files, flags, usernames).
_NOT_SECRET_NAME = re.compile(r"(_FILE|_PATH|_DIR|_USERNAME|_USER|_ID|_ENABLED|_TYPE)$", re.IGNORECASE)
# scheme://user:password@host  or  scheme://token@host (a bare userinfo is a token for git/https remotes).
_URL_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)([^\s/@:]*)(:[^\s/@]*)?@(?=[\w.\[-])")
# Shorter values are too likely to appear by chance (``1``, ``true``) to be redacted as text.
_MIN_SECRET_LEN = 6


def redact_url(url: str) -> str:
    """``url`` without the password (or token) in its userinfo; the user name stays, so it still says who."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.password is None and not (parts.username and parts.scheme in ("http", "https")):
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host += f":{parts.port}"
    user = parts.username if parts.password is not None else REDACTED
    netloc = f"{user}:{REDACTED}@{host}" if parts.password is not None else f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every secret the environment holds: values of secret-named variables and passwords inside URL values,
    longest first so a secret that contains another is replaced whole."""
    environ = os.environ if environ is None else environ
    found = set()
    for name, value in environ.items():
        if not value:
            continue
        if _SECRET_NAME.search(name) and not _NOT_SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LEN:
            found.add(value)
        for match in _URL_USERINFO.finditer(value):
            secret = (match.group(3) or "")[1:] or (match.group(2) if not match.group(3) else "")
            if len(secret) >= _MIN_SECRET_LEN:
                found.add(secret)
    return sorted(found, key=len, reverse=True)


def redact_text(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with URL passwords and every known secret value replaced."""
    secrets = secret_values() if secrets is None else secrets
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _URL_USERINFO.sub(_userinfo_replacement, text)


def _userinfo_replacement(match: re.Match) -> str:
    scheme, user, password = match.group(1), match.group(2), match.group(3)
    if password:
        return f"{scheme}{user}:{REDACTED}@"
    return f"{scheme}{REDACTED}@" if scheme.lower().startswith("http") and user else match.group(0)


def scrub(value: Any, secrets: list[str] | None = None) -> Any:
    """A copy of a JSON-like ``value`` (dicts, lists, strings, numbers) with every secret redacted in its
    strings, keys included; other types pass through unchanged."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, Mapping):
        return {scrub(k, secrets): scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub(v, secrets) for v in value)
    return value


def env_secret_names(environ: Mapping[str, str] | None = None) -> list[str]:
    """The names of the environment variables ``secret_values`` treats as secrets (for reports, never values)."""
    environ = os.environ if environ is None else environ
    return sorted(n for n, v in environ.items()
                  if v and _SECRET_NAME.search(n) and not _NOT_SECRET_NAME.search(n) and len(v) >= _MIN_SECRET_LEN)
