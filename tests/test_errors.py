"""One error base (settlement/errors.py): every error class of wattmesh derives from
WattmeshError, and the command line turns any that a command did not word itself into one
line and exit code 2."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from wattmesh.exchange.cli.app import main
from wattmesh.settlement.canonical import CanonicalError
from wattmesh.settlement.errors import WattmeshError

# The engine depends on nothing of ours; its conformance adapter's private signal between
# two of its own functions never leaves it.
OUTSIDE = {"wattmesh.matching.conformance.Rejected"}
PARTS = ("exchange", "matching", "settlement", "meters", "agents")


def error_classes() -> dict[str, type]:
    """Every exception class defined in a module of wattmesh, by dotted name."""
    modules = []
    for part in PARTS:  # wattmesh is a namespace package: walk each part
        package = importlib.import_module(f"wattmesh.{part}")
        found = pkgutil.walk_packages(package.__path__, f"wattmesh.{part}.")
        modules += [i.name for i in found if not i.name.endswith("__main__")]
    classes = {}
    for name in modules:
        for attr, obj in vars(importlib.import_module(name)).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name:
                classes[f"{name}.{attr}"] = obj
    return classes


def test_every_error_of_wattmesh_is_a_wattmesh_error():
    found = error_classes()
    assert len(found) >= 19  # the walk reached every part
    strays = {name for name, cls in found.items() if not issubclass(cls, WattmeshError)}
    # Interrupted (exchange/cli/app.py) and the bot's _Stop (exchange/cli/bot.py) are
    # Ctrl-C and SIGTERM: BaseExceptions on purpose, so that nothing catches them as errors.
    assert strays - OUTSIDE == {"wattmesh.exchange.cli.app.Interrupted",
                                "wattmesh.exchange.cli.bot._Stop"}


def test_an_error_no_command_worded_is_still_one_line_and_exit_2(capsys, monkeypatch):
    def broken(*_args, **_kwargs):
        raise CanonicalError("orders[3].price: a float has no canonical form")

    monkeypatch.setattr("wattmesh.exchange.replay.replay.replay", broken)
    try:
        main(["replay"])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert err == "wattmesh: error: orders[3].price: a float has no canonical form\n"
