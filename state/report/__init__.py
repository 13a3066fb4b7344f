"""`espresso report`: conversion rates, lift over holdout and A/B tests of campaigns.

Pure statistics and aggregation (no broker, no stream engine): `aggregate.Aggregator` counts
message, decision and conversion records, `stats` holds the tests, `render` the outputs.
"""

from .aggregate import KINDS, Aggregator, CampaignReport, Counts, InputStats, Report, Row, build_report
from .render import skipped_lines, table, to_html, to_json
from .stats import ABTest, Interval, ab_test, lift, wilson

__all__ = ["KINDS", "Aggregator", "CampaignReport", "Counts", "InputStats", "Report", "Row", "build_report",
           "skipped_lines", "table", "to_html", "to_json", "ABTest", "Interval", "ab_test", "lift", "wilson"]
