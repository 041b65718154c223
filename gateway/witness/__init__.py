"""Witnessing of logs (c2sp.org/tlog-witness@v1.0.0, c2sp.org/tlog-cosignature@v1.0.1): docs/witness.md.

A security server can run a witness for the logs of peers in other members' organisations, and pushes the
checkpoints of its own logs (message logs and audit log) to the witnesses that the global configuration's
witness policy names for it.
"""
