"""ftops: Dagster assets from raw text drops to fine-tuned, merged, quantized and evaluated models."""
