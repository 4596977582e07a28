"""Shared test configuration.

asyncio tests run in strict mode (``@pytest.mark.asyncio``); trio tests use anyio's plugin
(``@pytest.mark.anyio``) with the backend fixed to trio below, because py-libp2p and the
node run on trio. Both kinds can run in one session.
"""

from collections.abc import Callable

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


@pytest.fixture
def cli() -> Callable[..., tuple[int, str, str]]:
    """Run a ``wattmesh`` command in-process on the root command (typer's CliRunner):
    ``cli("ledger", "verify", path)`` -> (exit code, stdout, stderr). Arguments may be
    paths or numbers; ``input=`` is fed to stdin."""
    from typer.testing import CliRunner

    from wattmesh.exchange.cli.app import app

    def run(*args: object, input: bytes | str | None = None) -> tuple[int, str, str]:
        res = CliRunner().invoke(app, [str(a) for a in args], input=input)
        return res.exit_code, res.stdout, res.stderr

    return run


@pytest.fixture
def console(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run the console script's ``main()`` in-process, with its own error handling (one
    line, exit code): ``console("replay", "--json")`` -> (exit code, stdout, stderr)."""
    from wattmesh.exchange.cli.app import main

    def run(*args: object) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        return exc.value.code, out, err

    return run
