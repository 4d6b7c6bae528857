"""Limits Shoal enforces at every entry point (compose files, API bodies, the store)."""

MAX_REPLICAS = 10_000
# The longest duration Shoal accepts (grace periods, delays, intervals): a year, in seconds.
MAX_DURATION = 365 * 24 * 3600.0
# Agents heartbeat this often unless `shoal update --dispatcher-heartbeat` says otherwise; a
# node silent for HEARTBEAT_GRACE periods is down. (Swarm: 5 s x 3; Shoal reacts faster.)
DEFAULT_HEARTBEAT = 2.0
HEARTBEAT_GRACE = 3
# Node certificates: 90 days unless `shoal update --cert-expiry` says otherwise.
DEFAULT_CERT_EXPIRY = 90 * 24 * 3600.0
MIN_CERT_EXPIRY = 60.0
MAX_CERT_EXPIRY = 10 * 365 * 24 * 3600.0
