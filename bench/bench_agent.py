"""The node agent on a real kube-apiserver: seconds from a label change to `success`, and the
agent's resident memory.

Starts etcd + kube-apiserver (``KUBEBUILDER_ASSETS``), a simulated 8xH100 node and
``migkit agent`` as a process, then alternates the label between all-balanced and all-disabled;
each all-balanced run starts from MIG disabled (so it includes the mode change). Measured side by
side in one run: with no added NVML latency, and with ``MIGKIT_SIM_LATENCY_MS`` (default 50).
Memory: VmRSS once the agent is idle, and VmHWM (the peak) after the reconfigurations.
Raw numbers go to ``bench/results/agent.json``.

    KUBEBUILDER_ASSETS=$(../shared/k8s/assets) python bench/bench_agent.py [--repeat 3] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests" / "agent"), str(HERE.parent / "tests")]

from agent_kit import STATE, Agent, generated_config, set_label  # noqa: E402
from kubernetes import client, config  # noqa: E402

from k8s_control_plane import ControlPlane  # noqa: E402
from migkit import simulator  # noqa: E402

RESULTS = HERE / "results"


def memory_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def until_success(core: Any, agent: Agent, node: str, runs: int, timeout: float = 120.0) -> float:
    """When the node shows `success` for the ``runs``-th time (the agent's own count)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (core.read_node(node).metadata.labels or {}).get(STATE) == "success" and agent.metric(
                'migkit_agent_reconfigurations_total{result="success"}') >= runs:
            return time.monotonic()
        time.sleep(0.01)
    raise RuntimeError(f"{node} did not reach success")


def run_agent(plane: ControlPlane, core: Any, work: pathlib.Path, latency_ms: float, repeat: int) -> dict[str, Any]:
    name = f"bench-{int(latency_ms)}ms"
    node_dir = work / name
    node_dir.mkdir()
    state = node_dir / "node.state"
    simulator.write_state(state, "8xh100-80gb")
    cfg = node_dir / "config.yaml"
    cfg.write_text(generated_config(state))
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name, labels={
        "nvidia.com/gpu.deploy.mig-manager": "true", "nvidia.com/gpu.deploy.device-plugin": "true"})))
    env = {"MIGKIT_AGENT_LOG_LEVEL": "info"}
    if latency_ms:
        env["MIGKIT_SIM_LATENCY_MS"] = str(latency_ms)
    agent = Agent(node_dir, name, plane.workdir / "admin.kubeconfig", state, config_file=cfg, env=env).start()
    assert agent.proc is not None
    try:
        time.sleep(2.0)  # let the agent settle after its first list: this is the idle figure
        idle = memory_kib(agent.proc.pid)
        seconds = []
        done = 0
        for _ in range(repeat):
            for label in ("all-balanced", "all-disabled"):
                t0 = time.monotonic()
                set_label(core, name, label)
                done += 1
                seconds_taken = until_success(core, agent, name, done) - t0
                if label == "all-balanced":
                    seconds.append(seconds_taken)
        peak = memory_kib(agent.proc.pid)
    finally:
        agent.stop()
        core.delete_node(name)
    return {"latency_ms": latency_ms, "seconds": seconds, "median_s": statistics.median(seconds),
            "idle_rss_kib": idle["VmRSS"], "peak_rss_kib": peak["VmHWM"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args()
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets:
        print("set KUBEBUILDER_ASSETS (export KUBEBUILDER_ASSETS=$(../shared/k8s/assets))", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        work = pathlib.Path(tmp)
        plane = ControlPlane(assets, work / "kube")
        (work / "kube").mkdir()
        plane.start()
        try:
            core = client.CoreV1Api(config.new_client_from_config(config_file=str(plane.workdir / "admin.kubeconfig")))
            rows = [run_agent(plane, core, work, latency, args.repeat) for latency in (0.0, args.latency_ms)]
        finally:
            plane.stop()
    print(f"{'NVML latency':>14} {'label -> success (median of ' + str(args.repeat) + ')':>34} "
          f"{'idle RSS':>10} {'peak RSS':>10}")
    for row in rows:
        print(f"{row['latency_ms']:>11g} ms {row['median_s']:>31.2f} s {row['idle_rss_kib'] / 1024:>7.1f} MiB "
              f"{row['peak_rss_kib'] / 1024:>7.1f} MiB")
    print(f"ratio with/without latency: {rows[1]['median_s'] / rows[0]['median_s']:.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "agent.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
