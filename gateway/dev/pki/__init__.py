"""The development PKI: a CA that issues from CSRs, an RFC 6960 OCSP responder, an RFC 3161 TSA and an ACME endpoint.

It lets a whole federation run on one machine with no outside service. Nothing outside ``gateway.dev.pki``
depends on it: security servers use :mod:`gateway.trust.ocsp` and :mod:`gateway.trust.timestamp`, which work with any
CA, OCSP responder and TSA named in the global configuration. See ``docs/pki.md``.

* :mod:`gateway.dev.pki.ca` - the CA and its directory (I/O);
* :mod:`gateway.dev.pki.ocsp_responder` - OCSP answers (pure);
* :mod:`gateway.dev.pki.tsa` - timestamp answers (pure);
* :mod:`gateway.dev.pki.acme` - the ACME server for certificate renewal, RFC 8555 (pure);
* :mod:`gateway.dev.pki.http` - the HTTP endpoints: OCSP, TSA, ACME (I/O).
"""
