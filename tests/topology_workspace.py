"""The code location tests/test_production_topology.py serves with ``dagster code-server start -m``.

ftops' own definitions with test settings (tests/scratch_location.py): sensors tick every 2 s and, as shipped,
default to RUNNING (the test pauses them with ``dagster sensor stop`` before the daemon starts, as an operator
would, and starts them again for its drop); the in-process executor, so one run is one process (the run worker
the test kills) and two cores are not shared between step processes.
"""

from __future__ import annotations

from dagster import in_process_executor

from tests.scratch_location import scratch_location

defs = scratch_location(2, in_process_executor)
