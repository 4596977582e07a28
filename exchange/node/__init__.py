"""The household node: gossip in (``p2p``, ``wire``, ``admission``, ``message_store``),
gathering and votes among members (``sync``, ``quorum``), settling each certified
interval into the ledger (``settle_interval``), all driven by ``household.HouseholdNode``;
``config`` is its data directory and node.toml, ``process`` the ``wattmesh node``
process around it."""
