"""``migkit rollout`` against a real kube-apiserver and fleets of simulated 8xGPU nodes, each
with its own agent (threads of one harness process, each watching only its own Node)."""

from __future__ import annotations

import json
import signal
import uuid
from typing import Any

import pytest

pytest.importorskip("kubernetes", reason="the fleet tests need the k8s extra: pip install '.[test]'")

import yaml
from fleet_kit import (
    CONFIG,
    FAULT,
    NAMESPACE,
    ROOT,
    STATE,
    Fleet,
    Harness,
    harness,
    until,
)
from kubernetes import client

from migkit.agent.labels import OPERAND_DEPLOY_LABELS, RETRY_ANNOTATION

# pytest finds fixtures among a test module's names: this one comes from fleet_kit.
FIXTURES = (harness,)
TERMINAL = ("success", "failed")


def in_flight_peak(fleet: Fleet, mark: int, config: str) -> int:
    """The most nodes seen at once between being labelled ``config`` (by the rollout, state
    cleared) and reporting a terminal state, over the recorded events since ``mark``."""
    assert fleet.recorder is not None
    busy: set[str] = set()
    peak = 0
    for name, labels, _, _ in fleet.recorder.since(mark):
        if labels.get(CONFIG) == config and labels.get(STATE) not in TERMINAL:
            busy.add(name)
        else:
            busy.discard(name)
        peak = max(peak, len(busy))
    return peak


def test_rollout_in_waves_reaches_success_on_every_node(harness: Harness) -> None:
    """20 nodes in waves of 5: every node ends `success` with the config applied, never more
    than 5 nodes changing at once, and each node's outcome is recorded on it."""
    fleet = harness.fleet("wave", [(20, "h100-80gb")])
    recorder = fleet.record()
    mark = recorder.mark()
    code, report, err = harness.rollout("--selector", fleet.selector, "--config", "all-balanced",
                                        "--max-unavailable", "5", "--timeout", "120")
    assert code == 0, (report, err)
    assert report["counts"]["success"] == 20
    assert [len(w) for w in report["waves"]] == [5, 5, 5, 5]
    assert report["waves"][0] == fleet.names[:5]
    for name in fleet.names:
        labels = fleet.labels(name)
        assert labels[CONFIG] == "all-balanced" and labels[STATE] == "success", name
        assert all(labels[k] == "true" for k in OPERAND_DEPLOY_LABELS), name
        progress = fleet.progress(name)
        assert progress is not None and progress["phase"] == "success" and progress["previous"] == "all-disabled"
        assert fleet.annotations(name)[RETRY_ANNOTATION] == progress["token"]
        runs = fleet.outcomes()[name]
        assert runs[-1]["config"] == "all-balanced" and runs[-1]["result"] == "success"
    assert 1 < in_flight_peak(fleet, mark, "all-balanced") <= 5  # a wave changes together, never more


def test_faults_stop_the_rollout_after_max_failures_and_leave_later_waves_untouched(harness: Harness) -> None:
    """NVML faults on 2 nodes (waves 2 and 3) with --max-failures 1: the rollout stops after
    the second failure; the failed nodes end `failed` with their operands' labels restored; the
    fourth wave is never labelled and its agents never run."""
    fleet = harness.fleet("faults", [(20, "h100-80gb")], faults={6: FAULT, 12: FAULT})
    faulty = [fleet.names[6], fleet.names[12]]
    later = fleet.names[15:]
    runs_before = {n: fleet.runs(n) for n in later}
    recorder = fleet.record()
    mark = recorder.mark()
    code, report, err = harness.rollout("--selector", fleet.selector, "--config", "all-1g.10gb",
                                        "--max-unavailable", "5", "--max-failures", "1", "--timeout", "120")
    assert code == 1, (report, err)
    results = {r["node"]: r for r in report["nodes"]}
    assert sorted(n for n, r in results.items() if r["result"] == "failed") == faulty
    assert "waves 4-4 not started" in report["stopped"]
    assert report["counts"] == {**report["counts"], "success": 13, "failed": 2, "untouched": 5}
    for name in faulty:
        labels = fleet.labels(name)
        assert labels[STATE] == "failed" and labels[CONFIG] == "all-1g.10gb"
        assert all(labels[k] == "true" for k in OPERAND_DEPLOY_LABELS), labels
        assert fleet.progress(name)["phase"] == "failed"  # type: ignore[index]
        assert "apply" in results[name]["detail"]
    for name in later:
        labels = fleet.labels(name)
        assert labels[CONFIG] == "all-disabled" and labels[STATE] == "success"
        assert fleet.progress(name) is None
        assert fleet.runs(name) == runs_before[name]
        assert results[name]["result"] == "untouched"
    touched_later = {n for n, *_ in recorder.since(mark) if n in later}
    assert not touched_later, touched_later

    # A rerun does not retry the failed nodes by itself: it stops at once, changing nothing.
    mark = recorder.mark()
    code, report, _ = harness.rollout("--selector", fleet.selector, "--config", "all-1g.10gb",
                                      "--max-unavailable", "5", "--max-failures", "1")
    assert code == 1 and "already failed" in report["stopped"]
    assert not recorder.since(mark)


def test_a_rollout_killed_mid_wave_finishes_on_rerun_without_relabelling_finished_nodes(harness: Harness) -> None:
    """SIGKILL while the second wave is in flight, then the same command again: every node ends
    `success`; the nodes finished before the kill, and those in flight, are never labelled again
    (same token, no new agent run)."""
    fleet = harness.fleet("resume", [(20, "h100-80gb")])
    recorder = fleet.record()
    mark = recorder.mark()
    args = ("--selector", fleet.selector, "--config", "all-3g.40gb", "--max-unavailable", "5", "--timeout", "120")
    proc = harness.start_rollout(*args)
    second_wave = set(fleet.names[5:10])

    def second_wave_labelled() -> bool:
        return any(n in second_wave and labels.get(CONFIG) == "all-3g.40gb" for n, labels, *_ in recorder.since(mark))

    until("the second wave labelled", second_wave_labelled, 90)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    tokens = {n: (fleet.progress(n) or {}).get("token") for n in fleet.names}
    phases = {n: (fleet.progress(n) or {}).get("phase") for n in fleet.names}
    finished = [n for n in fleet.names if phases[n] == "success"]
    labelled = [n for n in fleet.names if tokens[n] is not None]
    assert finished == fleet.names[:5], phases
    assert set(labelled) - set(finished), "killed after the wave ended: not mid-wave"
    for name in labelled:
        until(f"{name}'s agent done", lambda n=name: fleet.labels(n).get(STATE) in TERMINAL, 60)
    runs = {n: fleet.runs(n) for n in labelled}
    rerun_mark = recorder.mark()

    code, report, err = harness.rollout(*args)
    assert code == 0, (report, err)
    assert report["counts"]["success"] == 20
    for name in labelled:
        assert (fleet.progress(name) or {}).get("token") == tokens[name], name
        assert fleet.runs(name) == runs[name], name
    relabelled = {n for n, labels, annotations, _ in recorder.since(rerun_mark)
                  if n in labelled and STATE not in labels}
    assert not relabelled, relabelled
    for name in fleet.names:
        assert fleet.labels(name)[STATE] == "success"

    # Once more: nothing left to do, nothing touched, exit 0.
    mark = recorder.mark()
    code, report, err = harness.rollout(*args)
    assert code == 0 and report["counts"]["success"] == 20 and report["waves"] == [], (code, report, err)
    assert not recorder.since(mark)


def test_a_config_that_does_not_fit_is_refused_for_those_nodes_before_any_label_changes(harness: Harness) -> None:
    """A100-40GB nodes offer no 3g.40gb: they are named and skipped before the first label
    change, never touched; the H100 nodes get the config."""
    fleet = harness.fleet("mixed", [(3, "h100-80gb"), (2, "a100-40gb")])
    a100 = [n for n in fleet.names if fleet.spec_models[n] == "a100-40gb"]
    recorder = fleet.record()
    mark = recorder.mark()

    code, text, _ = harness.rollout("--selector", fleet.selector, "--config", "all-3g.40gb", "--dry-run",
                                    json_out=False)
    assert code == 0, text
    assert not recorder.since(mark), "a dry run changed something"
    assert "wave 1/3:" in text and "wave 3/3:" in text

    code, text, _ = harness.rollout("--selector", fleet.selector, "--config", "all-3g.40gb", json_out=False)
    assert code == 1, text
    lines = text.splitlines()
    skips = [i for i, line in enumerate(lines) if line.startswith("skip ")]
    labelled = [i for i, line in enumerate(lines) if "labelled" in line]
    assert len(skips) == 2 and labelled and max(skips) < min(labelled), text
    for name in a100:
        assert any(name in lines[i] and "does not fit" in lines[i] and "3g.40gb" in lines[i] for i in skips), text
        assert fleet.labels(name)[CONFIG] == "all-disabled"
        assert fleet.progress(name) is None
    assert {n for n, *_ in recorder.since(mark)}.isdisjoint(a100)
    for name in set(fleet.names) - set(a100):
        assert fleet.labels(name)[STATE] == "success" and fleet.labels(name)[CONFIG] == "all-3g.40gb"


def test_cluster_status_shows_every_mig_node_and_the_configs_that_fit(harness: Harness) -> None:
    """`cluster status -o json`: config, state, last transition and reason, GPUs and fitting
    configs per node, from the agents' ConfigMaps and the product labels."""
    import json

    fleet = harness.fleet("mixed", [(3, "h100-80gb"), (2, "a100-40gb")])
    code, out = harness.status("--selector", fleet.selector, "-o", "json")
    assert code == 0, out
    rows = {r["node"]: r for r in json.loads(out)["nodes"]}
    assert sorted(rows) == fleet.names
    for name, row in rows.items():
        labels = fleet.labels(name)
        assert row["config"] == labels[CONFIG] and row["state"] == labels[STATE]
        assert row["reason"] in ("MigConfigApplied", "MigConfigFailed") and row["since"]
        model = fleet.spec_models[name]
        assert row["gpus"].startswith(f"8x {model}")
        assert ("all-3g.40gb" in row["fits"]) == (model == "h100-80gb")
        assert "all-1g.10gb" in row["fits"] and "all-disabled" in row["fits"]
    code, text = harness.status("--selector", fleet.selector)
    assert code == 0 and text.splitlines()[0].split()[:4] == ["NODE", "CONFIG", "STATE", "SINCE"]


def test_cordon_holds_each_node_while_it_changes_and_leaves_an_admins_cordon_alone(harness: Harness) -> None:
    """--cordon: every changed node is unschedulable from its label change until its success,
    then schedulable again; a node the admin had cordoned stays cordoned."""
    fleet = harness.fleet("cordon", [(3, "h100-80gb")])
    admin_cordoned = fleet.names[0]
    harness.core.patch_node(admin_cordoned, {"spec": {"unschedulable": True}})
    recorder = fleet.record()
    mark = recorder.mark()
    code, report, err = harness.rollout("--selector", fleet.selector, "--config", "all-2g.20gb", "--cordon",
                                        "--max-unavailable", "2")
    assert code == 0, (report, err)
    for name in fleet.names:
        events = [(labels.get(CONFIG), labels.get(STATE), cordoned) for n, labels, _, cordoned in recorder.since(mark)
                  if n == name]
        changing = [cordoned for config, state, cordoned in events if config == "all-2g.20gb" and state != "success"]
        assert changing and all(changing), (name, events)
        assert fleet.node(name).spec.unschedulable == (True if name == admin_cordoned else None), name
        assert (fleet.progress(name) or {})["cordoned"] is (name != admin_cordoned)


def test_ctrl_c_stops_the_rollout_and_the_same_command_continues(harness: Harness) -> None:
    """SIGINT mid-wave: exit 130 saying how to continue, nodes of later waves untouched; the
    same command again finishes the rollout."""
    fleet = harness.fleet("cordon", [(3, "h100-80gb")])
    recorder = fleet.record()
    mark = recorder.mark()
    args = ("--selector", fleet.selector, "--config", "all-1g.20gb", "--max-unavailable", "1")
    proc = harness.start_rollout(*args)
    until("the first node labelled", lambda: any(labels.get(CONFIG) == "all-1g.20gb"
                                                 for _, labels, *_ in recorder.since(mark)), 60)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    report = json.loads(out)
    assert "run the same command again" in report["stopped"]
    assert fleet.progress(fleet.names[2]) is None or fleet.labels(fleet.names[2])[CONFIG] != "all-1g.20gb"
    code, report, err = harness.rollout(*args)
    assert code == 0 and report["counts"]["success"] == 3, (report, err)


# The roles docs/fleet.md gives for the rollout (test_docs_give_these_roles keeps them equal).
ROLLOUT_RBAC = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: migkit-rollout}
rules:
- {apiGroups: [""], resources: [nodes], verbs: [get, list, watch, patch]}
- {apiGroups: [""], resources: [events], verbs: [list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: migkit-rollout, namespace: gpu-operator}
rules:
- {apiGroups: [""], resources: [configmaps], verbs: [list]}
"""


def documented_rbac() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(ROLLOUT_RBAC) if d]


def test_docs_give_these_roles() -> None:
    """docs/fleet.md's Permissions block is the one proven below."""
    docs = ROOT / "docs" / "fleet.md"
    if not docs.exists():
        pytest.skip("docs/ is not beside the tests (the wheel run copies the tests alone)")
    text = docs.read_text()
    section = text[text.index("### Permissions"):]
    start = section.index("```yaml\n") + len("```yaml\n")
    assert section[start:section.index("```", start)] == ROLLOUT_RBAC


def test_the_documented_permissions_are_enough_to_roll_and_to_look(harness: Harness) -> None:
    """A ServiceAccount bound to exactly the roles of docs/fleet.md runs a cordoned rollout and
    cluster status."""
    fleet = harness.fleet("cordon", [(3, "h100-80gb")])
    rbac = client.RbacAuthorizationV1Api(harness.core.api_client)
    core = harness.core
    name = f"migkit-rollout-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_service_account(NAMESPACE, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name)))
    subject = [client.RbacV1Subject(kind="ServiceAccount", name=name, namespace=NAMESPACE)]
    for doc in documented_rbac():
        doc["metadata"]["name"] = name
        if doc["kind"] == "ClusterRole":
            rbac.create_cluster_role(doc)
            rbac.create_cluster_role_binding(client.V1ClusterRoleBinding(
                metadata=client.V1ObjectMeta(name=name), subjects=subject,
                role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=name)))
        else:
            assert doc["kind"] == "Role" and doc["metadata"]["namespace"] == NAMESPACE
            rbac.create_namespaced_role(NAMESPACE, doc)
            rbac.create_namespaced_role_binding(NAMESPACE, client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name=name), subjects=subject,
                role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=name)))
    token = core.create_namespaced_service_account_token(name, NAMESPACE, client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=["https://kubernetes.default.svc.cluster.local"],
                                       expiration_seconds=3600))).status.token
    kubeconfig = str(harness.plane.write_kubeconfig(harness.workdir / f"{name}.kubeconfig",
                                                    f"system:serviceaccount:{NAMESPACE}:{name}", token))
    code, report, err = harness.rollout("--selector", fleet.selector, "--config", "all-7g.80gb", "--cordon",
                                        "--max-unavailable", "100%", kubeconfig=kubeconfig)
    assert code == 0 and report["counts"]["success"] == 3, (report, err)
    code, out = harness.status("--selector", fleet.selector, "-o", "json", kubeconfig=kubeconfig)
    assert code == 0, out
    assert {r["config"] for r in json.loads(out)["nodes"]} == {"all-7g.80gb"}


def test_a_node_that_never_answers_times_out_and_a_rerun_takes_its_late_outcome(harness: Harness) -> None:
    """A node without a running agent: `timeout` after --timeout (exit 1), the record still
    `applying` and the node not relabelled; when the outcome for that very change appears,
    the same command records it without labelling again."""
    fleet = harness.fleet("orphan", [(1, "h100-80gb")])
    silent = f"{fleet.names[0]}-silent"
    labels = {**fleet.labels(fleet.names[0]), STATE: "success"}
    labels.pop("kubernetes.io/hostname", None)
    harness.core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=silent, labels=labels)))
    try:
        # The config its agent would have published (a copy of its sibling's).
        published = harness.core.read_namespaced_config_map(f"{fleet.names[0]}-mig-config", NAMESPACE)
        harness.core.create_namespaced_config_map(NAMESPACE, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=f"{silent}-mig-config", labels=published.metadata.labels),
            data=published.data))
        args = ("--selector", fleet.selector, "--config", "all-3g.40gb", "--timeout", "3", "--max-unavailable", "2")
        code, report, err = harness.rollout(*args)
        results = {r["node"]: r for r in report["nodes"]}
        assert code == 1, (report, err)
        assert results[silent]["result"] == "timeout", results
        assert results[fleet.names[0]]["result"] == "success", results
        record = fleet.progress(silent)
        assert record is not None and record["phase"] == "applying"
        assert STATE not in fleet.labels(silent)

        # The late answer to that change, as migkit's agent writes it.
        harness.core.patch_node(silent, {"metadata": {
            "labels": {STATE: "success"},
            "annotations": {"migkit.io/mig.config.retry-handled": record["token"]}}})
        recorder = fleet.record()
        code, report, err = harness.rollout(*args)
        assert code == 0, (report, err)
        assert {r["node"]: r["result"] for r in report["nodes"]}[silent] == "success"
        assert (fleet.progress(silent) or {})["token"] == record["token"]
        assert all(labels.get(STATE) == "success" for n, labels, *_ in recorder.since(0) if n == silent)
    finally:
        harness.core.delete_node(silent)
        harness.core.delete_namespaced_config_map(f"{silent}-mig-config", NAMESPACE)


def test_two_rollouts_at_once_label_each_node_once(harness: Harness) -> None:
    """Two operators start the same rollout together: each node is labelled by one of them only
    (one token, one agent run); the other waits on that change or stands aside, never relabels."""
    fleet = harness.fleet("cordon", [(3, "h100-80gb")])
    recorder = fleet.record()
    mark = recorder.mark()
    runs = {n: fleet.runs(n) for n in fleet.names}
    args = ("--selector", fleet.selector, "--config", "all-4g.40gb", "--max-unavailable", "3")
    first, second = harness.start_rollout(*args), harness.start_rollout(*args)
    outputs = [p.communicate(timeout=120) for p in (first, second)]
    codes = [first.returncode, second.returncode]
    assert 0 in codes and set(codes) <= {0, 1}, outputs
    for name in fleet.names:
        tokens = {annotations.get(RETRY_ANNOTATION) for n, _, annotations, _ in recorder.since(mark) if n == name}
        tokens.discard(None)
        assert len(tokens) == 1, (name, tokens)
        assert fleet.labels(name)[STATE] == "success"
        assert fleet.runs(name) == runs[name] + 1, name


SPLIT = """\
version: v1
mig-configs:
  split:
    - devices: [0, 1, 2, 3]
      mig-enabled: true
      mig-devices: {3g.40gb: 2}
    - devices: [4, 5, 6, 7]
      mig-enabled: false
"""


def test_unlabelled_nodes_under_the_single_strategy_are_checked_by_the_gpus_their_agents_read(
        harness: Harness) -> None:
    """Nodes never given a MIG config, labelled by GFD's single strategy (gpu.count counts MIG
    devices): each agent's ConfigMap exists from its start with the node's real GPUs, so a
    config naming GPU indices is checked on them (fits the H100s, refused on the A100 for its
    missing 3g.40gb), and a rollout of the generated all-3g.40gb changes the unlabelled H100s."""
    fleet = harness.fleet("single", [(2, "h100-80gb"), (1, "a100-40gb")], initial_config=None)
    for name in fleet.names:
        labels = fleet.labels(name)
        harness.core.patch_node(name, {"metadata": {"labels": {
            "nvidia.com/gpu.product": labels["nvidia.com/gpu.product"] + "-MIG-1g.10gb",
            "nvidia.com/gpu.count": "56"}}})
    h100 = [n for n in fleet.names if fleet.spec_models[n] == "h100-80gb"]
    a100 = [n for n in fleet.names if fleet.spec_models[n] == "a100-40gb"]
    published = harness.config_maps()
    for name in fleet.names:
        data = published[f"{name}-mig-config"]
        assert data["gpu-count"] == "8" and data["gpu-models"] == ",".join([fleet.spec_models[name]] * 8)
        assert CONFIG not in fleet.labels(name)

    split = harness.workdir / "split.yaml"
    split.write_text(SPLIT)
    code, report, err = harness.rollout("--selector", fleet.selector, "--config", "split", "--config-file",
                                        str(split), "--dry-run")
    assert code == 0, (report, err)
    results = {r["node"]: r for r in report["nodes"]}
    assert {n for n, r in results.items() if r["result"] == "planned"} == set(h100), results
    assert "GPU 0,1,2,3 " in results[a100[0]]["detail"] and "3g.40gb" in results[a100[0]]["detail"]

    recorder = fleet.record()
    code, report, err = harness.rollout("--selector", fleet.selector, "--config", "all-3g.40gb",
                                        "--max-unavailable", "2")
    assert code == 1, (report, err)  # a node skipped: not everything done
    results = {r["node"]: r for r in report["nodes"]}
    for name in h100:
        assert results[name]["result"] == "success" and results[name]["previous"] is None, results
        assert fleet.labels(name)[STATE] == "success"
    assert results[a100[0]]["result"] == "skipped" and "3g.40gb" in results[a100[0]]["detail"]
    assert all(n != a100[0] for n, *_ in recorder.since(0))

    code, out = harness.status("--selector", fleet.selector, "-o", "json")
    assert code == 0, out
    rows = {r["node"]: r for r in json.loads(out)["nodes"]}
    assert rows[h100[0]]["gpus"] == "8x h100-80gb (NVIDIA-H100-80GB-HBM3-MIG-1g.10gb)"
    assert "all-3g.40gb" in rows[h100[0]]["fits"] and "all-3g.40gb" not in rows[a100[0]]["fits"]
