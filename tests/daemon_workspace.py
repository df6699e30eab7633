"""The code location the daemon test serves with ``dagster dev -m tests.daemon_workspace``.

ftops' own definitions with test settings (tests/scratch_location.py): sensors tick every 3 s, and steps fork
from a preloaded forkserver.
"""

from __future__ import annotations

from dagster import multiprocess_executor

from tests.scratch_location import scratch_location

# Steps fork from a server that imported ftops (torch, transformers) once, instead of importing per step.
defs = scratch_location(3, multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["ft_assets.definitions"]}}}))
