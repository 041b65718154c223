"""Wire protocols (pure): X-Road's REST protocol r1 as information systems speak it (:mod:`~gateway.protocol.rest`),
RFC 8941 structured fields (:mod:`~gateway.protocol.sfv`), the RFC 9421/9530 signature profile between
security servers (:mod:`~gateway.protocol.signatures`) and replay protection (:mod:`~gateway.protocol.replay`).

Bytes and strings in, frozen dataclasses and decisions out; no sockets, no clock. ``docs/protocol.md`` specifies
the profile precisely enough for an independent implementation.
"""
