"""``ftops serve``: argparse wiring for the server and its ``keys`` subcommands."""

from __future__ import annotations

import argparse
import logging
import sys


def add_serve_parser(sub) -> None:
    serve = sub.add_parser("serve", help="serve a registry alias through an OpenAI-compatible API (API keys, "
                                         "batching, hot swap on promotion, A/B); `serve keys` manages keys")
    serve.add_argument("--alias", help="the alias to serve (default: production, else candidate)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--ab", action="append", metavar="ALIAS=WEIGHT",
                       help="send this share of requests to another alias, e.g. candidate=0.2 (repeatable)")
    serve.add_argument("--variant", help="serve this variant of the alias's run (merged, quantized, ...)")
    serve.add_argument("--registry", help="registry SQLite file (default: $FTOPS_REGISTRY or $FTOPS_HOME's)")
    serve.add_argument("--keys", help="API key file (default: $FTOPS_SERVE_KEYS or $FTOPS_HOME/serve_keys.json)")
    serve.add_argument("--upstream", help="proxy generation to this OpenAI server (e.g. vLLM at "
                                          "http://127.0.0.1:8001/v1) instead of loading the model here")
    serve.add_argument("--upstream-key-env", default="FTOPS_UPSTREAM_API_KEY",
                       help="environment variable holding the upstream's API key (vLLM --api-key)")
    serve.add_argument("--max-batch", type=int, default=16, help="requests per generate call (1: no batching)")
    serve.add_argument("--batch-wait-ms", type=float, default=10.0, help="how long a batch waits for company")
    serve.add_argument("--cache-size", type=int, default=256, help="exact-repeat cache entries for greedy "
                                                                   "requests (0: off)")
    serve.add_argument("--poll-interval", type=float, default=5.0, help="seconds between registry polls")
    serve.add_argument("--max-body-bytes", type=int, default=1 << 20)
    serve.add_argument("--max-prompt-tokens", type=int, default=2048)
    serve.add_argument("--max-tokens", type=int, default=512, help="the largest max_tokens a request may ask")
    serve.add_argument("--default-max-tokens", type=int, default=128)
    serve.add_argument("--rate-limit", type=float, default=600.0, help="requests per minute per key (a key's "
                                                                       "own limit wins)")
    serve.add_argument("--log-prompts", action="store_true", help="also log prompts and completions")
    serve.add_argument("--seed", type=int, help="seed of the A/B draw (for reproducible splits)")
    serve.add_argument("--torch-threads", type=int, help="CPU threads per generate call; 1 avoids stalls when "
                                                         "cores are shared (small models, busy machines)")
    serve.set_defaults(func=cmd_serve)
    keys = serve.add_subparsers(dest="serve_command").add_parser("keys", help="API keys").add_subparsers(
        dest="keys_command", required=True)
    add = keys.add_parser("add", help="create a key; it is printed once, only its hash is stored")
    add.add_argument("name")
    add.add_argument("--rate-limit", type=float, help="requests per minute for this key")
    add.set_defaults(func=cmd_keys_add)
    listing = keys.add_parser("list", help="key names, creation times and limits (never the keys)")
    listing.set_defaults(func=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="delete a key; a running server refuses it at once")
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_keys_revoke)
    for command in (add, listing, revoke):
        command.add_argument("--keys", help="API key file (default: $FTOPS_SERVE_KEYS or "
                                            "$FTOPS_HOME/serve_keys.json)")


def _store(args: argparse.Namespace):
    from ft_assets.serving.keys import KeyStore

    return KeyStore(args.keys)


def cmd_keys_add(args: argparse.Namespace) -> int:
    try:
        key = _store(args).add(args.name, args.rate_limit)
    except ValueError as exc:
        print(f"ftops serve keys: {exc}", file=sys.stderr)
        return 2
    print(key)
    print(f"key {args.name!r} created; it is shown only now: keep it in a secret store", file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    for info in _store(args).list():
        limit = f"{info.rate_limit:g}/min" if info.rate_limit else "server default"
        print(f"{info.name:24} created {info.created_at}  rate limit {limit}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    try:
        _store(args).revoke(args.name)
    except KeyError as exc:
        print(f"ftops serve keys: {exc.args[0]}", file=sys.stderr)
        return 2
    print(f"key {args.name!r} revoked")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ft_assets.serving.app import Limits, create_app
    from ft_assets.serving.engine import load_engine
    from ft_assets.serving.metrics import ServeMetrics
    from ft_assets.serving.router import Router, parse_ab
    from resources.paths import default_registry_path

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = _store(args)
    if not store.list():
        print(f"ftops serve: no API keys in {store.path}; create one with `ftops serve keys add NAME`",
              file=sys.stderr)
        return 2
    try:
        ab = parse_ab(args.ab)
    except ValueError as exc:
        print(f"ftops serve: {exc}", file=sys.stderr)
        return 2
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    metrics = ServeMetrics()
    if args.upstream:
        from ft_assets.serving.proxy import upstream_loader

        loader = upstream_loader(args.upstream, args.upstream_key_env)
    else:
        def loader(model):
            return load_engine(model.id, model.path, model.variant, max_batch=args.max_batch,
                               wait_ms=args.batch_wait_ms, cache_size=args.cache_size, metrics=metrics)
    router = Router(args.registry or default_registry_path(), loader, alias=args.alias, ab=ab, variant=args.variant,
                    poll_interval=args.poll_interval, seed=args.seed, on_swap=metrics.swapped)
    router.start()
    if not router.ready:
        print(f"ftops serve: {'; '.join(router.errors.values())}", file=sys.stderr)
        return 2
    limits = Limits(max_body_bytes=args.max_body_bytes, max_prompt_tokens=args.max_prompt_tokens,
                    max_tokens=args.max_tokens, default_max_tokens=args.default_max_tokens,
                    rate_limit=args.rate_limit, log_prompts=args.log_prompts)
    app = create_app(router, store, limits, metrics)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    finally:
        router.stop()
    return 0
