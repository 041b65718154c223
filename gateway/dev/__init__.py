"""Development tools (I/O): the development PKI (:mod:`gateway.dev.pki`: CA, OCSP responder, TSA) and the demo
federation (:mod:`gateway.dev.demo`). Nothing in a security server or the central server depends on them.
"""
