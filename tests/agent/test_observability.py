"""The agent's HTTP endpoints over real HTTP from a running agent process: /readyz only once
its first list of the Node succeeded, /healthz, and /metrics (reconfigurations by result, the
duration histogram, the current state, the last error)."""

from __future__ import annotations

import time
import urllib.request
import uuid
from typing import Any

from agent_kit import NAMESPACE, Agent, set_label, wait_for, wait_terminal
from kubernetes import client  # type: ignore[import-untyped]
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

RBAC = "rbac.authorization.k8s.io"


def samples(agent: Agent) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics, by (name, labels), parsed as Prometheus parses it."""
    code, text = agent.get("/metrics")
    assert code == 200, text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def unbound_service_account(core: Any, plane: Any, workdir: Any) -> tuple[str, Any]:
    """A fresh ServiceAccount of the agent's namespace with no role yet, and its kubeconfig."""
    name = f"migkit-agent-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_service_account(NAMESPACE, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name)))
    token = core.create_namespaced_service_account_token(name, NAMESPACE, client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=["https://kubernetes.default.svc.cluster.local"],
                                       expiration_seconds=3600))).status.token
    return name, plane.write_kubeconfig(workdir / f"{name}.kubeconfig", f"system:serviceaccount:{NAMESPACE}:{name}",
                                        token)


def bind_agent_roles(rbac: Any, account: str) -> list[tuple[str | None, str]]:
    """Bind deploy/rbac.yaml's roles to ``account``; the (namespace, name) of each binding."""
    subject = [client.RbacV1Subject(kind="ServiceAccount", name=account, namespace=NAMESPACE)]
    rbac.create_cluster_role_binding(client.V1ClusterRoleBinding(
        metadata=client.V1ObjectMeta(name=account), subjects=subject,
        role_ref=client.V1RoleRef(api_group=RBAC, kind="ClusterRole", name="migkit-agent")))
    made: list[tuple[str | None, str]] = [(None, account)]
    for namespace, role in ((NAMESPACE, "migkit-agent"), ("default", "migkit-agent-events")):
        rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name=account), subjects=subject,
            role_ref=client.V1RoleRef(api_group=RBAC, kind="Role", name=role)))
        made.append((namespace, account))
    return made


def test_ready_only_after_the_first_list_and_metrics_of_each_outcome(
    cluster: dict[str, Any], control_plane: Any, core: Any, make_node: Any, agents: list[Agent]
) -> None:
    """An agent whose Node list is refused (no role bound yet) is alive but not ready; once
    its roles are bound it lists the Node and is ready. A `success` and a `failed` then show in
    /metrics: one reconfiguration of each result, two durations observed, state `failed`
    current, and the failed config and step as the last error."""
    node = make_node()
    rec = node.operator()
    rbac = client.RbacAuthorizationV1Api(cluster["admin"])
    account, kubeconfig = unbound_service_account(core, control_plane, node.workdir)
    agent = Agent(node.workdir, node.name, kubeconfig, node.state)
    agents.append(agent.start(wait_ready=False))
    bindings: list[tuple[str | None, str]] = []
    try:
        # Alive and serving, but the list of its Node is refused: not ready, and it stays so.
        wait_for("/healthz", lambda: agent.get("/healthz") == (200, "ok"), timeout=60)
        refused = f"watch of node {node.name} failed: HTTP 403"
        wait_for("a refused list", lambda: refused in agent.log(), timeout=60)
        for _ in range(3):
            assert agent.get("/readyz") == (503, "node not read yet")
            time.sleep(0.5)
        assert agent.get("/nothing")[0] == 404
        before = samples(agent)
        assert value(before, "migkit_agent_reconfigurations_total", result="success") == 0
        assert value(before, "migkit_agent_reconfiguration_duration_seconds_count") == 0

        bindings = bind_agent_roles(rbac, account)
        wait_for("/readyz after the roles are bound", lambda: agent.get("/readyz") == (200, "ok"), timeout=60)
        assert agent.get("/healthz") == (200, "ok")

        started = time.time()
        mark = rec.mark()
        set_label(core, node.name, "all-disabled")  # already true: success without a change
        wait_terminal(rec, mark, want="success")
        wait_for("the success counted", lambda: value(
            samples(agent), "migkit_agent_reconfigurations_total", result="success") == 1)
        mark = rec.mark()
        set_label(core, node.name, "no-such-config")
        wait_terminal(rec, mark, want="failed")
        wait_for("the failure counted", lambda: value(
            samples(agent), "migkit_agent_reconfigurations_total", result="failed") == 1)

        found = samples(agent)
        assert value(found, "migkit_agent_reconfigurations_total", result="success") == 1
        assert value(found, "migkit_agent_reconfiguration_duration_seconds_count") == 2
        total = value(found, "migkit_agent_reconfiguration_duration_seconds_sum")
        assert total is not None and 0 < total < 120
        assert value(found, "migkit_agent_reconfiguration_duration_seconds_bucket", le="+Inf") == 2
        assert value(found, "migkit_agent_state", state="failed") == 1
        assert value(found, "migkit_agent_state", state="success") == 0
        assert value(found, "migkit_agent_last_error", step="valid-config", config="no-such-config") == 1
        when = value(found, "migkit_agent_last_error_timestamp_seconds")
        assert when is not None and started <= when <= time.time()
        with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/metrics", timeout=5) as resp:
            assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST  # the text format Prometheus scrapes
        assert agent.stop() == 0
    finally:
        for namespace, name in bindings:
            if namespace is None:
                rbac.delete_cluster_role_binding(name)
            else:
                rbac.delete_namespaced_role_binding(name, namespace)
        core.delete_namespaced_service_account(account, NAMESPACE)
