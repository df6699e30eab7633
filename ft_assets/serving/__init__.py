"""``ftops serve``: an OpenAI-compatible server over registry aliases (API keys, batching, hot swap, A/B).

Plain logic, no Dagster: ``keys`` (API keys and rate limits), ``engine`` (one loaded model and its batching
worker), ``router`` (aliases to loaded versions, registry polling, A/B), ``app`` (the FastAPI routes),
``proxy`` (the same front door over an upstream OpenAI server such as vLLM), ``cli`` (argparse wiring).
"""
