"""``wattmesh demo``: N household node processes on loopback, checked and summarised
(``run``)."""
