"""The FastAPI app: OpenAI routes over the router, with keys, rate limits, size limits and metrics.

Checks run in this order, each before any work the next one needs: key (401), rate (429), body size (413),
body shape and token limits (400). Health routes need no key. Prompts and completions reach the log only
with ``log_prompts``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from ft_assets.serving.engine import GenRequest, Retired
from ft_assets.serving.keys import KeyInfo, KeyStore, RateLimiter
from ft_assets.serving.metrics import ServeMetrics
from ft_assets.serving.router import NoModel, Route, Router
from ft_assets.serving.schemas import ChatRequest, CompletionRequest

log = logging.getLogger("ftops.serve")
VERSION_HEADER = "X-Ftops-Model-Version"


@dataclass
class Limits:
    max_body_bytes: int = 1 << 20
    max_prompt_tokens: int = 2048
    max_tokens: int = 512  # the most a request may ask for
    default_max_tokens: int = 128  # when it asks for nothing
    rate_limit: float = 600.0  # requests per minute per key, unless the key sets its own
    log_prompts: bool = False


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str, headers: dict | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers, self.param = status, message, kind, headers, param


def _error_body(err: ApiError) -> dict:
    return {"error": {"message": err.message, "type": err.kind, "param": err.param, "code": err.kind}}


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body is {declared} bytes; this server accepts at most {limit}",
                       "request_too_large")
    body = bytearray()
    async for chunk in request.stream():  # a chunked body has no length up front: count as it arrives
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"request body exceeds {limit} bytes", "request_too_large")
    return bytes(body)


def create_app(router: Router, keys: KeyStore, limits: Limits, metrics: ServeMetrics | None = None) -> FastAPI:
    metrics = metrics or ServeMetrics()
    limiter = RateLimiter(limits.rate_limit)
    app = FastAPI(title="ftops serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.router, app.state.metrics = router, metrics

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        metrics.rejected.labels(err.kind).inc()
        return JSONResponse(_error_body(err), status_code=err.status, headers=err.headers)

    def guard(request: Request) -> KeyInfo:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        key = keys.verify(token.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            raise ApiError(401, "missing or invalid API key: send 'Authorization: Bearer <key>' "
                                "(create one with `ftops serve keys add NAME`)", "invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
        wait = limiter.acquire(key)
        if wait:
            raise ApiError(429, f"rate limit for key {key.name!r} reached; retry in {wait:.0f} s",
                           "rate_limit_exceeded", headers={"Retry-After": str(int(wait))})
        return key

    async def parse(request: Request, schema):
        body = await _read_body(request, limits.max_body_bytes)
        try:
            return schema.model_validate_json(body)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            raise ApiError(400, f"invalid request: {problems}", "invalid_request_error") from None

    def budget(req, prompt_ids: list[int], route: Route) -> int:
        if not prompt_ids:
            raise ApiError(400, "the prompt is empty", "invalid_request_error", param="prompt")
        vocab = len(route.engine.tokenizer)
        if any(not 0 <= t < vocab for t in prompt_ids):
            raise ApiError(400, f"prompt token ids must lie in [0, {vocab})", "invalid_request_error",
                           param="prompt")
        requested = req.requested_tokens()
        if requested is not None and requested > limits.max_tokens:
            raise ApiError(400, f"max_tokens {requested} exceeds this server's limit of {limits.max_tokens}",
                           "invalid_request_error", param="max_tokens")
        if len(prompt_ids) > limits.max_prompt_tokens:
            raise ApiError(400, f"the prompt is {len(prompt_ids)} tokens after the chat template; this server "
                                f"accepts at most {limits.max_prompt_tokens}: shorten it", "invalid_request_error",
                           param="messages")
        max_tokens = requested or limits.default_max_tokens
        context = route.engine.context_length
        if context and len(prompt_ids) + max_tokens > context:
            raise ApiError(400, f"prompt ({len(prompt_ids)} tokens) + max_tokens ({max_tokens}) exceed the "
                                f"model's context of {context} tokens", "invalid_request_error", param="max_tokens")
        return max_tokens

    async def serve(request: Request, schema, endpoint: str):
        started = time.perf_counter()
        key = guard(request)
        req = await parse(request, schema)
        try:
            stops = req.stops()
            text = req.text() if endpoint == "completions" else None
        except ValueError as exc:
            raise ApiError(400, str(exc), "invalid_request_error") from None
        for attempt in range(3):
            try:
                route = router.pick(req.model, req.user)
            except NoModel as exc:
                status = 404 if router.ready else 503
                raise ApiError(status, exc.args[0], "model_not_found" if status == 404 else "not_ready") from None
            engine = route.engine
            messages = [m.model_dump(exclude_none=True) for m in req.messages] if text is None else None
            if text is None:
                prompt_ids = engine.encode_chat(messages)
            else:
                prompt_ids = list(text) if isinstance(text, list) else engine.encode_text(text)
            gen = GenRequest(prompt_ids, budget(req, prompt_ids, route), req.temperature, req.top_p, stops,
                             loop=asyncio.get_running_loop())
            try:
                engine.submit(gen)
                break
            except Retired:  # swapped out between pick and submit: the table has the new one already
                if attempt == 2:
                    raise
        call = Call(endpoint, route, gen, key, started, metrics, limits.log_prompts, messages or text)
        headers = {VERSION_HEADER: route.version, "X-Ftops-Route": route.alias, "X-Request-Id": call.id}
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(call.sse(usage), media_type="text/event-stream", headers=headers)
        return JSONResponse(await call.whole(), headers=headers)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await serve(request, ChatRequest, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await serve(request, CompletionRequest, "completions")

    @app.get("/v1/models")
    async def models(request: Request):
        guard(request)
        data = [{"id": r.version, "object": "model", "created": 0, "owned_by": "ftops", "route": name,
                 "alias": r.alias, "weight": router.weights.get(name)} for name, r in router.routes.items()]
        data += [{"id": name, "object": "model", "created": 0, "owned_by": "ftops", "route": name,
                  "alias": name, "weight": router.weights.get(name)} for name in router.routes]
        return {"object": "list", "data": data}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        body = {"ready": router.ready, "routes": {n: r.version for n, r in router.routes.items()},
                "errors": router.errors}
        return JSONResponse(body, status_code=200 if router.ready else 503)

    @app.get("/metrics")
    async def prometheus(request: Request):
        guard(request)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return app


class Call:
    """One admitted request: waits on its engine's events and answers whole or as server-sent events."""

    def __init__(self, endpoint: str, route: Route, gen: GenRequest, key: KeyInfo, started: float,
                 metrics: ServeMetrics, log_prompts: bool, prompt):
        self.endpoint, self.route, self.gen, self.key, self.started = endpoint, route, gen, key, started
        self.metrics, self.log_prompts, self.prompt = metrics, log_prompts, prompt
        self.id = ("chatcmpl-" if endpoint == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    async def events(self) -> AsyncIterator[tuple[str, object]]:
        while True:
            kind, value = await self.gen.events.get()
            if kind == "error":
                raise RuntimeError(value)
            yield kind, value
            if kind == "done":
                return

    def usage(self, result: dict) -> dict:
        prompt = len(self.gen.prompt_ids)
        return {"prompt_tokens": prompt, "completion_tokens": result["completion_tokens"],
                "total_tokens": prompt + result["completion_tokens"]}

    def finish(self, status: int, result: dict | None) -> None:
        version, seconds = self.route.version, time.perf_counter() - self.started
        self.metrics.requests.labels(version, self.route.name, self.endpoint, str(status)).inc()
        self.metrics.latency.labels(version, self.endpoint).observe(seconds)
        if status >= 500:
            self.metrics.errors.labels(version, self.endpoint).inc()
        if result:
            self.metrics.prompt_tokens.labels(version).inc(len(self.gen.prompt_ids))
            self.metrics.completion_tokens.labels(version).inc(result["completion_tokens"])
        log.info("%s key=%s route=%s version=%s status=%s prompt_tokens=%d completion_tokens=%s cached=%s %.3fs",
                 self.id, self.key.name, self.route.name, version, status, len(self.gen.prompt_ids),
                 result and result["completion_tokens"], self.gen.cached, seconds)
        if self.log_prompts and result:
            log.info("%s prompt=%s completion=%s", self.id, json.dumps(self.prompt), json.dumps(result["text"]))

    def _choice(self, text: str, finish: str | None, delta: bool) -> dict:
        if self.endpoint == "completions":
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        if delta:
            return {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
        return {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}

    def _envelope(self, chunk: bool) -> dict:
        kind = {"chat": "chat.completion", "completions": "text_completion"}[self.endpoint]
        return {"id": self.id, "object": kind + (".chunk" if chunk and self.endpoint == "chat" else ""),
                "created": self.created, "model": self.route.version}

    async def whole(self) -> dict:
        try:
            result = None
            async for kind, value in self.events():
                result = value if kind == "done" else result
        except RuntimeError as exc:
            self.finish(500, None)
            raise ApiError(500, f"generation failed: {exc}", "server_error") from None
        except asyncio.CancelledError:
            self.gen.cancelled = True
            self.finish(499, None)
            raise
        self.finish(200, result)
        return {**self._envelope(False), "choices": [self._choice(result["text"], result["finish_reason"], False)],
                "usage": self.usage(result)}

    async def sse(self, include_usage: bool) -> AsyncIterator[str]:
        def data(payload: dict) -> str:
            return f"data: {json.dumps(payload)}\n\n"

        status, result = 200, None
        try:
            if self.endpoint == "chat":
                yield data({**self._envelope(True), "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
            async for kind, value in self.events():
                if kind == "delta":
                    yield data({**self._envelope(True), "choices": [self._choice(value, None, True)]})
                else:
                    result = value
            yield data({**self._envelope(True), "choices": [self._choice("", result["finish_reason"], True)]})
            if include_usage:
                yield data({**self._envelope(True), "choices": [], "usage": self.usage(result)})
            yield "data: [DONE]\n\n"
        except RuntimeError as exc:
            status = 500
            yield data({"error": {"message": f"generation failed: {exc}", "type": "server_error"}})
        except (asyncio.CancelledError, GeneratorExit):
            status = 499  # the client went away: stop generating its row
            self.gen.cancelled = True
            raise
        finally:
            self.finish(status, result)
