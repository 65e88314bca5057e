"""Fixtures of the agent tests: fresh simulated GPU nodes on the session's API server (whose
``control_plane`` and ``cluster`` fixtures live in tests/k8s_cluster.py, shared with the fleet
tests), the operator's part, and the agents a test started."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CI") != "true":  # under CI the test extra is installed: a missing client fails
    pytest.importorskip("kubernetes", reason="the agent tests need the k8s extra: pip install '.[test]'")

from agent_kit import NodeRecorder, generated_config
from kubernetes import client  # type: ignore[import-untyped]

from migkit import simulator


@pytest.fixture
def core(cluster: dict[str, Any]) -> Any:
    return cluster["core"]


class GpuNode:
    """A fresh Node (unique name) with the operator's labels, a simulated GPU node, a config file."""

    def __init__(self, core: Any, workdir: Path, spec: str, labels: dict[str, str] | None) -> None:
        self.core = core
        self.workdir = workdir
        self.name = f"gpu-{uuid.uuid4().hex[:8]}"
        self.state = workdir / "node.state"
        simulator.write_state(self.state, spec)
        self.config = workdir / "config.yaml"
        with contextlib.suppress(subprocess.CalledProcessError):  # no MIG profiles to list: no file
            self.config.write_text(generated_config(self.state))
        base = {
            "kubernetes.io/hostname": self.name,
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.deploy.mig-manager": "true",
            **{k: "true" for k in (
                "nvidia.com/gpu.deploy.device-plugin", "nvidia.com/gpu.deploy.gpu-feature-discovery",
                "nvidia.com/gpu.deploy.dcgm-exporter", "nvidia.com/gpu.deploy.dcgm", "nvidia.com/gpu.deploy.nvsm")},
        }
        base.update(labels or {})
        core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=self.name, labels=base)))
        self.recorders: list[NodeRecorder] = []

    def operator(self, stuck: set[str] | None = None) -> NodeRecorder:
        rec = NodeRecorder(self.core, self.name, stuck).start()
        self.recorders.append(rec)
        return rec

    def close(self) -> None:
        for rec in self.recorders:
            rec.close()
        pods = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.name}").items
        for pod in pods:
            self.core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
        self.core.delete_node(self.name)


@pytest.fixture
def make_node(core: Any, tmp_path: Path) -> Iterator[Any]:
    made: list[GpuNode] = []

    def make(spec: str = "8xh100-80gb", labels: dict[str, str] | None = None) -> GpuNode:
        workdir = tmp_path / f"node{len(made)}"
        workdir.mkdir()
        node = GpuNode(core, workdir, spec, labels)
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()


@pytest.fixture
def agents() -> Iterator[list[Any]]:
    """Agents a test started; any still running is killed at the end."""
    started: list[Any] = []
    yield started
    for agent in started:
        agent.kill()
