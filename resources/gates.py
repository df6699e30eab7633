"""Thresholds of the model gates, in one place the launchpad can override."""

from dagster import ConfigurableResource
from pydantic import Field


class ModelGates(ConfigurableResource):
    """What a model must show before it counts as good: used by the asset checks and written into the report."""

    merge_logit_tolerance: float = Field(0.01, description="max |logit diff| merged vs base+adapter on the probes")
    min_exact_match_gain: float = Field(0.2, description="adapter exact match minus base exact match, at least")
    quantized_exact_match_tolerance: float = Field(0.15, description="merged minus quantized exact match, at most")
    max_runaway_rate: float = Field(0.0, description="share of probe generations that never emit EOS, at most")
