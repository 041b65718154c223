"""Development tools (I/O)."""
