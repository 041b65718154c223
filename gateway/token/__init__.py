"""Keys and certificates of a security server: the software token (docs/tokens.md).

- :mod:`gateway.token.model` (pure): the token's state, PIN lockout, import checks, certificate choice;
- :mod:`gateway.token.soft` (I/O): :class:`~gateway.token.soft.SoftToken`, PIN-encrypted PKCS#8 keys in a
  directory, handing out a :class:`~gateway.protocol.signatures.Signer` and the TLS key material;
- :mod:`gateway.token.metrics`: the certificate-expiry gauge.

A PKCS#11 token would implement the same operations (login, generate key, CSR, import, activate, signer,
TLS material) behind the same names; the security server only uses ``signer()`` and ``tls_material()``.
"""
