"""``ftops serve`` as a real subprocess on loopback, called with the official ``openai`` client and httpx.

Three scratch models in a temporary registry: A was trained to answer "ping" with "pong pong" and stop on
its EOS (so the chat template and the EOS stop are checked by what it answers), B and C are untrained.
production -> A, canary -> C, with a 30 % A/B split to canary; B is promoted during a concurrent load.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ft_assets.lineage.registry import ModelVersion, Registry
from ft_assets.serving.keys import KeyStore
from tests.conftest import REPO

PING = [{"role": "user", "content": "ping"}]
REPLY = "pong pong"
GATES = [{"name": "merged_serving_consistent", "passed": True, "value": 0.0, "threshold": 0.0}]
CANARY_WEIGHT = 0.3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(out: Path, seed: int, train: bool) -> Path:
    """A scratch model; ``train``: taught the one exchange PING -> REPLY + EOS in its own chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ft_assets.models.base import ScratchSpec, from_scratch

    from_scratch(ScratchSpec(hidden_size=32, num_hidden_layers=1, vocab_size=300, seed=seed,
                             corpus=["ping pong", "hello world", "the quick brown fox"] * 20), out)
    if not train:
        return out
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    full = tok.apply_chat_template(PING + [{"role": "assistant", "content": REPLY}], tokenize=False)
    prompt = tok(tok.apply_chat_template(PING, add_generation_prompt=True, tokenize=False),
                 add_special_tokens=False)["input_ids"]
    ids = tok(full, add_special_tokens=False)["input_ids"]
    assert ids[:len(prompt)] == prompt
    inputs = torch.tensor([ids])
    labels = torch.tensor([[-100] * len(prompt) + ids[len(prompt):]])
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(200):
        loss = model(input_ids=inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if loss.item() < 0.01:
            break
    model.save_pretrained(out)
    return out


def register(registry: Registry, name: str, path: Path) -> str:
    version = registry.register(ModelVersion(id=f"merged_model@{name}", asset="merged_model", variant="merged",
                                             version=name, path=str(path), gates=GATES, run_id=name))
    return version.id


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    registry = Registry(tmp / "registry.sqlite")
    ids = {name: register(registry, name, build_model(tmp / name, seed, train=name == "aaaa0001"))
           for name, seed in (("aaaa0001", 0), ("bbbb0002", 1), ("cccc0003", 2))}
    registry.promote(ids["aaaa0001"], actor="test")
    registry.set_alias("canary", ids["cccc0003"], actor="test")
    store = KeyStore(tmp / "keys.json")
    keys = {"main": store.add("main"), "slow": store.add("slow", rate_limit=1), "gone": store.add("gone")}
    port = free_port()
    log = (tmp / "server.log").open("w")
    env = {**os.environ, "FTOPS_HOME": str(tmp)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ft_assets.cli", "serve", "--registry", str(tmp / "registry.sqlite"),
         "--keys", str(tmp / "keys.json"), "--port", str(port), "--ab", f"canary={CANARY_WEIGHT}", "--seed", "7",
         "--poll-interval", "0.2", "--max-body-bytes", "20000", "--max-prompt-tokens", "200", "--max-tokens", "64",
         "--max-batch", "8", "--cache-size", "64", "--rate-limit", "100000", "--torch-threads", "1"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # a bound on start-up, not a measured timing
    while True:
        assert proc.poll() is None, (tmp / "server.log").read_text()
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (tmp / "server.log").read_text()
        time.sleep(0.2)
    yield {"base": base, "keys": keys, "ids": ids, "registry": registry, "tmp": tmp, "proc": proc}
    proc.terminate()
    proc.wait(30)
    registry.close()


def client(server, key: str = "main") -> openai.OpenAI:
    # max_retries=0: the client would otherwise retry 429s itself and hide them.
    return openai.OpenAI(base_url=server["base"] + "/v1", api_key=server["keys"].get(key, key), max_retries=0)


def auth(server, key: str = "main") -> dict:
    return {"Authorization": f"Bearer {server['keys'][key]}"}


def metric(server, name: str, **labels) -> float:
    text = httpx.get(server["base"] + "/metrics", headers=auth(server)).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_the_model_s_chat_template_and_eos_stop(server):
    a = server["ids"]["aaaa0001"]
    raw = httpx.post(server["base"] + "/v1/chat/completions", headers=auth(server),
                     json={"model": a, "messages": PING, "temperature": 0, "max_tokens": 32})
    assert raw.status_code == 200, raw.text
    assert raw.headers["X-Ftops-Model-Version"] == a
    body = raw.json()
    assert body["model"] == a
    # Only the trained template reaches the trained answer, and only the EOS stop ends it there (not at 32).
    assert body["choices"][0]["message"]["content"] == REPLY
    assert body["choices"][0]["finish_reason"] == "stop"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(server["tmp"] / "aaaa0001")
    assert body["usage"]["prompt_tokens"] == len(tok.apply_chat_template(PING, add_generation_prompt=True,
                                                                         tokenize=True, return_dict=False))
    assert body["usage"]["completion_tokens"] == len(tok(REPLY, add_special_tokens=False)["input_ids"]) + 1
    # The raw completion endpoint applies no template: the same text without it is not the trained turn.
    completion = client(server).completions.create(model=a, prompt="ping", max_tokens=8, temperature=0)
    assert completion.model == a and completion.choices[0].text != REPLY


def test_streaming_matches_the_whole_answer(server):
    a = server["ids"]["aaaa0001"]
    chunks = list(client(server).chat.completions.create(
        # max_tokens 31, not 32: a repeat of the first test's request would come whole from the cache.
        model=a, messages=PING, temperature=0, max_tokens=31, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert {c.model for c in chunks} == {a}
    assert chunks[-1].usage.completion_tokens >= 2
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2  # deltas, not one blob
    with httpx.stream("POST", server["base"] + "/v1/completions", headers=auth(server),
                      json={"model": a, "prompt": "hello", "max_tokens": 5, "temperature": 0, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")


def test_keys_are_required_hashed_and_revocable(server):
    with pytest.raises(openai.AuthenticationError):
        client(server, "ftops-not-a-key").models.list()
    assert httpx.post(server["base"] + "/v1/chat/completions", json={"messages": PING}).status_code == 401
    assert httpx.get(server["base"] + "/metrics").status_code == 401
    assert httpx.get(server["base"] + "/healthz").status_code == 200
    assert server["ids"]["aaaa0001"] in {m.id for m in client(server).models.list()}
    stored = (server["tmp"] / "keys.json").read_text()
    assert all(key not in stored for key in server["keys"].values())
    assert client(server, "gone").models.list()
    cli = [sys.executable, "-m", "ft_assets.cli", "serve", "keys"]
    out = subprocess.run(cli + ["revoke", "gone", "--keys", str(server["tmp"] / "keys.json")], cwd=REPO,
                         capture_output=True, text=True, check=True)
    assert "revoked" in out.stdout
    with pytest.raises(openai.AuthenticationError):  # the running server re-reads the key file
        client(server, "gone").models.list()
    listed = subprocess.run(cli + ["list", "--keys", str(server["tmp"] / "keys.json")], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    assert "main" in listed and "gone" not in listed and "ftops-" not in listed


def test_rate_limit_body_and_token_limits(server):
    slow = client(server, "slow")
    slow.models.list()
    with pytest.raises(openai.RateLimitError) as limited:
        slow.models.list()
    assert int(limited.value.response.headers["Retry-After"]) >= 1
    big = httpx.post(server["base"] + "/v1/completions", headers=auth(server),
                     json={"prompt": "x" * 30_000, "max_tokens": 1})
    assert big.status_code == 413 and "20000" in big.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="max_tokens 100 exceeds .* 64"):
        client(server).chat.completions.create(model="production", messages=PING, max_tokens=100)
    with pytest.raises(openai.BadRequestError, match="at most 200"):
        client(server).chat.completions.create(model="production", max_tokens=4,
                                               messages=[{"role": "user", "content": "ping pong " * 200}])
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        client(server).chat.completions.create(model="production", messages=PING, logprobs=True)
    with pytest.raises(openai.NotFoundError, match="not served"):
        client(server).chat.completions.create(model="someone-else", messages=PING)


def test_repeated_greedy_requests_hit_the_cache(server):
    a = server["ids"]["aaaa0001"]
    hits = metric(server, "ftops_cache_hits_total", version=a)
    answers = [client(server).completions.create(model=a, prompt="the quick", max_tokens=6, temperature=0)
               for _ in range(2)]
    assert answers[0].choices[0].text == answers[1].choices[0].text
    assert metric(server, "ftops_cache_hits_total", version=a) == hits + 1


def test_ab_split_follows_the_weights_and_shows_in_metrics(server):
    a, c = server["ids"]["aaaa0001"], server["ids"]["cccc0003"]
    before = {v: metric(server, "ftops_requests_total", version=v, endpoint="chat", status="200") for v in (a, c)}
    n = 200

    def call(i: int) -> str:
        r = httpx.post(server["base"] + "/v1/chat/completions", headers=auth(server), timeout=60,
                       json={"model": "production", "messages": [{"role": "user", "content": f"q{i}"}],
                             "max_tokens": 1})
        assert r.status_code == 200, r.text
        assert r.headers["X-Ftops-Model-Version"] == r.json()["model"]
        return r.json()["model"]

    with ThreadPoolExecutor(8) as pool:
        served = list(pool.map(call, range(n)))
    assert set(served) == {a, c}
    sigma = (n * CANARY_WEIGHT * (1 - CANARY_WEIGHT)) ** 0.5
    assert abs(served.count(c) - n * CANARY_WEIGHT) < 4 * sigma, served.count(c)
    for version in (a, c):  # the server's own per-version counts agree with what the client saw
        after = metric(server, "ftops_requests_total", version=version, endpoint="chat", status="200")
        assert after - before[version] == served.count(version)
    # A user always lands on one side.
    sticky = {client(server).chat.completions.create(model="production", messages=PING, max_tokens=1,
                                                     user="alice").model for _ in range(6)}
    assert len(sticky) == 1


def test_promotion_swaps_the_model_under_load_without_failures(server):
    a, b = server["ids"]["aaaa0001"], server["ids"]["bbbb0002"]
    seen: list[str] = []
    failures: list[str] = []
    swapped_at: list[int] = []

    def worker(w: int) -> None:
        # Bounded: each client stops a few requests after it first sees the new version.
        after = 0
        with httpx.Client(base_url=server["base"], headers=auth(server), timeout=60) as http:
            for i in range(400):
                r = http.post("/v1/chat/completions", json={
                    "model": "production", "messages": [{"role": "user", "content": f"w{w} {i}"}],
                    "max_tokens": 4, "user": f"user-{w}-{i}"})
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")
                    continue
                seen.append(r.json()["model"])
                after += r.json()["model"] == b
                if after >= 5:
                    return

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(worker, w) for w in range(4)]
        while len(seen) < 12:  # the load is running on A
            time.sleep(0.05)
        swapped_at.append(len(seen))
        server["registry"].promote(b, actor="test", reason="hot swap test")
        for f in futures:
            f.result()
    assert failures == []
    assert a in seen[:swapped_at[0]] and b in seen
    assert a not in seen[-8:]  # once swapped, production no longer answers with A
    assert metric(server, "ftops_model_swaps_total", route="production") == 1
    assert metric(server, "ftops_serving", route="production", version=b) == 1


def _proxy(server, upstream_v1: str, upstream_key: str):
    port = free_port()
    env = {**os.environ, "FTOPS_HOME": str(server["tmp"]), "FTOPS_UPSTREAM_API_KEY": upstream_key}
    log = (server["tmp"] / "proxy.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ft_assets.cli", "serve", "--registry", str(server["tmp"] / "registry.sqlite"),
         "--keys", str(server["tmp"] / "keys.json"), "--port", str(port), "--upstream", upstream_v1],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, (server["tmp"] / "proxy.log").read_text()
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (server["tmp"] / "proxy.log").read_text()
        time.sleep(0.2)


def test_proxy_backend_keeps_keys_template_and_version(server):
    """The front door over an upstream OpenAI server (here another ftops serve; vLLM on a GPU box)."""
    b = server["ids"]["bbbb0002"]  # production after the swap test
    proc, base = _proxy(server, server["base"] + "/v1", server["keys"]["main"])
    try:
        assert httpx.post(base + "/v1/chat/completions", json={"messages": PING}).status_code == 401
        proxied = openai.OpenAI(base_url=base + "/v1", api_key=server["keys"]["main"], max_retries=0)
        answer = proxied.chat.completions.create(model=b, messages=PING, max_tokens=6, temperature=0)
        direct = client(server).chat.completions.create(model=b, messages=PING, max_tokens=6, temperature=0)
        assert answer.model == b and answer.choices[0].message.content == direct.choices[0].message.content
        assert answer.usage.prompt_tokens == direct.usage.prompt_tokens
        streamed = "".join(c.choices[0].delta.content or "" for c in proxied.chat.completions.create(
            model=b, messages=PING, max_tokens=6, temperature=0, stream=True) if c.choices)
        assert streamed == direct.choices[0].message.content
    finally:
        proc.terminate()
        proc.wait(30)


def test_vllm_serves_the_merged_model_behind_the_same_keys(server, tmp_path):
    """deploy/vllm.md's recipe: vLLM's OpenAI server on the merged model, ftops serve --upstream in front."""
    pytest.importorskip("vllm", reason="vllm is not installed (GPU machines only)")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    b = server["ids"]["bbbb0002"]
    port, upstream_key = free_port(), "vllm-internal-key"
    vllm = subprocess.Popen(["vllm", "serve", str(server["tmp"] / "bbbb0002"), "--served-model-name", b,
                             "--port", str(port), "--host", "127.0.0.1", "--api-key", upstream_key,
                             "--gpu-memory-utilization", "0.3"],
                            stdout=(tmp_path / "vllm.log").open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not _healthy(port):
            assert vllm.poll() is None and time.monotonic() < deadline, (tmp_path / "vllm.log").read_text()
            time.sleep(1)
        proc, base = _proxy(server, f"http://127.0.0.1:{port}/v1", upstream_key)
        try:
            proxied = openai.OpenAI(base_url=base + "/v1", api_key=server["keys"]["main"], max_retries=0)
            answer = proxied.chat.completions.create(model=b, messages=PING, max_tokens=6, temperature=0)
            assert answer.model == b and answer.usage.completion_tokens >= 1
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list()
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        vllm.terminate()
        vllm.wait(60)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
