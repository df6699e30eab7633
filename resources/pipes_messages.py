"""A Pipes message reader that never parses a half-written line.

Dagster's file reader tails the message file with ``readline()``, which at
end-of-file returns whatever part of a line the worker has written so far; a
training run here died of a JSONDecodeError at step 28 that way. This reader
keeps a partial line until its newline arrives.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from threading import Event

from dagster import PipesFileMessageReader, PipesTempFileMessageReader


def tail_whole_lines(path: str, should_stop: Callable[[], bool], poll_s: float = 0.01) -> Iterator[str]:
    """Yield each complete line appended to ``path`` until ``should_stop()`` and the file is drained."""
    pending = ""
    with open(path, encoding="utf-8") as stream:
        while True:
            chunk = stream.readline()
            if chunk:
                pending += chunk
                if pending.endswith("\n"):
                    yield pending
                    pending = ""
            elif should_stop():
                if pending.strip():
                    yield pending  # the writer is gone: this is all there will ever be
                return
            else:
                time.sleep(poll_s)


class WholeLineFileMessageReader(PipesFileMessageReader):
    def _reader_thread(self, handler, is_resource_complete: Event) -> None:
        try:
            for line in tail_whole_lines(self._path, is_resource_complete.is_set):
                handler.handle_message(json.loads(line))
        except Exception:
            handler.report_pipes_framework_exception(f"{self.__class__.__name__} reader thread", sys.exc_info())
            raise


class WholeLineTempFileMessageReader(PipesTempFileMessageReader):
    """``PipesTempFileMessageReader`` with the whole-line reader underneath."""

    @contextmanager
    def read_messages(self, handler) -> Iterator[dict]:
        with tempfile.TemporaryDirectory() as tmp:
            reader = WholeLineFileMessageReader(os.path.join(tmp, "messages"),
                                                include_stdio_in_messages=self._include_stdio_in_messages)
            with reader.read_messages(handler) as params:
                yield params
