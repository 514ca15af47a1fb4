"""One Synapse per test process (xdist worker) for the interop modules whose config it
fits (``SHARED_SYNAPSE_EXTRA``): starting a Synapse costs seconds, and tens of seconds
on a loaded machine. Modules that use it register their own users
(``unique_localpart``) and make their own rooms, so they stay independent; each still
starts its own server of ours."""

from __future__ import annotations

import pytest

from tests.support.synapse import SHARED_SYNAPSE_EXTRA, SynapseServer
from tests.support.tls import TestCA


@pytest.fixture(scope="session")
def shared_synapse(tmp_path_factory) -> SynapseServer:
    directory = tmp_path_factory.mktemp("shared_synapse")
    synapse = SynapseServer(directory / "synapse", TestCA(directory / "ca"))
    synapse.start_blocking(SHARED_SYNAPSE_EXTRA)
    try:
        yield synapse
    finally:
        synapse.stop_blocking()
