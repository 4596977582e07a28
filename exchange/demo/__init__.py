"""``wattmesh demo``: N household node processes on loopback, checked and summarised.
``plan`` (the households and the mesh), ``run`` (the processes and the checks:
``run_demo``), ``accounts`` (a ledger read per household, with its grid-alone twin),
``report`` (the text)."""
