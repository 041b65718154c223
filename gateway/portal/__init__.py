"""The citizen portal: sign-in through OpenID Connect, and every access to the citizen's data across the
federation, gathered by ``findUsage`` over the exchange (docs/portal.md)."""
