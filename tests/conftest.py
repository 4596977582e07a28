"""Shared test configuration.

asyncio tests run in strict mode (``@pytest.mark.asyncio``); trio tests use anyio's plugin
(``@pytest.mark.anyio``) with the backend fixed to trio below, because py-libp2p and the
node run on trio. Both kinds can run in one session.
"""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "trio"
