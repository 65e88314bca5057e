"""Fixtures of the agent tests: one real kube-apiserver + etcd for the session (from
``KUBEBUILDER_ASSETS``), the manifests of ``deploy/`` applied to it, and the agent's
ServiceAccount token from the TokenRequest API, so every agent runs with the RBAC it ships."""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CI") != "true":  # under CI the test extra is installed: a missing client fails
    pytest.importorskip("kubernetes", reason="the agent tests need the k8s extra: pip install '.[test]'")

import yaml
from agent_kit import NAMESPACE, ROOT, NodeRecorder, generated_config
from k8s_control_plane import ControlPlane
from kubernetes import client, config  # type: ignore[import-untyped]

from migkit import simulator

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
