"""gateway: an X-Road-style secure data-exchange layer."""

__version__ = "0.1.0"
