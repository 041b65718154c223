"""Transparency for data subjects (docs/transparency.md): who looked at a person's data, when and why, provably.

- :mod:`~gateway.transparency.headers`: the request headers ``X-Road-Data-Subject``, ``X-Road-Purpose``,
  ``X-Road-Purpose-Text``, ``X-Road-Legal-Basis`` and ``X-Road-Transparency`` (embargo), checked against the
  federation's transparency parameters (purpose list, portal subsystem, embargo entitlements) (pure);
- :mod:`~gateway.transparency.records`: the *usage record* (an access record on the consumer's server, a
  disclosure record on the provider's) logged next to the exchange's records in the Merkle message log, with
  salted commitments instead of subject identifiers, and its blind-index rows (pure);
- :mod:`~gateway.transparency.index`: the blind index, salts included, kept by the agency beside the log (I/O);
- :mod:`~gateway.transparency.service`: the ``findUsage``, ``usagePeriod`` and ``heartbeat`` metaservices (I/O);
- :mod:`~gateway.transparency.evidence`: an item's evidence, built and verified offline (pure).
"""
