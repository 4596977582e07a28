"""The ``wattmesh`` console script's entry point: the command line loaded without the
cyclic garbage collector, then run.

Loading the CLI (typer and its click, orjson, the shared command helpers) makes tens of
thousands of objects and no garbage, and the collector walked them all several times on
the way: 4-5 ms of a replay's 75 ms start-up, measured alternated with and without. So the
collector is off while they load, and what they made is frozen (``gc.freeze``) out of
every later collection before it is on again for the command, which pauses it itself
where it makes many objects (a replay, a ledger's append).
"""

from __future__ import annotations

import gc

__all__ = ["main"]


def main() -> None:
    """Run ``wattmesh`` as its console script (``app.main`` with ``sys.argv``)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        from wattmesh.exchange.cli.app import main as run
    finally:
        gc.freeze()
        if collecting:
            gc.enable()
    run()
