"""Great Expectations suites and the Dagster asset checks built from them."""
