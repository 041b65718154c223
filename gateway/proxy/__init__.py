"""The two data-path ports of a security server, and what they share (I/O).

A request crosses two proxies, one in each agency's security server::

    information system ──r1──▶ client_proxy ══ peers (pooled mTLS) ══▶ server_proxy ──▶ service
                       ◀──────             ◀══════════════════════════              ◀──

- :mod:`~gateway.proxy.client_proxy`: the **client side**. Information systems of this server's own members call
  it with X-Road's REST protocol r1 over plain HTTP or HTTPS. It authenticates the client system, finds the
  provider's servers, signs and logs the request, sends it, verifies and logs the signed response.
- :mod:`~gateway.proxy.server_proxy`: the **server side**. Only peer security servers reach it, over mutual TLS.
  It checks the peer, the client, the signature and the replay window, logs, checks access rights, calls the
  service, signs and logs the answer. :mod:`~gateway.proxy.metaservices` answers the metaservices itself.
- :mod:`~gateway.proxy.peers`: all socket work toward peers: one kept-alive connection pool per peer server,
  each connection checked against the global configuration and OCSP before a request byte is written.
- :mod:`~gateway.proxy.tls`: the TLS contexts of both ports and of the peer client.
- :mod:`~gateway.proxy.context`: what both sides read at run time, all in memory: the verified global
  configuration, the serverconf snapshot, our signer, cached OCSP responses (:mod:`~gateway.proxy.ocspcache`),
  the replay cache, the body budget and the message-log writer.
- :mod:`~gateway.proxy.common`: the one error middleware per port, bounded body reading, header decoding.

The decisions are not made here. Parsing and rendering r1 is :mod:`gateway.protocol.rest`, signing and
verifying is :mod:`gateway.protocol.signatures`, peer and signing-certificate rules are
:mod:`gateway.globalconf.peertrust`, access rules are :mod:`gateway.serverconf.access`; all pure. This package
reads the sockets, calls those rules in the order the proxies' docstrings number, and writes the answer.
Faults are raised without a side; each proxy's error middleware names its side (``Server.ClientProxy`` or
``Server.ServerProxy``) once, at its entry point. :mod:`gateway.server.runtime` builds both applications.
"""
