"""deploy/ on a real API server: every manifest accepted (dry-run and for real), and the RBAC
grants exactly what the agent uses."""

from __future__ import annotations

from typing import Any

import pytest
from agent_kit import ROOT
from kubernetes import client  # type: ignore[import-untyped]

from k8s_cluster import manifest_documents

SA = "system:serviceaccount:gpu-operator:migkit-agent"

# (verb, resource, namespace or None, subresource) the agent calls
ALLOWED = [
    ("get", "nodes", None, ""),
    ("list", "nodes", None, ""),
    ("watch", "nodes", None, ""),
    ("patch", "nodes", None, ""),
    ("list", "pods", None, ""),
    ("list", "pods", "gpu-operator", ""),
    ("delete", "pods", "gpu-operator", ""),
    ("get", "configmaps", "gpu-operator", ""),
    ("create", "configmaps", "gpu-operator", ""),
    ("update", "configmaps", "gpu-operator", ""),
    ("create", "events", "default", ""),
    ("create", "pods", "gpu-operator", "eviction"),  # rbac-drain.yaml, for --drain
    ("create", "pods", "default", "eviction"),
]
DENIED = [
    ("delete", "nodes", None, ""),
    ("update", "nodes", None, ""),
    ("patch", "nodes", None, "status"),
    ("create", "pods", "gpu-operator", ""),
    ("delete", "pods", "kube-system", ""),
    ("list", "secrets", "gpu-operator", ""),
    ("get", "configmaps", "kube-system", ""),
    ("delete", "configmaps", "gpu-operator", ""),
    ("create", "events", "kube-system", ""),
    ("list", "daemonsets", None, ""),
]


def test_every_manifest_is_applied(cluster: dict[str, Any]) -> None:
    """Each document of deploy/ passed a server-side dry run and was then created."""
    from k8s_cluster import MANIFESTS

    assert sorted(MANIFESTS) == sorted(p.name for p in (ROOT / "deploy").glob("*.yaml"))
    docs = manifest_documents()
    assert [(k, n) for k, n, _, _ in cluster["applied"]] == [(d["kind"], d["metadata"]["name"]) for d in docs]
    kinds = {k for k, _, _, _ in cluster["applied"]}
    assert {"Namespace", "ServiceAccount", "ClusterRole", "Role", "DaemonSet"} <= kinds
    apps = client.AppsV1Api(cluster["admin"])
    ds = apps.read_namespaced_daemon_set("migkit-agent", "gpu-operator")
    assert ds.spec.template.spec.node_selector == {"nvidia.com/gpu.deploy.mig-manager": "true"}
    assert ds.spec.template.spec.service_account_name == "migkit-agent"


def _allowed(cluster: dict[str, Any], verb: str, resource: str, namespace: str | None, sub: str) -> bool:
    api = client.AuthorizationV1Api(cluster["admin"])
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=SA, groups=["system:serviceaccounts", "system:serviceaccounts:gpu-operator", "system:authenticated"],
        resource_attributes=client.V1ResourceAttributes(
            verb=verb, resource=resource, namespace=namespace, subresource=sub or None,
            group="apps" if resource == "daemonsets" else "")))
    return bool(api.create_subject_access_review(review).status.allowed)


@pytest.mark.parametrize(("verb", "resource", "namespace", "sub"), ALLOWED)
def test_rbac_grants_what_the_agent_calls(
    cluster: dict[str, Any], verb: str, resource: str, namespace: str | None, sub: str
) -> None:
    """The ServiceAccount may make each call the agent makes."""
    assert _allowed(cluster, verb, resource, namespace, sub)


@pytest.mark.parametrize(("verb", "resource", "namespace", "sub"), DENIED)
def test_rbac_grants_nothing_more(
    cluster: dict[str, Any], verb: str, resource: str, namespace: str | None, sub: str
) -> None:
    """Calls the agent never makes are denied to its ServiceAccount."""
    assert not _allowed(cluster, verb, resource, namespace, sub)


def test_the_token_is_the_service_account(cluster: dict[str, Any], control_plane: Any) -> None:
    """The agents of these tests authenticate as the ServiceAccount, not as an admin."""
    from kubernetes import config  # type: ignore[import-untyped]

    api = config.new_client_from_config(config_file=str(cluster["kubeconfig"]))
    review = client.AuthenticationV1Api(api).create_self_subject_review(client.V1SelfSubjectReview())
    assert review.status.user_info.username == SA
    with pytest.raises(client.exceptions.ApiException) as err:
        client.CoreV1Api(api).list_namespaced_secret("gpu-operator")
    assert err.value.status == 403
