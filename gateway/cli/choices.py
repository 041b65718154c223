"""Values the parser shows and checks (``choices=``, defaults), copied from the modules that own them (pure).

Building the parser must not import those modules: :mod:`gateway.trust.keys` pulls in cryptography,
:mod:`adapters.demo_data` SQLAlchemy and aiohttp, :mod:`gateway.serverconf` its whole model. Each copy
names its source; tests/unit/test_cli_start.py checks that every copy equals its source, so that they cannot
drift apart.
"""

from __future__ import annotations

# gateway.trust.keys.KEY_TYPES
KEY_TYPES: tuple[str, ...] = ("ec-p256", "rsa-2048", "rsa-3072")
# gateway.trust.certprofile.CERT_KINDS
CERT_KINDS: tuple[str, ...] = ("auth", "sign")
# gateway.dev.pki.ca.REASONS (CRL reason names, RFC 5280 section 5.3.1)
REASONS: tuple[str, ...] = (
    "unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded", "cessationOfOperation",
    "certificateHold", "privilegeWithdrawn", "aACompromise",
)
# gateway.serverconf.CLIENT_STATUSES and IS_AUTH_MODES
CLIENT_STATUSES: tuple[str, ...] = ("saved", "registered", "disabled")
IS_AUTH_MODES: tuple[str, ...] = ("none", "https", "https-cert")
# adapters.demo_data.DEFAULT_SEED, DEFAULT_PERSONS, DEFAULT_COMPANIES
DEMO_SEED = 2024
DEMO_PERSONS = 200
DEMO_COMPANIES = 100
