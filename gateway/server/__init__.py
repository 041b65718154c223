"""One security server process (I/O)."""
