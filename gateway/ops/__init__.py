"""Operations: Prometheus metrics, readiness checks and the ops port that serves them (docs/operations.md
section 8). :mod:`.metrics` defines the metrics, :mod:`.readiness` the pure readiness rules, :mod:`.app` the
aiohttp application of the ops port."""
