"""ftops: Dagster assets from raw text drops to fine-tuned, merged, quantized and evaluated models."""

import os

# Nothing fetches models, datasets or kernels from a hub at run time: hub ids resolve from the local cache only.
# (bitsandbytes 0.50, imported on a CPU with avx512_bf16, otherwise asks the Hub for a kernel.) A value the user
# set wins.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
