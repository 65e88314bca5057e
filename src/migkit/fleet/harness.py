"""A fleet of simulated GPU nodes, each with its own agent, for tests and benchmarks at scale.

One process hosts many agents, one thread pair each (the agent's own watch of *its* Node and
its own worker running the agent's reconcile sequence), each with its own API client and its
own simulated node (state file). A real agent is one process per node; here hundreds fit in a
few hundred MiB, which a real process per node (~60 MiB each) would not.

What is shared, and why: one process loads one NVML library, and the simulator reads its
environment (``MIGKIT_SIM_STATE``, ``MIGKIT_SIM_FAULTS``, ``MIGKIT_SIM_LATENCY_MS``) when the
library is initialised. So every GPU operation of the agents in a process is serialised
behind one lock, with that node's environment set while it runs. Kubernetes work (watches,
patches, Events, waits) runs concurrently, as on a real fleet.

Run as ``python -m migkit.fleet.harness --fleet FLEET.json --kubeconfig FILE``: it prints
``ready N`` once every agent has read its Node, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from migkit.agent import labels as L
from migkit.agent.host import Host, PrefixRunner
from migkit.agent.kube import Kube, load_api_client
from migkit.agent.node_ops import NodeOps
from migkit.agent.observe import Health
from migkit.agent.reconcile import Outcome, Trigger
from migkit.agent.runtime import Worker
from migkit.agent.settings import Settings
from migkit.fleet.fit import COUNT_LABEL, MEMORY_LABEL, PRODUCT_LABEL, product_value

log = logging.getLogger("migkit.fleet.harness")

# One NVML library per process: GPU work of all agents here takes turns.
_GPU_LOCK = threading.Lock()
_SIM_ENV = ("MIGKIT_SIM_FAULTS", "MIGKIT_SIM_LATENCY_MS")
STATE_ENV = "MIGKIT_SIM_STATE"


def _pairs(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in env.items()))


@attrs.frozen
class SimNode:
    """One simulated GPU node: its Node name, its simulator state file, and simulator variables
    that apply to it alone (``MIGKIT_SIM_FAULTS``, ``MIGKIT_SIM_LATENCY_MS``)."""

    name: str
    state_file: str
    env: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_pairs)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "state_file": self.state_file, "env": dict(self.env)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SimNode:
        return cls(str(doc["name"]), str(doc["state_file"]), doc.get("env") or {})


def prepare_environment(state_file: str) -> None:
    """Give the simulator's variables a value before any agent thread starts.

    Threads of the API client read ``os.environ`` (proxy settings) while GPU operations set
    these variables: a key that appears or disappears under an iteration raises ``KeyError``
    there. So the keys exist from the start and are only ever assigned, never removed.
    """
    os.environ.setdefault(STATE_ENV, state_file)
    for name in _SIM_ENV:
        os.environ.setdefault(name, "")


@contextlib.contextmanager
def _node_environment(pairs: tuple[tuple[str, str], ...]) -> Iterator[None]:
    """This node's simulator variables while one of its GPU operations runs (under the lock);
    empty afterwards (the simulator reads an empty value as unset)."""
    env = dict(pairs)
    for name in _SIM_ENV:
        os.environ[name] = env.get(name, "")
    try:
        yield
    finally:
        for name in _SIM_ENV:
            os.environ[name] = ""


def shared_gpu_access(env: Mapping[str, str]) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """``NodeOps.gpu_access`` for one of several simulated nodes in this process: its GPU work
    waits its turn on the process's one NVML library, with this node's simulator variables set."""
    pairs = _pairs(env)

    @contextlib.contextmanager
    def access() -> Iterator[None]:
        with _GPU_LOCK, _node_environment(pairs):
            yield

    return access


def node_labels(spec_model: str, gpus: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The labels of a GPU node as the GPU Operator leaves them (GFD's product and count, the
    operands' deploy labels), for a node of ``gpus`` GPUs of bundled model ``spec_model``."""
    from migkit.hardware import gpu_model

    model = gpu_model(spec_model)
    labels = {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.deploy.mig-manager": "true",
        "nvidia.com/mig.capable": "true" if model.mig_capable else "false",
        PRODUCT_LABEL: product_value(model.product_name),
        COUNT_LABEL: str(gpus),
        MEMORY_LABEL: str(model.memory_mib),
        **{name: "true" for name in L.OPERAND_DEPLOY_LABELS},
    }
    labels.update(extra or {})
    return labels


def make_fleet(workdir: Path, names: Sequence[str], spec: str = "8xh100-80gb",
               env: Mapping[str, Mapping[str, str]] | None = None) -> list[SimNode]:
    """Fresh simulated nodes (MIG disabled, nothing on them), one state file each."""
    from migkit import simulator

    workdir.mkdir(parents=True, exist_ok=True)
    fleet = []
    for name in names:
        state = workdir / f"{name}.state"
        simulator.write_state(state, spec)
        fleet.append(SimNode(name, str(state), (env or {}).get(name, {})))
    return fleet


@attrs.define
class Outcomes:
    """Each agent's reconfigurations (config, trigger, result, seconds), optionally mirrored to
    a JSON file after each one so another process can read them."""

    path: Path | None = None
    runs: dict[str, list[dict[str, Any]]] = attrs.Factory(dict)
    _lock: threading.Lock = attrs.Factory(threading.Lock)

    def add(self, node: str, record: dict[str, Any]) -> None:
        with self._lock:
            self.runs.setdefault(node, []).append(record)
            if self.path is not None:
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(self.runs))
                tmp.replace(self.path)


@attrs.define
class ThreadAgent:
    """One node's agent in threads of this process: the agent's own :class:`Worker` (its watch
    and its loop, without signals or the HTTP server) on the node's simulated GPUs."""

    sim: SimNode
    api_client: Any
    namespace: str
    stop: threading.Event
    outcomes: Outcomes
    workdir: Path
    operand_wait_timeout: float = 30.0
    worker: Worker | None = None

    def settings(self) -> Settings:
        return Settings(
            node_name=self.sim.name, default_gpu_clients_namespace=self.namespace, pod_namespace=self.namespace,
            host_root_mount=str(self.workdir), operand_wait_timeout=self.operand_wait_timeout,
            client_wait_timeout=self.operand_wait_timeout, mode_change_settle=0.0, api_retry_timeout=120.0,
            metrics_port=0,
        )

    def start(self) -> ThreadAgent:
        settings = self.settings()
        kube = Kube(self.api_client, self.sim.name, settings.api_retry_timeout, stop=self.stop)
        ops = NodeOps(sim_state=self.sim.state_file, gpu_access=shared_gpu_access(dict(self.sim.env)))
        # No host services on a simulated node: nothing is run through this runner.
        host = Host(PrefixRunner(("false",)), str(self.workdir))
        self.worker = Worker(settings, kube, ops, host, self.stop, on_outcome=self._record).start()
        return self

    @property
    def health(self) -> Health:
        assert self.worker is not None, "not started"
        return self.worker.health

    def _record(self, config: str, trigger: Trigger, outcome: Outcome) -> None:
        self.outcomes.add(self.sim.name, {"config": config, "trigger": trigger.value, "result": outcome.state,
                                          "step": outcome.step, "seconds": round(outcome.seconds, 3),
                                          "disrupted": outcome.disrupted})


@attrs.define
class AgentPool:
    """Agents for a fleet of simulated nodes, in threads of this process."""

    kubeconfig: str
    namespace: str
    workdir: Path
    outcomes: Outcomes = attrs.Factory(Outcomes)
    stop: threading.Event = attrs.Factory(threading.Event)
    agents: list[ThreadAgent] = attrs.Factory(list)

    def start(self, fleet: Sequence[SimNode]) -> AgentPool:
        if fleet:
            prepare_environment(fleet[0].state_file)
        for sim in fleet:
            root = self.workdir / sim.name
            root.mkdir(parents=True, exist_ok=True)
            agent = ThreadAgent(sim, load_api_client(self.kubeconfig), self.namespace, self.stop, self.outcomes, root)
            self.agents.append(agent.start())
        return self

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(a.health.ready.wait(max(0.0, deadline - time.monotonic())) for a in self.agents)

    def close(self) -> None:
        self.stop.set()
        for agent in self.agents:
            if agent.worker is not None:
                agent.worker.wake()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m migkit.fleet.harness",
                                description="Run one agent per simulated node, in threads of this process.")
    p.add_argument("--fleet", required=True, help="JSON list of {name, state_file, env}")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--namespace", default="gpu-operator")
    p.add_argument("--workdir", required=True)
    p.add_argument("--outcomes", help="JSON file of each agent's reconfigurations, rewritten after each")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(threadName)s %(levelname)s %(message)s")
    fleet = [SimNode.from_json(d) for d in json.loads(Path(args.fleet).read_text())]
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pool = AgentPool(args.kubeconfig, args.namespace, Path(args.workdir),
                     Outcomes(Path(args.outcomes) if args.outcomes else None), stop)
    pool.start(fleet)
    if not pool.wait_ready(300.0):
        print("not ready: some agents never read their Node", flush=True)
        pool.close()
        return 1
    print(f"ready {len(fleet)}", flush=True)
    stop.wait()
    pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
