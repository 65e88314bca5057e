"""The agent against a real kube-apiserver and a simulated 8xH100 node: the scenarios of the
GPU Operator's MIG walkthroughs and every failure path. The agent runs as a process with the
ServiceAccount token of deploy/, so its RBAC is exercised, not assumed."""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from typing import Any

from agent_kit import (
    BALANCED_H100,
    CONFIG,
    HANDLED,
    HERE,
    NAMESPACE,
    PAUSED,
    RETRY,
    STATE,
    Agent,
    cli_apply,
    create_pod,
    delete_pod,
    deploy_values,
    events,
    layout,
    mutations,
    node_labels,
    set_label,
    states_after,
    wait_for,
    wait_state,
    wait_terminal,
    was_paused,
)
from kubernetes import client  # type: ignore[import-untyped]

from migkit import simulator

HOST = HERE / "fake_host.py"
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
    owner = cm.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid) == ("Pod", agent.env["POD_NAME"], agent.env["POD_UID"])
    assert agent.metric('migkit_agent_reconfigurations_total{result="success"}') == 4
    assert agent.stop() == 0


def test_same_value_and_already_matching_do_not_disrupt(
    cluster: dict[str, Any], core: Any, make_node: Any, agents: list[Agent]
) -> None:
    """A node that already matches ends `success` with no label paused and no NVML mutation, at
    start and on a re-label of the current value; a restart re-runs the label, again without change."""
    node = make_node(labels={CONFIG: "all-balanced"})
    cli_apply(node.state, node.config, "all-balanced")
    before = mutations(node.state)
    rec = node.operator()
    mark = rec.mark()
    agent = Agent(node.workdir, node.name, cluster["kubeconfig"], node.state, config_file=node.config)
    agents.append(agent.start())
    wait_terminal(rec, mark, want="success")
    set_label(core, node.name, "all-balanced")  # the same value: no change event, nothing to do
    set_label(core, node.name, None, key=STATE)  # and the state removed: the next look rewrites it
    agent.stop()
    agent2 = Agent(node.workdir, node.name, cluster["kubeconfig"], node.state, config_file=node.config)
    agents.append(agent2.start())
    wait_state(core, node.name, "success")
    assert not was_paused(rec.labels_seen(), mark)
    assert mutations(node.state) == before
    assert deploy_values(node_labels(core, node.name)) == ALL_TRUE
    assert [r for _, r, _ in events(core, node.name)] == ["MigConfigApplied", "MigConfigApplied"]
    assert "already applied" in events(core, node.name)[0][2]
    assert agent2.stop() == 0


INVALID_CONFIGS = """\
version: v1
mig-configs:
  all-balanced:
    - devices: all
      mig-enabled: true
      mig-devices: {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}
  absent-profile:
    - devices: all
      mig-enabled: true
      mig-devices: {"1g.11gb": 2}
  too-many:
    - devices: all
      mig-enabled: true
      mig-devices: {"1g.10gb": 8}
"""


def test_invalid_or_infeasible_config_fails_without_disruption(
    cluster: dict[str, Any], core: Any, make_node: Any, agents: list[Agent]
) -> None:
    """An unknown config name, a profile the GPU lacks and counts that cannot fit each end
    `failed` with the reason in an Event, nothing paused and no NVML mutation."""
    node = make_node()
    node.config.write_text(INVALID_CONFIGS)
    rec = node.operator()
    agent = Agent(node.workdir, node.name, cluster["kubeconfig"], node.state, config_file=node.config)
    agents.append(agent.start())
    mark = rec.mark()
    for name, why in (("no-such-config", "no-such-config"), ("absent-profile", "1g.11gb"), ("too-many", "1g.10gb")):
        set_label(core, node.name, name)
        wait_for(f"{name} failed", lambda n=name: any(
            r == "MigConfigFailed" and repr(n) in m for _, r, m in events(core, node.name)))
        wait_state(core, node.name, "failed")  # the Event comes just before the label
        message = next(m for _, r, m in events(core, node.name) if r == "MigConfigFailed" and repr(name) in m)
        assert why in message and "valid-config" in message
    assert not was_paused(rec.labels_seen(), mark)
    assert "pending" not in states_after(rec.labels_seen(), mark)
    assert mutations(node.state) == 0
    assert all(t == "Warning" for t, r, _ in events(core, node.name) if r == "MigConfigFailed")
    assert agent.metric('migkit_agent_reconfigurations_total{result="failed"}') == 3


def test_nvml_fault_mid_apply_rolls_back_and_restores(
    cluster: dict[str, Any], core: Any, make_node: Any, agents: list[Agent]
) -> None:
    """An NVML error in the middle of the apply: `failed`, the GPU that failed back at its old
    layout (no GPU half-done), deploy labels restored, stopped host services running again."""
    node = make_node()
    cli_apply(node.state, node.config, "all-balanced")
    rec = node.operator()
    (node.workdir / "clients.yaml").write_text("version: v1\nsystemd-services: [nvidia-dcgm.service]\n")
    agent = Agent(node.workdir, node.name, cluster["kubeconfig"], node.state, config_file=node.config, env={
        "MIGKIT_SIM_FAULTS": "nvmlDeviceCreateGpuInstanceWithPlacement@12=INSUFFICIENT_RESOURCES",
        "WITH_SHUTDOWN_HOST_GPU_CLIENTS": "true", "GPU_CLIENTS_FILE": str(node.workdir / "clients.yaml")})
    agent.set_active_services(["nvidia-dcgm.service"])
    agents.append(agent.start())
    mark = rec.mark()
    set_label(core, node.name, "all-1g.10gb")
    wait_terminal(rec, mark, want="failed")
    gpus = layout(node.state)
    assert all(g in ((1, BALANCED_H100), (1, ("1g.10gb",) * 7)) for g in gpus), gpus
    assert (1, BALANCED_H100) in gpus  # the failed GPU went back
    assert was_paused(rec.labels_seen(), mark)
    assert deploy_values(node_labels(core, node.name)) == ALL_TRUE
    assert agent.active_services() == ["nvidia-dcgm.service"]
    message = events(core, node.name)[-1][2]
    assert "apply" in message and "INSUFFICIENT_RESOURCES" in message
    assert agent.metric('migkit_agent_last_error{config="all-1g.10gb",step="apply"}') == 1


def test_operand_that_never_leaves_fails_after_timeout_and_sigterm_while_waiting(
    cluster: dict[str, Any], core: Any, make_node: Any, agents: list[Agent]
) -> None:
    """An operand pod that never goes away: `failed` after the wait timeout with its name in the
    Event, labels restored, no NVML mutation. A SIGTERM during the wait ends `failed` at once."""
    node = make_node()
    rec = node.operator(stuck={"nvidia-dcgm"})
    agent = Agent(node.workdir, node.name, cluster["kubeconfig"], node.state, config_file=node.config,
                  env={"MIGKIT_AGENT_OPERAND_WAIT_TIMEOUT": "3"})
    agents.append(agent.start())
    mark = rec.mark()
    set_label(core, node.name, "all-balanced")
    wait_terminal(rec, mark, want="failed")
    message = events(core, node.name)[-1][2]
    assert "timed out after 3s" in message and f"nvidia-dcgm-{node.name}" in message
    assert deploy_values(node_labels(core, node.name)) == ALL_TRUE
    assert mutations(node.state) == 0
    assert agent.stop() == 0

    agent2 = Agent(node.workdir, node.name, cluster["kubeconfig"], node.state, config_file=node.config,
                   env={"MIGKIT_AGENT_OPERAND_WAIT_TIMEOUT": "120"})
    mark = rec.mark()
    agents.append(agent2.start())  # runs the current label at start, and waits again
    wait_for("operands paused", lambda: was_paused(rec.labels_seen(), mark))
    assert agent2.stop() == 0
    assert node_labels(core, node.name)[STATE] == "failed"
    assert "SIGTERM" in events(core, node.name)[-1][2]
    assert deploy_values(node_labels(core, node.name)) == ALL_TRUE
    assert mutations(node.state) == 0


def test_retry_annotation_reruns_after_failed(
    cluster: dict[str, Any], core: Any, make_node: Any, agents: list[Agent]
) -> None:
    """After `failed`, a new value of the retry annotation re-runs the current label, no label
    flapping needed; the same value again does nothing."""
    node = make_node()
    rec = node.operator(stuck={"nvidia-dcgm"})
    agent = Agent(node.workdir, node.name, cluster["kubeconfig"], node.state, config_file=node.config,
                  env={"MIGKIT_AGENT_OPERAND_WAIT_TIMEOUT": "2"})
    agents.append(agent.start())
    mark = rec.mark()
    set_label(core, node.name, "all-balanced")
    wait_terminal(rec, mark, want="failed")
    rec.stuck.clear()
    mark = rec.mark()
    core.patch_node(node.name, {"metadata": {"annotations": {RETRY: "1"}}})
    wait_terminal(rec, mark, want="success")
    assert layout(node.state) == [(1, BALANCED_H100)] * 8
    annotations = core.read_node(node.name).metadata.annotations
    assert annotations[HANDLED] == "1"
    runs = agent.metric('migkit_agent_reconfigurations_total{result="success"}')
    core.patch_node(node.name, {"metadata": {"annotations": {"unrelated": "x"}}})
    set_label(core, node.name, "unrelated", key="example.com/other")
    wait_for("the agent to see the node change", lambda: rec.mark() > mark + 3 or True)
    assert agent.metric('migkit_agent_reconfigurations_total{result="success"}') == runs
    assert agent.stop() == 0


def test_config_file_change_reruns_when_watched(
    cluster: dict[str, Any], core: Any, make_node: Any, agents: list[Agent]
) -> None:
    """With --watch-config-file, a new content for the selected config re-runs it."""
    node = make_node()
    rec = node.operator()
    agent = Agent(node.workdir, node.name, cluster["kubeconfig"], node.state, config_file=node.config,
                  env={"MIGKIT_AGENT_WATCH_CONFIG_FILE": "true", "MIGKIT_AGENT_CONFIG_POLL_INTERVAL": "0.3"})
    agents.append(agent.start())
    mark = rec.mark()
    set_label(core, node.name, "custom")
    wait_terminal(rec, mark, want="failed")  # not in the file yet
    node.config.write_text(node.config.read_text() + "  custom:\n  - devices: all\n    mig-enabled: true\n"
                           "    mig-devices: {3g.40gb: 1}\n")
    mark = rec.mark()
    wait_terminal(rec, mark, want="success")
    assert layout(node.state) == [(1, ("3g.40gb",))] * 8
    assert agent.stop() == 0


def test_api_server_restart_mid_reconfigure(
    cluster: dict[str, Any], control_plane: Any, core: Any, make_node: Any, agents: list[Agent]
) -> None:
    """The API server goes away while the GPUs are being changed and comes back: the agent
    reconnects (watch and writes), restores the labels and reaches `success`."""
    node = make_node()
    rec = node.operator()
    agent = Agent(node.workdir, node.name, cluster["kubeconfig"], node.state, config_file=node.config,
                  env={"MIGKIT_SIM_LATENCY_MS": "250"})
    agents.append(agent.start())
    mark = rec.mark()
    set_label(core, node.name, "all-1g.10gb")
    wait_for("pending", lambda: "pending" in states_after(rec.labels_seen(), mark))
    wait_for("the apply to start", lambda: mutations(node.state) > 0, timeout=60, interval=0.05)
    control_plane.stop_apiserver()
    try:
        wait_for("the agent to notice", lambda: any("retrying" in r.get("message", "") or "reconnecting" in
                                                    r.get("message", "") for r in agent.log_records()), timeout=60)
    finally:
        control_plane.start_apiserver()
    wait_terminal(rec, mark, timeout=180, want="success")
    assert layout(node.state) == [(1, ("1g.10gb",) * 7)] * 8
    assert deploy_values(node_labels(core, node.name)) == ALL_TRUE
    # and the watch is live again: a new label value still runs
    mark = rec.mark()
    set_label(core, node.name, "all-disabled")
    wait_terminal(rec, mark, timeout=120, want="success")
    assert agent.stop() == 0


def test_sigterm_mid_apply_then_restart_converges(
    cluster: dict[str, Any], core: Any, make_node: Any, agents: list[Agent]
) -> None:
    """SIGTERM while the GPUs change: the agent finishes or rolls back the step, restores the
    labels, writes a terminal state and exits 0; started again it converges the node."""
    node = make_node()
    rec = node.operator()
    agent = Agent(node.workdir, node.name, cluster["kubeconfig"], node.state, config_file=node.config,
                  env={"MIGKIT_SIM_LATENCY_MS": "150"})
    agents.append(agent.start())
    mark = rec.mark()
    set_label(core, node.name, "all-1g.10gb")
    wait_for("the apply to start", lambda: mutations(node.state) > 0, timeout=60, interval=0.05)
    assert agent.stop() == 0
    assert was_paused(rec.labels_seen(), mark)
    labels = node_labels(core, node.name)
    assert labels[STATE] in ("success", "failed")
    assert deploy_values(labels) == ALL_TRUE
    agent2 = Agent(node.workdir, node.name, cluster["kubeconfig"], node.state, config_file=node.config)
    agents.append(agent2.start())
    wait_for("the restarted agent to finish", lambda: agent2.metric(
        'migkit_agent_reconfigurations_total{result="success"}') == 1)
    assert layout(node.state) == [(1, ("1g.10gb",) * 7)] * 8
    assert node_labels(core, node.name)[STATE] == "success"
    assert deploy_values(node_labels(core, node.name)) == ALL_TRUE
    assert agent2.stop() == 0


def test_reboot_path_and_no_second_reboot(
    cluster: dict[str, Any], core: Any, make_node: Any, agents: list[Agent]
) -> None:
    """A mode change that needs a reboot: `rebooting`, the reboot command run once. After the
    restart, with the mode applied: `success`; with the mode still wrong: `failed`, no second
    reboot, labels restored."""
    env = {"WITH_REBOOT": "true", "MIGKIT_AGENT_SKIP_RESET": "true"}
    for rebooted in (True, False):
        node = make_node(spec="2xa100-80gb")
        rec = node.operator()
        agent = Agent(node.workdir, node.name, cluster["kubeconfig"], node.state, config_file=node.config, env=env)
        agents.append(agent.start())
        mark = rec.mark()
        set_label(core, node.name, "all-balanced")
        wait_for("rebooting", lambda n=node: node_labels(core, n.name).get(STATE) == "rebooting")
        wait_for("the reboot command", lambda a=agent: ["reboot"] in a.host_calls())
        assert was_paused(rec.labels_seen(), mark)  # operands stay away across the reboot
        assert agent.stop() == 0
        assert node_labels(core, node.name)[STATE] == "rebooting"  # SIGTERM of a rebooting node writes nothing
        if rebooted:
            simulator.reset_gpus(node.state)  # what the reboot does: the pending mode takes effect
        agent2 = Agent(node.workdir, node.name, cluster["kubeconfig"], node.state, config_file=node.config, env=env)
        agents.append(agent2.start())
        want = "success" if rebooted else "failed"
        labels = wait_state(core, node.name, want)
        assert deploy_values(labels) == ALL_TRUE
        assert [c for c in agent2.host_calls() if c == ["reboot"]] == [["reboot"]]
        if rebooted:
            assert all(mode == 1 and gis for mode, gis in layout(node.state))
        else:
            assert "not rebooting again" in events(core, node.name)[-1][2]
            assert all(mode == 0 for mode, _ in layout(node.state))
        assert agent2.stop() == 0


def test_drain_only_when_asked_evicts_through_the_eviction_api(
    cluster: dict[str, Any], core: Any, make_node: Any, agents: list[Agent]
) -> None:
    """With --drain the node is cordoned, user pods are evicted (DaemonSet pods stay) and the
    node is uncordoned at the end; a PodDisruptionBudget that allows no disruption holds, and
    the run ends `failed` after the drain timeout, uncordoned, with nothing changed."""
    node = make_node()
    rec = node.operator()
    stop = threading.Event()

    def kubelet() -> None:  # finishes the termination of evicted pods, as a kubelet would
        while not stop.wait(0.1):
            with contextlib.suppress(Exception):
                for pod in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node.name}").items:
                    if pod.metadata.deletion_timestamp:
                        delete_pod(core, pod.metadata.name, pod.metadata.namespace)

    worker = threading.Thread(target=kubelet, daemon=True)
    worker.start()
    try:
        create_pod(core, f"job-{node.name}", node.name, {"app": "training"}, namespace="default")
        create_pod(core, f"ds-{node.name}", node.name, {"app": "agent"}, namespace="default",
                   owner={"api_version": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "0" * 8})
        agent = Agent(node.workdir, node.name, cluster["kubeconfig"], node.state, config_file=node.config,
                      env={"MIGKIT_AGENT_DRAIN": "true", "MIGKIT_AGENT_DRAIN_TIMEOUT": "3"})
        agents.append(agent.start())
        mark = rec.mark()
        set_label(core, node.name, "all-balanced")
        wait_terminal(rec, mark, want="success")
        names = {p.metadata.name for p in core.list_namespaced_pod("default",
                                                                   field_selector=f"spec.nodeName={node.name}").items}
        assert names == {f"ds-{node.name}"}
        assert not core.read_node(node.name).spec.unschedulable
        assert any(r.get("message") == "node cordoned" for r in agent.log_records())

        policy = client.PolicyV1Api(cluster["admin"])
        policy.create_namespaced_pod_disruption_budget("default", client.V1PodDisruptionBudget(
            metadata=client.V1ObjectMeta(name=f"guard-{node.name}"),
            spec=client.V1PodDisruptionBudgetSpec(min_available=1, selector=client.V1LabelSelector(
                match_labels={"app": f"guarded-{node.name}"}))))
        create_pod(core, f"guarded-{node.name}", node.name, {"app": f"guarded-{node.name}"}, namespace="default")
        # the kubelet's part: a Pending pod is evicted regardless of budgets, a Running one is not
        core.patch_namespaced_pod_status(f"guarded-{node.name}", "default", {"status": {
            "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
        before = mutations(node.state)
        mark = rec.mark()
        set_label(core, node.name, "all-3g.40gb")
        wait_terminal(rec, mark, want="failed")
        assert "PodDisruptionBudget" in events(core, node.name)[-1][2]
        core.read_namespaced_pod(f"guarded-{node.name}", "default")  # still there
        assert not core.read_node(node.name).spec.unschedulable
        assert deploy_values(node_labels(core, node.name)) == ALL_TRUE
        assert mutations(node.state) == before
        assert agent.stop() == 0
    finally:
        stop.set()
        worker.join(5)
        with contextlib.suppress(Exception):
            client.PolicyV1Api(cluster["admin"]).delete_namespaced_pod_disruption_budget(
                f"guard-{node.name}", "default")


def test_client_daemonsets_host_services_and_cdi(
    cluster: dict[str, Any], core: Any, make_node: Any, agents: list[Agent]
) -> None:
    """`gpu.deploy.client` is paused when present and its DaemonSet pods are waited for; the CDI
    command runs after a change. A host service that will not stop: `failed`, the services
    stopped before it started again, every label restored."""
    node = make_node(labels={"nvidia.com/gpu.deploy.client": "true"})
    rec = node.operator()
    wait_for("the client pod", lambda: core.list_namespaced_pod(
        "default", field_selector=f"spec.nodeName={node.name}").items)
    (node.workdir / "clients.yaml").write_text(
        "version: v1\nsystemd-services: [nvidia-dcgm.service, nvsm.service, dcgm-exporter.service]\n")
    agent = Agent(node.workdir, node.name, cluster["kubeconfig"], node.state, config_file=node.config, env={
        "WITH_SHUTDOWN_HOST_GPU_CLIENTS": "true", "GPU_CLIENTS_FILE": str(node.workdir / "clients.yaml"),
        "CDI_ENABLED": "true", "MIGKIT_AGENT_CDI_COMMAND": f"{sys.executable} {HOST} nvidia-ctk cdi generate"})
    all_true = {**ALL_TRUE, "nvidia.com/gpu.deploy.client": "true"}
    agent.set_active_services(["nvidia-dcgm.service", "nvsm.service", "dcgm-exporter.service"])
    agents.append(agent.start())
    mark = rec.mark()
    set_label(core, node.name, "all-balanced")
    wait_terminal(rec, mark, want="success")
    assert any(labels.get("nvidia.com/gpu.deploy.client") == PAUSED for labels in rec.labels_seen()[mark:])
    assert deploy_values(node_labels(core, node.name)) == all_true
    assert ["nvidia-ctk", "cdi", "generate"] in agent.host_calls()

    (agent.host_dir / "fail.txt").write_text("systemctl stop nvsm.service\n")
    mark = rec.mark()
    set_label(core, node.name, "all-3g.40gb")
    wait_terminal(rec, mark, want="failed")
    assert "nvsm.service" in events(core, node.name)[-1][2]
    assert agent.active_services() == ["dcgm-exporter.service", "nvidia-dcgm.service", "nvsm.service"]
    calls = [" ".join(c) for c in agent.host_calls()]
    assert calls[-1] == "systemctl start nvidia-dcgm.service"  # the one stopped before the failure
    assert deploy_values(node_labels(core, node.name)) == all_true
    assert layout(node.state) == [(1, BALANCED_H100)] * 8
    assert agent.stop() == 0


REBOOTING_DENIED = """\
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: deny-rebooting-NODE}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: ["v1"], operations: ["UPDATE"], resources: ["nodes"]}
  matchConditions:
  - {name: this-node, expression: "object.metadata.name == 'NODE'"}
  validations:
  - expression: >-
      !has(object.metadata.labels) ||
      object.metadata.labels[?'nvidia.com/mig.config.state'].orValue('') != 'rebooting'
    message: "rebooting is not allowed here"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: deny-rebooting-NODE}
spec:
  policyName: deny-rebooting-NODE
  validationActions: [Deny]
"""


def test_a_rebooting_state_that_cannot_be_written_means_no_reboot(
    cluster: dict[str, Any], control_plane: Any, core: Any, make_node: Any, agents: list[Agent]
) -> None:
    """If the API server refuses the `rebooting` label, the agent never reboots: `failed`,
    labels restored. (A ValidatingAdmissionPolicy refuses that one write.)"""
    import yaml

    from k8s_cluster import server_side_apply

    node = make_node(spec="2xa100-80gb")
    docs = [d for d in yaml.safe_load_all(REBOOTING_DENIED.replace("NODE", node.name))]
    for doc in docs:
        server_side_apply(control_plane, doc, dry_run=False)
    try:
        rec = node.operator()
        agent = Agent(node.workdir, node.name, cluster["kubeconfig"], node.state, config_file=node.config,
                      env={"WITH_REBOOT": "true", "MIGKIT_AGENT_SKIP_RESET": "true"})
        agents.append(agent.start())
        mark = rec.mark()
        # the policy takes effect once the API server has loaded it: wait until it refuses
        wait_for("the policy", lambda: _refused(core, node.name), timeout=30, interval=0.3)
        set_label(core, node.name, "all-balanced")
        wait_terminal(rec, mark, want="failed")
        assert "rebooting" in events(core, node.name)[-1][2]
        assert ["reboot"] not in agent.host_calls()
        assert deploy_values(node_labels(core, node.name)) == ALL_TRUE
        assert agent.stop() == 0
    finally:
        admission = client.AdmissionregistrationV1Api(cluster["admin"])
        with contextlib.suppress(Exception):
            admission.delete_validating_admission_policy_binding(f"deny-rebooting-{node.name}")
        with contextlib.suppress(Exception):
            admission.delete_validating_admission_policy(f"deny-rebooting-{node.name}")


def _refused(core: Any, node: str) -> bool:
    from kubernetes.client.rest import ApiException  # type: ignore[import-untyped]

    try:
        core.patch_node(node, {"metadata": {"labels": {STATE: "rebooting"}}}, dry_run="All")
    except ApiException as err:
        return bool(err.status in (400, 403, 422))
    return False


def test_per_node_config_map_follows_the_hardware(
    cluster: dict[str, Any], core: Any, make_node: Any, agents: list[Agent]
) -> None:
    """Without CONFIG_FILE the agent publishes `<node>-mig-config` at start, before any label:
    this node's generated config, its GPU count and each GPU's model; it rewrites them when
    the GPUs change, and owns the ConfigMap through its Pod."""
    node = make_node()
    rec = node.operator()
    agent = Agent(node.workdir, node.name, cluster["kubeconfig"], node.state)
    agents.append(agent.start())
    name = f"{node.name}-mig-config"
    data = wait_for("the ConfigMap at start", lambda: config_map_data(core, name))
    assert CONFIG not in node_labels(core, node.name)
    assert data["gpu-count"] == "8" and data["gpu-models"] == ",".join(["h100-80gb"] * 8)
    assert data["config.yaml"] == node.config.read_text()  # what `migkit generate-config` prints
    owner = core.read_namespaced_config_map(name, NAMESPACE).metadata.owner_references[0]
    assert (owner.kind, owner.name) == ("Pod", f"migkit-agent-{node.name}")
    mark = rec.mark()
    set_label(core, node.name, "all-disabled")
    wait_terminal(rec, mark, want="success")
    simulator.write_state(node.state, "4xh200-141gb")  # the node's GPUs were replaced
    mark = rec.mark()
    core.patch_node(node.name, {"metadata": {"annotations": {RETRY: "hardware"}}})
    data = wait_for("the new config", lambda: (config_map_data(core, name) or {}).get("gpu-count") == "4"
                    and config_map_data(core, name))
    assert "1g.18gb" in data["config.yaml"] and data["gpu-models"] == ",".join(["h200-141gb"] * 4)
    set_label(core, node.name, "all-1g.18gb")
    wait_terminal(rec, mark, want="success")
    assert layout(node.state) == [(1, ("1g.18gb",) * 7)] * 4
    assert agent.stop() == 0


def config_map_data(core: Any, name: str) -> dict[str, str] | None:
    """The data of ConfigMap ``name`` in the agent's namespace; None while it does not exist."""
    try:
        return dict(core.read_namespaced_config_map(name, NAMESPACE).data or {})
    except client.ApiException as err:
        if err.status == 404:
            return None
        raise


DEFAULT_CONFIG = """\
version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false
  site-default:
    - devices: all
      mig-enabled: false
"""


def without_profiles(state_file: Any) -> None:
    """Make the simulated GPUs list no MIG profiles (as R535 does with MIG disabled)."""
    lines = Path(state_file).read_text().splitlines(keepends=True)
    Path(state_file).write_text("".join(line for line in lines if not line.startswith(("gip ", "cip "))))


def test_default_config_file_when_the_nodes_profiles_cannot_be_listed(
    cluster: dict[str, Any], core: Any, make_node: Any, agents: list[Agent]
) -> None:
    """generate-config fails (GPUs without MIG, or MIG GPUs that list no profiles): the agent
    uses DEFAULT_CONFIG_FILE. A config only that file names reaches `success` untouched on both
    nodes; a generated name it lacks fails naming the file. Each ConfigMap, published at start,
    names the GPUs and holds no generated config."""
    l40s = make_node(spec="2xl40s")
    bare = make_node(spec="1xh100-80gb")
    without_profiles(bare.state)
    recorders = {}
    for node in (l40s, bare):
        default = node.workdir / "config-default.yaml"
        default.write_text(DEFAULT_CONFIG)
        recorders[node.name] = node.operator()
        agents.append(Agent(node.workdir, node.name, cluster["kubeconfig"], node.state,
                            env={"DEFAULT_CONFIG_FILE": str(default)}).start())
    for node, models in ((l40s, "l40s,l40s"), (bare, "h100-80gb")):
        data = wait_for("the ConfigMap at start", lambda n=node: config_map_data(core, f"{n.name}-mig-config"))
        assert data["gpu-models"] == models and "config.yaml" not in data, data

    for node in (l40s, bare):
        rec = recorders[node.name]
        mark = rec.mark()
        set_label(core, node.name, "site-default")
        wait_terminal(rec, mark, want="success")
        assert not was_paused(rec.labels_seen(), mark) and mutations(node.state) == 0
        assert events(core, node.name)[-1][1:] == ("MigConfigApplied", "MIG config 'site-default' already "
                                                                         "applied; nothing changed")
    rec = recorders[l40s.name]
    mark = rec.mark()
    set_label(core, l40s.name, "all-balanced")  # a generated name: not in the default file
    wait_terminal(rec, mark, want="failed")
    message = events(core, l40s.name)[-1][2]
    assert str(l40s.workdir / "config-default.yaml") in message and "is not in the file" in message, message
    assert agents[0].log().count("using the default config file") == 2
    assert "no MIG profiles discovered" in agents[1].log()

