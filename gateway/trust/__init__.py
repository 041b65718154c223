"""Trust primitives that know nothing of the federation: canonical JSON (RFC 8785), keys and signatures, the
certificate profile, OCSP (RFC 6960) and RFC 3161 timestamps.

Pure, except :mod:`~gateway.trust.ocsp_fetch`, the HTTP fetch of OCSP responses and timestamp replies whose bytes
go unchanged to the pure checks. The federation's policy built on these (which CA, which registered server,
which member) is :mod:`gateway.globalconf.peertrust`.
"""
