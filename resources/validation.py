"""Great Expectations 1.x, as an ephemeral context wrapped in a resource."""

from __future__ import annotations

import pandas as pd
from dagster import ConfigurableResource

from ft_assets.data.suites import SuiteResult, validate_frame


class GreatExpectationsResource(ConfigurableResource):
    """Validates DataFrames against the suites in ``ft_assets.data.suites``."""

    result_format: str = "COMPLETE"

    def validate(self, frame: pd.DataFrame, suite_name: str, expectations: list,
                 docs_dir: str | None = None) -> SuiteResult:
        return validate_frame(frame, suite_name, expectations, result_format=self.result_format, docs_dir=docs_dir)
