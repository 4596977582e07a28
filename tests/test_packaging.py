"""The installed package: one `wattmesh` namespace, nothing bare in site-packages."""

import subprocess
import sys

PARTS = ("exchange", "matching", "agents", "settlement", "meters")


def _run(code: str, cwd) -> str:
    # A fresh interpreter outside the repository, so the checkout's folders are not on
    # sys.path and only what is installed can be imported.
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_no_part_is_importable_under_its_bare_name(tmp_path):
    code = (
        "import importlib.util\n"
        f"print([n for n in {PARTS!r} if importlib.util.find_spec(n) is not None])"
    )
    assert _run(code, tmp_path) == "[]"


def test_every_part_imports_under_the_wattmesh_namespace(tmp_path):
    code = (
        "import importlib\n"
        f"mods = [importlib.import_module('wattmesh.' + n) for n in {PARTS!r}]\n"
        "import wattmesh.matching._engine as e\n"
        "print(len(mods), e.Book.__name__)"
    )
    assert _run(code, tmp_path) == "5 Book"


def test_console_script_entry_point_is_declared(tmp_path):
    code = (
        "from importlib.metadata import entry_points\n"
        "print([e.value for e in entry_points(group='console_scripts') if e.name == 'wattmesh'])"
    )
    assert _run(code, tmp_path) == "['wattmesh.exchange.cli.entry:main']"
