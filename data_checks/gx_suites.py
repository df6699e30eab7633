"""Moved to :mod:`ft_assets.data.suites` (logic, no Dagster); this name stays until every caller has moved."""

from ft_assets.data.suites import *  # noqa: F401,F403
from ft_assets.data.suites import (  # noqa: F401
    SuiteResult,
    clean_records_suite,
    deduped_records_suite,
    preference_split_suite,
    prepare_records,
    sft_split_suite,
    validate_frame,
    with_pii_column,
)
