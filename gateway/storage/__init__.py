"""Storage (I/O)."""
