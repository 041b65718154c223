"""One security server process (I/O): :mod:`~gateway.server.runtime` opens the shared resources once and runs
the client port, the server port and the admin port; :mod:`~gateway.server.keyfiles` knows where the key and
certificate files are; :mod:`~gateway.server.regclient` sends signed registration requests to the central server.
"""
