"""Build script: maps the top-level folders into the ``wattmesh`` namespace and compiles
the Cython extensions (the matching engine, the replay's line scanner, the ledger's fast
path for trades, the node's index of open orders). Metadata lives in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

PARTS = ("exchange", "matching", "agents", "settlement", "meters")

# Each top-level folder installs as wattmesh.<folder>; nothing lands bare in site-packages.
package_dir = {f"wattmesh.{part}": part for part in PARTS}
packages = list(package_dir)
for part in PARTS:
    # Sub-packages (folders with an __init__.py) keep their place under the part.
    import os

    for root, _dirs, files in os.walk(part):
        if root != part and "__init__.py" in files and "__pycache__" not in root:
            name = "wattmesh." + root.replace(os.sep, ".")
            packages.append(name)
            package_dir[name] = root

extensions = [
    Extension(
        "wattmesh.matching._engine",
        ["matching/_engine.pyx"],
        language="c++",
        extra_compile_args=["-O3"],
    ),
    Extension(
        "wattmesh.exchange.replay._logscan",
        ["exchange/replay/_logscan.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "wattmesh.settlement.ledger._fastfold",
        ["settlement/ledger/_fastfold.pyx"],
        extra_compile_args=["-O2"],
    ),
    Extension(
        "wattmesh.exchange.node._order_index",
        ["exchange/node/_order_index.pyx"],
        extra_compile_args=["-O2"],
    ),
]

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={
        "wattmesh.exchange.replay": ["data/*.jsonl", "*.pyx"],
        "wattmesh.matching": ["*.pyx", "*.pxd"],
        "wattmesh.settlement.ledger": ["*.pyx"],
        "wattmesh.exchange.node": ["*.pyx"],
        "wattmesh.agents": ["data/*.json"],
        "wattmesh.exchange.api": ["static/*"],  # the web page, served offline
    },
    ext_modules=cythonize(
        extensions,
        language_level=3,
        include_path=["matching"],  # matching/_native.pxd, shared by the extensions
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
    zip_safe=False,
)
