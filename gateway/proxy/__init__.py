"""The security server's two proxies: the client side (information systems call it with X-Road REST r1) and
the server side (peer security servers call it over mutual TLS)."""
