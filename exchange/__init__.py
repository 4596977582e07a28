"""The household node and the ``wattmesh`` command line (replay for now; the node later)."""
