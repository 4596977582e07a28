"""``python -m wattmesh.exchange.cli``: the ``wattmesh`` command."""

from wattmesh.exchange.cli.entry import main

main()
