"""gateway: an X-Road-style secure data-exchange layer.

Agencies' information systems call their own **security server** with X-Road's REST protocol r1; the security
server signs the request, logs it durably and sends it over mutual TLS to the provider's security server, which
checks it, logs it, calls the service and answers the same way. A **central server** publishes the signed global
configuration that says whom to trust. ``docs/architecture.md`` is the map; this is the short version.

The packages are layers. Each imports only the layers below it (``lint-imports`` checks this), and the lower
ones are pure: bytes, frozen dataclasses and ``now`` in, a result or an error out.

==========================  ========================================================================
``cli``                     the ``gateway`` command; one module per domain, imported only when used
``dev``                     development PKI (CA, OCSP responder, TSA) and the demo federation
``server``                  one security server process: opens resources once, runs the ports
``proxy``, ``admin``        the two data-path ports (client side, server side); the admin REST API
``central``                 the federation's registry and the publisher of the global configuration
``messagelog``              signed, group-committed records in a Merkle tree; checkpoints; audits
``serverconf``              this server's clients, services, access rights (``access``: the rules)
``token``                   keys and certificates behind the ``Signer`` seam
``globalconf``              the signed global configuration: model, verification, download; peer trust
``protocol``                wire formats: REST r1, RFC 8941 fields, RFC 9421/9530 signatures, replay
``trust``                   primitives: canonical JSON, keys, certificate profile, OCSP, RFC 3161
``storage``                 database engines, migrations, shared column types
``identifiers``             X-Road identifiers as frozen value objects
``settings``, ``logs``      this process's settings; operational logging (not the message log)
``errors``                  whose fault an error is, and the X-Road fault type it carries
``adapterapi``              the seam the service adapters in ``adapters/`` are written against
==========================  ========================================================================
"""

__version__ = "0.1.0"
