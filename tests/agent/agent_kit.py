"""Helpers for the agent tests: the test's cluster side (operator, recorder), the agent as a
process, the simulated node, polling with deadlines."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client  # type: ignore[import-untyped]
from kubernetes.client.rest import ApiException  # type: ignore[import-untyped]

from migkit import simulator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NAMESPACE = "gpu-operator"
CONFIG = "nvidia.com/mig.config"
STATE = "nvidia.com/mig.config.state"
PAUSED = "paused-for-mig-change"
CLIENT = "nvidia.com/gpu.deploy.client"
RETRY = "migkit.io/mig.config.retry"
HANDLED = "migkit.io/mig.config.retry-handled"
# deploy label -> the operand pod's `app` label (nvsm has no pod here)
OPERANDS = {
    "nvidia.com/gpu.deploy.device-plugin": "nvidia-device-plugin-daemonset",
    "nvidia.com/gpu.deploy.gpu-feature-discovery": "gpu-feature-discovery",
    "nvidia.com/gpu.deploy.dcgm-exporter": "nvidia-dcgm-exporter",
    "nvidia.com/gpu.deploy.dcgm": "nvidia-dcgm",
    "nvidia.com/gpu.deploy.nvsm": None,
}
MUTATING = (
    "nvmlDeviceSetMigMode",
    "nvmlDeviceCreateGpuInstanceWithPlacement",
    "nvmlDeviceCreateGpuInstance",
    "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
    "nvmlGpuInstanceCreateComputeInstance",
    "nvmlGpuInstanceDestroy",
    "nvmlComputeInstanceDestroy",
)


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1) -> Any:
    """Poll until ``predicate()`` is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (ApiException, OSError) as err:  # the API server may be restarting
            last = err
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- the simulated GPUs


def layout(state_file: str | Path) -> list[tuple[int, tuple[str, ...]]]:
    """Per GPU: (MIG mode, sorted profile names of its GPU instances)."""
    records = simulator.read_state(state_file)
    names = {(r.fields["gpu"], r.fields["id"]): r.fields["name"].removeprefix("MIG ")
             for r in records if r.keyword == "gip"}
    gpus: dict[str, tuple[int, list[str]]] = {}
    for r in records:
        if r.keyword == "gpu":
            gpus[r.fields["index"]] = (r.int("mode"), [])
    for r in records:
        if r.keyword == "gi":
            gpus[r.fields["gpu"]][1].append(names[(r.fields["gpu"], r.fields["profile"])])
    return [(mode, tuple(sorted(gis))) for _, (mode, gis) in sorted(gpus.items(), key=lambda kv: int(kv[0]))]


def mutations(state_file: str | Path) -> int:
    counts = simulator.stats(state_file)
    return sum(counts.get(name, 0) for name in MUTATING)


BALANCED_H100 = ("1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb")


def generated_config(state_file: str | Path) -> str:
    out = subprocess.run([sys.executable, "-m", "migkit", "--sim-state", str(state_file), "generate-config"],
                         check=True, capture_output=True, text=True)
    return out.stdout


def cli_apply(state_file: str | Path, config_file: str | Path, name: str) -> None:
    subprocess.run([sys.executable, "-m", "migkit", "--sim-state", str(state_file), "apply", "-f",
                    str(config_file), "-c", name], check=True, capture_output=True, text=True)


# ----------------------------------------------------------------------------- the cluster side


class NodeRecorder:
    """Watches one Node: records every label set, and plays the GPU operator's part — an operand
    pod per deploy label while it is `true`, deleted (grace 0) otherwise, except ``stuck`` apps."""

    def __init__(self, core: Any, node: str, stuck: set[str] | None = None) -> None:
        self.core = core
        self.node = node
        self.stuck = set(stuck or ())
        self.history: list[dict[str, str]] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> NodeRecorder:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)

    def labels_seen(self) -> list[dict[str, str]]:
        with self.lock:
            return list(self.history)

    def mark(self) -> int:
        with self.lock:
            return len(self.history)

    def _record(self, labels: dict[str, str]) -> None:
        with self.lock:
            if not self.history or self.history[-1] != labels:
                self.history.append(dict(labels))

    def _run(self) -> None:
        version = None
        while not self.stop.is_set():
            try:
                if version is None:
                    nodes = self.core.list_node(field_selector=f"metadata.name={self.node}")
                    version = nodes.metadata.resource_version
                    for n in nodes.items:
                        self._record(n.metadata.labels or {})
                        self._operate(n.metadata.labels or {})
                resp = self.core.list_node(field_selector=f"metadata.name={self.node}", watch=True,
                                           resource_version=version, timeout_seconds=5,
                                           _preload_content=False, _request_timeout=(5, 15))
                for line in resp:
                    if self.stop.is_set():
                        break
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        version = None
                        break
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] == "BOOKMARK":
                        continue
                    labels = obj["metadata"].get("labels") or {}
                    self._record(labels)
                    self._operate(labels)
                resp.release_conn()
            except Exception:
                version = None
                self.stop.wait(0.3)

    def _operate(self, labels: dict[str, str]) -> None:
        if CLIENT in labels:  # a third-party DaemonSet that selects nodes by the client label
            name = f"gpu-client-{self.node}"
            if labels[CLIENT] == "true":
                create_pod(self.core, name, self.node, {"app": "gpu-client"}, namespace="default",
                           ignore_exists=True, node_selector={CLIENT: "true"},
                           owner={"api_version": "apps/v1", "kind": "DaemonSet", "name": "gpu-client", "uid": "1" * 8})
            elif "gpu-client" not in self.stuck:
                delete_pod(self.core, name, namespace="default")
        for label, app in OPERANDS.items():
            if app is None:
                continue
            name = f"{app}-{self.node}"
            if labels.get(label) == "true":
                create_pod(self.core, name, self.node, {"app": app}, ignore_exists=True)
            elif app not in self.stuck:
                delete_pod(self.core, name)


def create_pod(core: Any, name: str, node: str, labels: dict[str, str], namespace: str = NAMESPACE,
               ignore_exists: bool = False, owner: dict[str, str] | None = None,
               node_selector: dict[str, str] | None = None) -> None:
    meta = client.V1ObjectMeta(name=name, labels=labels,
                               owner_references=[client.V1OwnerReference(**owner)] if owner else None)
    pod = client.V1Pod(metadata=meta, spec=client.V1PodSpec(
        node_name=node, node_selector=node_selector, containers=[client.V1Container(name="c", image="busybox")]))
    try:
        core.create_namespaced_pod(namespace, pod)
    except ApiException as err:
        if not (ignore_exists and err.status == 409):
            raise


def delete_pod(core: Any, name: str, namespace: str = NAMESPACE) -> None:
    try:
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    except ApiException as err:
        if err.status != 404:
            raise


def node_labels(core: Any, node: str) -> dict[str, str]:
    return dict(core.read_node(node).metadata.labels or {})


def set_label(core: Any, node: str, value: str | None, key: str = CONFIG) -> None:
    core.patch_node(node, {"metadata": {"labels": {key: value}}})


def events(core: Any, node: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events about this Node, oldest first."""
    items = core.list_namespaced_event("default", field_selector=f"involvedObject.name={node}").items
    items.sort(key=lambda e: e.metadata.name)  # the agent names them <node>.<nanoseconds in hex>
    return [(e.type, e.reason, e.message) for e in items]


def wait_state(core: Any, node: str, state: str, timeout: float = 60.0) -> dict[str, str]:
    def reached() -> dict[str, str] | None:
        labels = node_labels(core, node)
        return labels if labels.get(STATE) == state else None

    result: dict[str, str] = wait_for(f"{node} state {state}", reached, timeout)
    return result


def states_after(history: list[dict[str, str]], mark: int) -> list[str]:
    """The distinct mig.config.state values recorded since ``mark``, in order."""
    out: list[str] = []
    before = history[mark - 1].get(STATE) if 0 < mark <= len(history) else None
    for labels in history[mark:]:
        if before is not None and labels.get(STATE) == before and not out:
            continue  # the state as it was when the mark was taken
        before = None
        value = labels.get(STATE)
        if value and (not out or out[-1] != value):
            out.append(value)
    return out


def was_paused(history: list[dict[str, str]], mark: int) -> bool:
    return any(v == PAUSED for labels in history[mark:] for v in labels.values())


def wait_terminal(rec: NodeRecorder, mark: int, timeout: float = 60.0, want: str | None = None) -> str:
    """The first terminal state (success or failed) recorded after ``mark``."""

    def terminal() -> str | None:
        for state in states_after(rec.labels_seen(), mark):
            if state in ("success", "failed"):
                return state
        return None

    state: str = wait_for("a terminal state", terminal, timeout)
    if want is not None:
        assert state == want, f"ended {state}, wanted {want}"
    return state


def deploy_values(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if (k.startswith("nvidia.com/gpu.deploy.") and k in OPERANDS)
            or k == "nvidia.com/gpu.deploy.client"}


# ----------------------------------------------------------------------------- the agent process


class Agent:
    """``migkit agent`` as a real process, with the ServiceAccount's kubeconfig."""

    def __init__(self, workdir: Path, node: str, kubeconfig: Path, sim_state: Path, *,
                 config_file: Path | None = None, env: dict[str, str] | None = None,
                 args: list[str] | None = None) -> None:
        self.workdir = workdir
        self.node = node
        self.port = free_port()
        self.log_path = workdir / f"agent-{uuid.uuid4().hex[:6]}.log"
        self.host_dir = workdir / "host-state"
        self.host_dir.mkdir(exist_ok=True)
        (workdir / "hostroot").mkdir(exist_ok=True)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MIGKIT_", "KUBE"))},
            "KUBECONFIG": str(kubeconfig),
            "NODE_NAME": node,
            "MIGKIT_SIM_STATE": str(sim_state),
            "DEFAULT_GPU_CLIENTS_NAMESPACE": NAMESPACE,
            "POD_NAMESPACE": NAMESPACE,
            "POD_NAME": f"migkit-agent-{node}",
            "POD_UID": str(uuid.uuid5(uuid.NAMESPACE_DNS, node)),
            "HOST_ROOT_MOUNT": str(workdir / "hostroot"),
            "MIGKIT_AGENT_HOST_EXEC": f"{sys.executable} {HERE / 'fake_host.py'}",
            "FAKE_HOST_DIR": str(self.host_dir),
            "MIGKIT_AGENT_METRICS_ADDRESS": "127.0.0.1",
            "MIGKIT_AGENT_METRICS_PORT": str(self.port),
            "MIGKIT_AGENT_OPERAND_WAIT_TIMEOUT": "30",
            "MIGKIT_AGENT_CLIENT_WAIT_TIMEOUT": "30",
            "MIGKIT_AGENT_MODE_CHANGE_SETTLE": "0",
            "MIGKIT_AGENT_API_RETRY_TIMEOUT": "120",
            "MIGKIT_AGENT_LOG_FORMAT": "json",
            "MIGKIT_AGENT_LOG_LEVEL": "debug",
        }
        if config_file is not None:
            self.env["CONFIG_FILE"] = str(config_file)
        self.env.update(env or {})
        self.args = list(args or [])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait_ready: bool = True) -> Agent:
        """Start the process; with ``wait_ready``, return once its /readyz answers 200."""
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "migkit", "agent", *self.args], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir)
        if not wait_ready:
            return self
        wait_for("the agent's /readyz", lambda: self.get("/readyz")[0] == 200 or self._died(), timeout=60)
        assert self.proc.poll() is None, self.log()
        return self

    def _died(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the agent exited with {self.proc.returncode}:\n{self.log()}")
        return False

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name: str) -> float:
        text = self.get("/metrics")[1]
        for line in text.splitlines():
            if line.startswith(name + " ") or (line.startswith(name + "{") and line.split(" ")[0] == name):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"the agent did not stop on SIGTERM:\n{self.log()[-3000:]}") from None
        return int(self.proc.returncode)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    # the fake host
    def host_calls(self) -> list[list[str]]:
        path = self.host_dir / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def set_active_services(self, services: list[str]) -> None:
        (self.host_dir / "services.json").write_text(json.dumps(sorted(services)))

    def active_services(self) -> list[str]:
        path = self.host_dir / "services.json"
        return sorted(json.loads(path.read_text())) if path.exists() else []
