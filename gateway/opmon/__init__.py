"""Operational monitoring (as X-Road's op-monitoring): one record per exchange and side, never bodies.

:mod:`.record` is the record (pure); :mod:`.models` its table; :mod:`.store` writes batches, reads with
filters and pages, prunes (I/O); :mod:`.writer` takes records from the proxies without waiting and drains them
into the store in a background task (I/O). docs/operations.md, "Operational monitoring".
"""
