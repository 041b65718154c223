"""Wire protocols (pure)."""
