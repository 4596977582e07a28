"""``python -m wattmesh.exchange.cli``: the ``wattmesh`` command."""

from wattmesh.exchange.cli.app import main

main()
