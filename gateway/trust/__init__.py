"""Trust primitives (pure apart from ``ocsp_fetch``)."""
