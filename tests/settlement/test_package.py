"""The settlement package's public names load on first use (settlement/__init__.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import wattmesh.settlement as settlement


def test_every_public_name_resolves_to_its_module() -> None:
    for name in settlement.__all__:
        value = getattr(settlement, name)
        assert value.__module__.startswith("wattmesh.settlement."), name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        settlement.nope  # noqa: B018


def test_importing_one_module_does_not_load_the_keys() -> None:
    code = ("import sys, wattmesh.settlement.errors; "
            "print('wattmesh.settlement.keys' in sys.modules, "
            "'cryptography' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert out.split() == ["False", "False"]
