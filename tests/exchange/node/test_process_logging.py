"""``wattmesh node``'s logging (exchange/node/process.py): py-libp2p's own lines are quiet
unless --verbose."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from wattmesh.exchange.node import process


@pytest.fixture
def restored_logging():
    root, lib = logging.getLogger(), logging.getLogger("libp2p")
    saved = (root.handlers[:], root.level, lib.handlers[:], lib.level, lib.propagate)
    yield
    root.handlers[:], lib.handlers[:] = saved[0], saved[2]
    root.setLevel(saved[1])
    lib.setLevel(saved[3])
    lib.propagate = saved[4]


@pytest.mark.parametrize("verbose", [False, True])
def test_libp2p_speaks_only_when_asked(tmp_path: Path, restored_logging, verbose: bool):
    log = tmp_path / "node.log"
    process._setup_logging("info", log, verbose)
    chatty = logging.getLogger("libp2p.network.auto_connector")
    chatty.setLevel(logging.INFO)  # as py-libp2p's own module does
    chatty.info("AUTO_CONNECTOR_STATE: ...")
    logging.getLogger("libp2p.pubsub").error("peer left")
    logging.getLogger("wattmesh.node").info("settled interval 1 (00:00–00:15): ...")
    for h in logging.getLogger().handlers + logging.getLogger("libp2p").handlers:
        h.flush()
    text = log.read_text()
    assert "settled interval" in text
    assert ("AUTO_CONNECTOR_STATE" in text) is verbose
    assert ("peer left" in text) is verbose
