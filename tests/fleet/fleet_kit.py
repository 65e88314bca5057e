"""Helpers and fixtures of the fleet tests: the agent tests' control plane and cluster (one
real kube-apiserver + etcd, the deploy/ manifests applied, the agent's ServiceAccount token),
simulated fleets whose agents run in harness processes (``python -m migkit.fleet.harness``),
the rollout as a real ``migkit rollout`` process, and a recorder of every change the API
server reports for a fleet's nodes.

The control plane and the cluster are the session's (tests/conftest.py, shared with the agent
tests: one API server for both). A test module imports ``harness`` from here."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

AGENT_TESTS = Path(__file__).resolve().parents[1] / "agent"
if str(AGENT_TESTS) not in sys.path:
    sys.path.insert(0, str(AGENT_TESTS))

from agent_kit import NAMESPACE, ROOT, wait_for  # noqa: E402
from kubernetes import client, config  # noqa: E402

from migkit.fleet.harness import SimNode, make_fleet, node_labels  # noqa: E402
from migkit.fleet.progress import ANNOTATION  # noqa: E402

CONFIG = "nvidia.com/mig.config"
STATE = "nvidia.com/mig.config.state"
FLEET_LABEL = "migkit.test/fleet"
FAULT = "nvmlDeviceCreateGpuInstanceWithPlacement@1=INSUFFICIENT_RESOURCES"


class Recorder:
    """Every watch event of a fleet's nodes, in the API server's order: (node, labels, annotations,
    unschedulable)."""

    def __init__(self, core: Any, selector: str) -> None:
        self.core = core
        self.selector = selector
        self.events: list[tuple[str, dict[str, str], dict[str, str], bool]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "the recorder could not list the nodes"

    def _run(self) -> None:
        version = None
        while not self.stop.is_set():
            try:
                if version is None:
                    nodes = self.core.list_node(label_selector=self.selector)
                    version = nodes.metadata.resource_version
                    self.ready.set()
                resp = self.core.list_node(label_selector=self.selector, watch=True, resource_version=version,
                                           timeout_seconds=5, _preload_content=False, _request_timeout=(5, 15))
                for line in resp:
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        version = None
                        break
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] == "BOOKMARK":
                        continue
                    meta = obj["metadata"]
                    with self.lock:
                        self.events.append((meta["name"], dict(meta.get("labels") or {}),
                                            dict(meta.get("annotations") or {}),
                                            bool((obj.get("spec") or {}).get("unschedulable"))))
                resp.release_conn()
            except Exception:
                version = None
                self.stop.wait(0.3)

    def mark(self) -> int:
        with self.lock:
            return len(self.events)

    def since(self, mark: int) -> list[tuple[str, dict[str, str], dict[str, str], bool]]:
        with self.lock:
            return list(self.events[mark:])

    def close(self) -> None:
        self.stop.set()


class Fleet:
    """Simulated GPU nodes created on the API server, with a label that selects exactly them."""

    def __init__(self, harness: Harness, name: str, sims: Sequence[SimNode], spec_models: Mapping[str, str]) -> None:
        self.harness = harness
        self.name = name
        self.sims = {s.name: s for s in sims}
        self.spec_models = spec_models
        self.selector = f"{FLEET_LABEL}={name}"
        self.recorder: Recorder | None = None

    @property
    def names(self) -> list[str]:
        return sorted(self.sims)

    def node(self, name: str) -> Any:
        return self.harness.core.read_node(name)

    def labels(self, name: str) -> dict[str, str]:
        return dict(self.node(name).metadata.labels or {})

    def annotations(self, name: str) -> dict[str, str]:
        return dict(self.node(name).metadata.annotations or {})

    def progress(self, name: str) -> dict[str, Any] | None:
        raw = self.annotations(name).get(ANNOTATION)
        return json.loads(raw) if raw else None

    def outcomes(self) -> dict[str, list[dict[str, Any]]]:
        return self.harness.outcomes()

    def runs(self, name: str) -> int:
        return len(self.outcomes().get(name, []))

    def wait_settled(self, timeout: float = 90.0) -> None:
        """Every node's agent has reported a terminal state for its current label."""
        def settled() -> bool:
            return all(self.labels(n).get(STATE) in ("success", "failed") for n in self.names)

        wait_for(f"fleet {self.name} settled", settled, timeout)

    def record(self) -> Recorder:
        if self.recorder is None:
            self.recorder = Recorder(self.harness.core, self.selector)
        return self.recorder


class Harness:
    """One ``python -m migkit.fleet.harness`` process per fleet, agents with the agent's
    ServiceAccount token (so the agents' RBAC is the one deploy/ ships)."""

    def __init__(self, plane: Any, cluster: Mapping[str, Any], workdir: Path) -> None:
        self.plane = plane
        self.cluster = cluster
        self.core = cluster["core"]
        self.workdir = workdir
        self.admin_kubeconfig = str(plane.workdir / "admin.kubeconfig")
        self.fleets: dict[str, Fleet] = {}
        self.procs: list[tuple[subprocess.Popen[str], Path]] = []
        self.outcome_files: list[Path] = []

    def fleet(self, name: str, groups: Sequence[tuple[int, str]], *, faults: Mapping[int, str] | None = None,
              initial_config: str | None = "all-disabled", labels: Mapping[str, str] | None = None) -> Fleet:
        """Make (once) a fleet of ``groups`` [(count, model)], 8 GPUs a node, node i with fault i,
        labelled ``initial_config`` (None: no MIG config label at all) and ``labels``."""
        if name in self.fleets:
            return self.fleets[name]
        tag = uuid.uuid4().hex[:6]
        sims: list[SimNode] = []
        models: dict[str, str] = {}
        index = 0
        for count, model in groups:
            names = [f"{name}-{tag}-{index + i:03d}" for i in range(count)]
            env = {names[i - index]: {"MIGKIT_SIM_FAULTS": f} for i, f in (faults or {}).items()
                   if index <= i < index + count}
            sims.extend(make_fleet(self.workdir / name, names, f"8x{model}", env))
            models.update({n: model for n in names})
            index += count
        for sim in sims:
            extra = {FLEET_LABEL: name, "kubernetes.io/hostname": sim.name, **(labels or {})}
            if initial_config is not None:
                extra[CONFIG] = initial_config
            node = client.V1Node(metadata=client.V1ObjectMeta(name=sim.name, labels=node_labels(
                models[sim.name], 8, extra)))
            self.core.create_node(node)
        fleet = Fleet(self, name, sims, models)
        self._start(fleet)
        self.fleets[name] = fleet
        if initial_config is None:
            # No label, no run: each agent's ConfigMap, published at its start, is the sign of life.
            wait_for(f"fleet {name}'s ConfigMaps", lambda: all(
                f"{n}-mig-config" in self.config_maps() for n in fleet.names), 60)
            return fleet
        fleet.wait_settled()
        # The agents record a run just after writing its state: wait for the first run of each.
        wait_for(f"fleet {name}'s first runs recorded", lambda: all(fleet.runs(n) >= 1 for n in fleet.names), 60)
        return fleet

    def config_maps(self) -> dict[str, dict[str, str]]:
        """The agents' ConfigMaps' data, by name."""
        items = self.core.list_namespaced_config_map(NAMESPACE, label_selector="app.kubernetes.io/managed-by").items
        return {cm.metadata.name: dict(cm.data or {}) for cm in items}

    def _start(self, fleet: Fleet) -> None:
        spec = self.workdir / f"{fleet.name}.json"
        spec.write_text(json.dumps([s.as_json() for s in fleet.sims.values()]))
        outcomes = self.workdir / f"{fleet.name}-outcomes.json"
        log = open(self.workdir / f"{fleet.name}-harness.log", "w")  # noqa: SIM115 - closed with the process
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MIGKIT_", "KUBE"))}
        proc = subprocess.Popen(
            [sys.executable, "-m", "migkit.fleet.harness", "--fleet", str(spec), "--kubeconfig",
             str(self.cluster["kubeconfig"]), "--namespace", NAMESPACE, "--workdir", str(self.workdir / fleet.name),
             "--outcomes", str(outcomes), "--log-level", "info"],
            stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=self.workdir)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready"), f"harness: {line!r}; see {self.workdir}"
        self.procs.append((proc, self.workdir / f"{fleet.name}-harness.log"))
        self.outcome_files.append(outcomes)

    def outcomes(self) -> dict[str, list[dict[str, Any]]]:
        merged: dict[str, list[dict[str, Any]]] = {}
        for path in self.outcome_files:
            if path.exists():
                merged.update(json.loads(path.read_text()))
        return merged

    def rollout(self, *args: str, json_out: bool = True, timeout: float = 180.0,
                kubeconfig: str | None = None) -> tuple[int, Any, str]:
        """Run ``migkit rollout ARGS`` (as the cluster admin unless ``kubeconfig`` says who);
        (exit code, JSON or text, stderr)."""
        proc = self.start_rollout(*args, json_out=json_out, kubeconfig=kubeconfig)
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, json.loads(out) if json_out and out.strip() else out, err

    def start_rollout(self, *args: str, json_out: bool = True, kubeconfig: str | None = None) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "migkit", "rollout", *args, "--kubeconfig", kubeconfig or self.admin_kubeconfig,
                "--namespace", NAMESPACE]
        if json_out:
            argv += ["-o", "json"]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=ROOT)

    def status(self, *args: str, kubeconfig: str | None = None) -> tuple[int, str]:
        proc = subprocess.run([sys.executable, "-m", "migkit", "cluster", "status", *args, "--kubeconfig",
                               kubeconfig or self.admin_kubeconfig, "--namespace", NAMESPACE],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
        return proc.returncode, proc.stdout + proc.stderr

    def close(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for fleet in self.fleets.values():
            if fleet.recorder is not None:
                fleet.recorder.close()
            for name in fleet.names:
                with contextlib.suppress(Exception):  # best effort: the control plane goes with the session
                    self.core.delete_node(name)


def until(what: str, predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
    return wait_for(what, predicate, timeout)


@pytest.fixture(scope="module")
def harness(cluster: dict[str, Any], control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        Harness]:
    """The fleets of one test module and their harness processes (stopped at the module's end)."""
    h = Harness(control_plane, cluster, tmp_path_factory.mktemp("fleet"))
    try:
        yield h
    finally:
        h.close()


__all__ = [
    "CONFIG", "FAULT", "NAMESPACE", "ROOT", "STATE", "Fleet", "Harness", "Recorder", "config",
    "harness", "time", "until",
]
