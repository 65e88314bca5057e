"""The agent against a real kube-apiserver and a simulated 8xH100 node: the scenarios of the
GPU Operator's MIG walkthroughs and every failure path. The agent runs as a process with the
ServiceAccount token of deploy/, so its RBAC is exercised, not assumed."""

from __future__ import annotations

from typing import Any

from agent_kit import (
    BALANCED_H100,
    CONFIG,
    NAMESPACE,
    Agent,
    deploy_values,
    events,
    layout,
    node_labels,
    set_label,
    states_after,
    wait_for,
    wait_terminal,
    was_paused,
)

ALL_TRUE = {k: "true" for k in (
    "nvidia.com/gpu.deploy.device-plugin", "nvidia.com/gpu.deploy.gpu-feature-discovery",
    "nvidia.com/gpu.deploy.dcgm-exporter", "nvidia.com/gpu.deploy.dcgm", "nvidia.com/gpu.deploy.nvsm")}


def test_walkthroughs_by_label(cluster: dict[str, Any], core: Any, make_node: Any, agents: list[Agent]) -> None:
    """single, mixed, reconfigure and disable by `kubectl label`: each ends in success with the
    operands paused then restored, the GPUs laid out as named, and an Event per transition."""
    node = make_node()
    rec = node.operator()
    clients = {"WITH_SHUTDOWN_HOST_GPU_CLIENTS": "true", "GPU_CLIENTS_FILE": str(node.workdir / "clients.yaml")}
    agent = Agent(node.workdir, node.name, cluster["kubeconfig"], node.state, env=clients)
    (node.workdir / "clients.yaml").write_text("version: v1\nsystemd-services: [nvidia-dcgm.service, nvsm.service]\n")
    agent.set_active_services(["nvidia-dcgm.service", "kubelet.service"])
    agents.append(agent.start())
    wait_for("operand pods", lambda: len(core.list_namespaced_pod(
        NAMESPACE, field_selector=f"spec.nodeName={node.name}").items) == 4)

    expected = {
        "all-1g.10gb": [(1, ("1g.10gb",) * 7)] * 8,
        "all-balanced": [(1, BALANCED_H100)] * 8,
        "all-3g.40gb": [(1, ("3g.40gb",) * 2)] * 8,
        "all-disabled": [(0, ())] * 8,
    }
    for name, want in expected.items():
        mark = rec.mark()
        set_label(core, node.name, name)
        wait_terminal(rec, mark, timeout=90, want="success")
        labels = node_labels(core, node.name)
        assert labels[CONFIG] == name
        assert layout(node.state) == want, name
        assert deploy_values(labels) == ALL_TRUE
        assert states_after(rec.labels_seen(), mark) == ["pending", "success"]
        assert was_paused(rec.labels_seen(), mark)
        assert agent.active_services() == ["kubelet.service", "nvidia-dcgm.service"]
    calls = [" ".join(c) for c in agent.host_calls()]
    # kubelet only across the two MIG mode changes (first and last step), host clients every time
    assert calls.count("systemctl stop kubelet.service") == 2
    assert calls.count("systemctl stop nvidia-dcgm.service") == 4
    assert "systemctl stop nvsm.service" not in calls  # it was not running: nothing to stop or start
    reasons = [r for _, r, _ in events(core, node.name)]
    assert reasons == ["MigConfigPending", "MigConfigApplied"] * 4
    cm = core.read_namespaced_config_map(f"{node.name}-mig-config", NAMESPACE)
    assert "all-balanced" in cm.data["config.yaml"]
    assert agent.metric('migkit_agent_reconfigurations_total{result="success"}') == 4
    assert agent.stop() == 0
