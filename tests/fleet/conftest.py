"""Fixtures of the fleet tests: the agent tests' control plane and cluster (one real
kube-apiserver + etcd, the deploy/ manifests applied, the agent's ServiceAccount token), and
simulated fleets whose agents run in a harness process (``python -m migkit.fleet.harness``)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

AGENT_TESTS = Path(__file__).resolve().parents[1] / "agent"
if str(AGENT_TESTS) not in sys.path:
    sys.path.insert(0, str(AGENT_TESTS))

pytest.importorskip("kubernetes", reason="the fleet tests need the k8s extra: pip install '.[test]'")


def _agent_fixtures() -> Any:
    """The agent tests' conftest, loaded under its own name so its fixtures serve here too."""
    spec = importlib.util.spec_from_file_location("agent_test_fixtures", AGENT_TESTS / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_agent = _agent_fixtures()
control_plane = _agent.control_plane
cluster = _agent.cluster

from fleet_kit import Fleet, Harness  # noqa: E402


@pytest.fixture(scope="module")
def harness(cluster: dict[str, Any], control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        Harness]:
    """A harness process for this module's fleets (started by the first fleet)."""
    h = Harness(control_plane, cluster, tmp_path_factory.mktemp("fleet"))
    try:
        yield h
    finally:
        h.close()


@pytest.fixture(scope="module")
def fleets(harness: Harness) -> dict[str, Fleet]:
    """Named fleets of this module (made on first use, kept for the module)."""
    return harness.fleets
