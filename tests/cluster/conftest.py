"""Fixtures for the multi-host tests: three namespaced hosts with a NATS cluster and S3.

They skip, saying why, only where network namespaces cannot be made (not root, no ``ip``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.cluster.hosts import Hosts, NoNamespaces, namespaced_hosts

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
async def hosts(tmp_path: Path) -> AsyncIterator[Hosts]:
    """Three hosts, each running a node of one NATS cluster; S3 on the bridge. No
    controllers yet: a test starts them (``hosts.start_controller``) with its settings."""
    try:
        with namespaced_hosts(tmp_path) as made:
            for host in made.hosts.values():
                made.start_nats(host)
            made.start_s3()
            await made.wait_jetstream()
            yield made
    except NoNamespaces as e:
        print(f"\nskipped: {e}")
        pytest.skip(f"no network namespaces here: {e}")
