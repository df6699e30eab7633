"""The same front door (keys, limits, A/B, hot swap, metrics) over an upstream OpenAI server, e.g. vLLM.

The prompt is built here with the model's own tokenizer and chat template and sent as token ids to the
upstream's ``/completions``, so the template and the token limits are exactly the ones of the local path;
the upstream generates (and stops on the EOS of the model's generation config).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import httpx

from ft_assets.lineage.registry import ModelVersion
from ft_assets.serving.engine import GenRequest, PromptEncoding

log = logging.getLogger("ftops.serve")


class UpstreamEngine(PromptEncoding):
    """Engine-shaped: encodes locally, generates upstream, emits the same delta/done/error events."""

    def __init__(self, model_id: str, tokenizer, base_url: str, api_key: str | None, upstream_model: str):
        self.model_id, self.tokenizer, self.upstream_model = model_id, tokenizer, upstream_model
        self.base_url, self.api_key = base_url.rstrip("/"), api_key
        self.context_length = getattr(tokenizer, "model_max_length", None)
        if not self.context_length or self.context_length > 1 << 30:
            self.context_length = None
        self._tasks: set[asyncio.Task] = set()
        self._client: httpx.AsyncClient | None = None

    def submit(self, req: GenRequest) -> None:
        task = asyncio.get_running_loop().create_task(self._forward(req))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def retire(self) -> None:
        pass  # in-flight forwards finish on their own; nothing is held here

    async def _forward(self, req: GenRequest) -> None:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=600)
        body = {"model": self.upstream_model, "prompt": req.prompt_ids, "max_tokens": req.max_tokens,
                "temperature": req.temperature, "top_p": req.top_p, "stream": True,
                "stream_options": {"include_usage": True}, **({"stop": list(req.stop)} if req.stop else {})}
        text, finish, usage = "", None, None
        try:
            async with self._client.stream("POST", "/completions", json=body) as response:
                if response.status_code != 200:
                    detail = (await response.aread()).decode(errors="replace")[:500]
                    raise RuntimeError(f"upstream answered {response.status_code}: {detail}")
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        raise RuntimeError(f"upstream: {chunk['error']}")
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        if choice.get("text"):
                            text += choice["text"]
                            req.emit("delta", choice["text"])
                        finish = choice.get("finish_reason") or finish
        except Exception as exc:  # the request fails, the server does not
            log.error("upstream %s: %s", self.base_url, exc)
            req.emit("error", f"{type(exc).__name__}: {exc}")
            return
        tokens = (usage or {}).get("completion_tokens", len(self.encode_text(text)))
        req.emit("done", {"finish_reason": finish or "stop", "completion_tokens": tokens, "text": text})


def upstream_loader(base_url: str, key_env: str):
    """A Router loader: the version's tokenizer from its directory, the upstream model it is served under."""
    from transformers import AutoTokenizer

    def load(model: ModelVersion) -> UpstreamEngine:
        api_key = os.environ.get(key_env)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        listed = httpx.get(base_url.rstrip("/") + "/models", headers=headers, timeout=30).raise_for_status()
        names = [m["id"] for m in listed.json()["data"]]
        # vLLM serves a model under --served-model-name: name it by the version id to pin the version.
        upstream = model.id if model.id in names else names[0]
        if upstream != model.id:
            log.warning("upstream serves %s, not %s: answering under the registry's version id", upstream, model.id)
        return UpstreamEngine(model.id, AutoTokenizer.from_pretrained(Path(model.path)), base_url, api_key, upstream)

    return load
