"""Where the service is observed: one event becomes one log line and its metric changes.

- `logging`: the one structlog pipeline every line of stdout goes through.
- `metrics`: every Prometheus metric, defined in one place.
- `events`: one method per log event of the contract, writing the line and moving the metrics.
"""
