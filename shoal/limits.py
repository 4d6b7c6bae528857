"""Limits Shoal enforces at every entry point (compose files, API bodies, the store)."""

MAX_REPLICAS = 10_000
# The longest duration Shoal accepts (grace periods, delays, intervals): a year, in seconds.
MAX_DURATION = 365 * 24 * 3600.0
