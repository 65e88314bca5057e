"""Shared test configuration: Hypothesis profiles and simulated-node fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("long", max_examples=10_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def sim_state(tmp_path: object) -> Iterator[str]:
    """Path of a state file for a fresh simulated 8xh100-80gb node (removed after the test)."""
    from migkit import simulator

    path = os.path.join(str(tmp_path), "node.state")
    simulator.write_state(path, "8xh100-80gb")
    yield path
