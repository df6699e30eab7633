"""One loaded model version and the worker thread that batches its requests.

Requests queue up; the worker takes the first, waits a short window for more with the same sampling settings
(up to ``max_batch``), left-pads them into one tensor and makes one ``generate`` call. A streamer hands each
row's new tokens back to its request as text deltas while the batch runs; a stopping criterion ends a row on
its EOS, its own ``max_tokens``, a stop string or a client that went away, so short answers do not wait
for long ones to be returned. Greedy answers can be kept in an exact-repeat cache.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("ftops.serve")


class PromptEncoding:
    """Prompts as token ids, built with ``self.tokenizer``: shared by the local engine and the upstream proxy so
    both apply the model's own chat template the same way."""

    tokenizer: Any

    def encode_chat(self, messages: list[dict]) -> list[int]:
        """The model's own chat template with the generation prompt, exactly as training and evaluation use it."""
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.encode_text(text)

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


class Retired(RuntimeError):
    """The engine was swapped out and has drained; pick the current one."""


@dataclass
class GenRequest:
    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    loop: asyncio.AbstractEventLoop | None = None
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    cached: bool = False

    @property
    def sampling_key(self) -> tuple[float, float]:
        return (self.temperature, self.top_p) if self.temperature > 0 else (0.0, 1.0)

    @property
    def cache_key(self) -> tuple | None:
        return (tuple(self.prompt_ids), self.max_tokens, self.stop) if self.temperature == 0 else None

    def emit(self, kind: str, value: Any) -> None:
        if self.loop is None:
            self.events.put_nowait((kind, value))
        else:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


class _Row:
    """One request's decoding state inside a running batch."""

    def __init__(self, req: GenRequest, tokenizer, eos_ids: set[int]):
        self.req, self.tokenizer, self.eos_ids = req, tokenizer, eos_ids
        self.ids: list[int] = []
        self.sent = 0
        self.text = ""
        self.finish: str | None = None
        self.holdback = max((len(s) for s in req.stop), default=1) - 1

    def add(self, token: int) -> None:
        if self.finish:
            return
        if self.req.cancelled:
            self.finish = "cancelled"
            return
        self.ids.append(token)
        if token in self.eos_ids:
            self.finish = "stop"
        else:
            text = self.tokenizer.decode([t for t in self.ids if t not in self.eos_ids], skip_special_tokens=True)
            if not text.endswith("\ufffd"):  # a multi-byte character still incomplete: wait for its rest
                self.text = text
            for stop in self.req.stop:
                if stop in self.text:
                    self.text, self.finish = self.text[:self.text.index(stop)], "stop"
            if not self.finish and len(self.ids) >= self.req.max_tokens:
                self.finish = "length"
        end = len(self.text) if self.finish else max(self.sent, len(self.text) - self.holdback)
        if end > self.sent:
            self.req.emit("delta", self.text[self.sent:end])
            self.sent = end

    def close(self, reason: str = "length") -> dict:
        self.finish = self.finish or reason
        if len(self.text) > self.sent:
            self.req.emit("delta", self.text[self.sent:])
        result = {"finish_reason": self.finish, "completion_tokens": len(self.ids), "text": self.text}
        self.req.emit("done", result)
        return result


def _streamer_and_criteria(rows: list[_Row]):
    from transformers.generation.stopping_criteria import StoppingCriteria
    from transformers.generation.streamers import BaseStreamer

    class RowStreamer(BaseStreamer):
        def __init__(self):
            self.prompt_seen = False

        def put(self, value) -> None:
            if not self.prompt_seen:  # generate's first call carries the prompts
                self.prompt_seen = True
                return
            for row, token in zip(rows, value.reshape(-1).tolist(), strict=True):
                row.add(int(token))

        def end(self) -> None:
            pass

    class RowsDone(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            import torch

            return torch.tensor([row.finish is not None for row in rows], device=input_ids.device)

    return RowStreamer(), RowsDone()


class Engine(PromptEncoding):
    """A model version loaded once, served by one batching worker thread."""

    def __init__(self, model_id: str, model, tokenizer, *, max_batch: int = 16, wait_ms: float = 10.0,
                 cache_size: int = 0, metrics=None):
        self.model_id, self.model, self.tokenizer = model_id, model, tokenizer
        self.max_batch, self.wait_s, self.metrics = max(1, max_batch), wait_ms / 1000.0, metrics
        self.context_length = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
        eos = model.generation_config.eos_token_id or tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.cache_size = cache_size
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._queue: collections.deque[GenRequest] = collections.deque()
        self._cond = threading.Condition()
        self._retiring = self._exited = False
        self._thread = threading.Thread(target=self._run, name=f"engine-{model_id}", daemon=True)
        self._thread.start()

    # -- requests ------------------------------------------------------------------------------------------

    def submit(self, req: GenRequest) -> None:
        key = req.cache_key if self.cache_size else None
        with self._cond:  # the worker writes the cache under the same lock
            result = self._cache.get(key) if key is not None else None
            if result is not None:
                self._cache.move_to_end(key)
        if result is not None:
            req.cached = True
            self._count("cache_hits")
            if result["text"]:
                req.emit("delta", result["text"])
            req.emit("done", dict(result))
            return
        if key is not None:
            self._count("cache_misses")
        with self._cond:
            if self._exited:
                raise Retired(self.model_id)
            self._queue.append(req)
            self._cond.notify()

    def retire(self) -> None:
        """Finish what is queued, then stop; later submits raise Retired."""
        with self._cond:
            self._retiring = True
            self._cond.notify()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _count(self, name: str, value: float = 1) -> None:
        if self.metrics is not None:
            self.metrics.engine_event(self.model_id, name, value)

    # -- the worker ----------------------------------------------------------------------------------------

    def _next_batch(self) -> list[GenRequest] | None:
        with self._cond:
            while not self._queue:
                if self._retiring:
                    self._exited = True
                    return None
                self._cond.wait()
            deadline = time.monotonic() + self.wait_s
            while len(self._queue) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            key = self._queue[0].sampling_key
            batch = [r for r in self._queue if r.sampling_key == key][:self.max_batch]
            for req in batch:
                self._queue.remove(req)
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            rows = [_Row(r, self.tokenizer, self.eos_ids) for r in batch]
            try:
                self._generate(rows)
            except Exception as exc:  # one bad batch fails its requests, not the server
                log.exception("generation failed on %s", self.model_id)
                for row in rows:
                    row.req.emit("error", f"{type(exc).__name__}: {exc}")
                continue
            for row in rows:
                result = row.close()
                key = row.req.cache_key if self.cache_size and result["finish_reason"] != "cancelled" else None
                if key is not None:
                    with self._cond:
                        self._cache[key] = result
                        while len(self._cache) > self.cache_size:
                            self._cache.popitem(last=False)

    def _generate(self, rows: list[_Row]) -> None:
        import torch
        from transformers import StoppingCriteriaList

        pad = self.tokenizer.pad_token_id
        width = max(len(r.req.prompt_ids) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):  # left padding: every prompt ends where generation starts
            n = len(row.req.prompt_ids)
            ids[i, width - n:] = torch.tensor(row.req.prompt_ids)
            mask[i, width - n:] = 1
        streamer, done = _streamer_and_criteria(rows)
        first = rows[0].req
        sampling = ({"do_sample": True, "temperature": first.temperature, "top_p": first.top_p}
                    if first.temperature > 0 else {"do_sample": False, "temperature": None, "top_p": None,
                                                   "top_k": None})
        self._count("batch", len(rows))
        with torch.inference_mode():
            self.model.generate(input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device),
                                max_new_tokens=max(r.req.max_tokens for r in rows), pad_token_id=pad,
                                eos_token_id=sorted(self.eos_ids), streamer=streamer,
                                stopping_criteria=StoppingCriteriaList([done]), **sampling)


def load_engine(model_id: str, path: str | Path, variant: str, **options) -> Engine:
    """Load a merged (or quantized) model directory the way evaluation loads it, onto the GPU when there is one."""
    import torch

    from ft_assets.evaluation.evaluate import load_variant

    kind = "quantized" if variant.startswith("quantized") else "merged"
    model, tokenizer = load_variant(kind, Path(path))
    if kind == "merged" and torch.cuda.is_available():
        model = model.to("cuda")
    return Engine(model_id, model, tokenizer, **options)
