"""The message log: what auditors rely on (docs/messagelog.md).

:mod:`gateway.messagelog.record` (pure) defines the record and its canonical encoding;
:mod:`gateway.messagelog.store` (I/O) stores records durably with group commit. ``docs/messagelog.md``
specifies the encoding for independent verifiers.
"""

from gateway.messagelog.merkle import leaf_hash
from gateway.messagelog.record import LogRecord, decode

__all__ = ["LogRecord", "decode", "leaf_hash"]
