"""Moved to :mod:`ft_assets.tasks.text_to_sql` (the demo task); this name stays until every caller has moved."""

from ft_assets.tasks.text_to_sql import *  # noqa: F401,F403
from ft_assets.tasks.text_to_sql import DB_ID, SCHEMA_SUMMARY, build_database, generate_clean_pairs  # noqa: F401
