"""The applications built on the engine, the ledger and the meters: the household node
(``node``), order-log replay (``replay``), the demo (``demo``) and the ``wattmesh``
command line (``cli``). The modules beside them are what more than one of them uses: the
community file, the clock, whole-or-nothing output files and how money and energy are
written for people."""
