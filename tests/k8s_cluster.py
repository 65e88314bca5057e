"""The Kubernetes control plane of the tests, shared by tests/agent and tests/fleet so that a
run starts one kube-apiserver + etcd (from ``KUBEBUILDER_ASSETS``) for the whole session: the
manifests of ``deploy/`` applied to it, and the agent's ServiceAccount token from the
TokenRequest API, so every agent runs with the RBAC it ships.

Nothing here imports the ``kubernetes`` client at import time: tests/conftest.py imports these
fixtures for every test, with or without the k8s extra.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8s_control_plane import ControlPlane

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "gpu-operator"

# kind -> (URL prefix, plural, namespaced)
KINDS = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "DaemonSet": ("/apis/apps/v1", "daemonsets", True),
    "ValidatingAdmissionPolicy": ("/apis/admissionregistration.k8s.io/v1", "validatingadmissionpolicies", False),
    "ValidatingAdmissionPolicyBinding": (
        "/apis/admissionregistration.k8s.io/v1", "validatingadmissionpolicybindings", False),
}
# Applied in this order so that each object's namespace exists first.
MANIFESTS = ("namespace.yaml", "serviceaccount.yaml", "rbac.yaml", "rbac-drain.yaml", "gpu-clients.yaml",
             "daemonset.yaml")


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets:
        reason = "KUBEBUILDER_ASSETS is not set (export KUBEBUILDER_ASSETS=$(../shared/k8s/assets))"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the Kubernetes control plane: {reason}")
        pytest.skip(reason)
    plane = ControlPlane(assets, tmp_path_factory.mktemp("kube"))
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


def manifest_documents() -> list[dict[str, Any]]:
    docs = []
    for name in MANIFESTS:
        text = (ROOT / "deploy" / name).read_text()
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def server_side_apply(plane: ControlPlane, doc: dict[str, Any], *, dry_run: bool) -> dict[str, Any]:
    """PATCH application/apply-patch+yaml as admin; the server's answer (raises on HTTP errors)."""
    prefix, plural, namespaced = KINDS[doc["kind"]]
    ns = doc["metadata"].get("namespace", "default")
    path = f"{prefix}/namespaces/{ns}/{plural}/{doc['metadata']['name']}" if namespaced else \
        f"{prefix}/{plural}/{doc['metadata']['name']}"
    query = "fieldManager=migkit-tests&force=true" + ("&dryRun=All" if dry_run else "")
    req = urllib.request.Request(
        f"{plane.url}{path}?{query}", data=yaml.safe_dump(doc).encode(), method="PATCH",
        headers={"Authorization": f"Bearer {plane.admin_token}", "Content-Type": "application/apply-patch+yaml",
                 "Accept": "application/json"})
    ctx = ssl.create_default_context(cafile=str(plane.pki / "ca.crt"))
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as err:
        raise AssertionError(f"apply {doc['kind']}/{doc['metadata']['name']} (dry run: {dry_run}): "
                             f"HTTP {err.code}: {err.read().decode()}") from None


@pytest.fixture(scope="session")
def cluster(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The admin client, the deploy/ manifests applied (dry-run first), and the agent's kubeconfig."""
    from kubernetes import client, config  # type: ignore[import-untyped]

    admin = config.new_client_from_config(config_file=str(control_plane.workdir / "admin.kubeconfig"))
    applied = []
    # Each object dry-run first, then for real (a namespaced object's dry run needs its namespace).
    for doc in manifest_documents():
        dry = server_side_apply(control_plane, doc, dry_run=True)
        real = server_side_apply(control_plane, doc, dry_run=False)
        applied.append((doc["kind"], doc["metadata"]["name"], dry["kind"], real["metadata"]["uid"]))
    core = client.CoreV1Api(admin)
    token = core.create_namespaced_service_account_token(
        "migkit-agent", NAMESPACE,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=["https://kubernetes.default.svc.cluster.local"], expiration_seconds=7200)),
    ).status.token
    kubeconfig = control_plane.write_kubeconfig(
        tmp_path_factory.mktemp("agent") / "agent.kubeconfig", "system:serviceaccount:gpu-operator:migkit-agent",
        token)
    return {"admin": admin, "core": core, "kubeconfig": kubeconfig, "applied": applied, "token": token}
