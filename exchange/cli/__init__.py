"""The ``wattmesh`` command line: ``app`` is the root command and ``main``; one module per
command group (``node``, ``ledger``, ``meter``, ``simulate_*``); ``terminal`` is what the
commands share. ``python -m wattmesh.exchange.cli`` runs it too."""
