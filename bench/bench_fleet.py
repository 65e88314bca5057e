"""Fleet scale: one real kube-apiserver + etcd, N simulated 8xH100 nodes each with its own
agent, and one ``migkit rollout`` across all of them.

    KUBEBUILDER_ASSETS=$(../shared/k8s/assets) python bench/bench_fleet.py [--nodes 10,50,100,200]

For each N: the agents run in threads of ``--processes`` harness processes
(``python -m migkit.fleet.harness``; each agent watches only its own Node, with its own API
client), start from ``all-disabled``, and the rollout sets ``--config`` (default all-balanced)
in waves of ``--max-unavailable`` (default 25%). Measured: seconds from the rollout's start to
every node ``success`` (the rollout returns then), API requests per node per
reconfiguration (the API server's own ``apiserver_request_total``, watches counted apart),
the rollout's share, the agents' resident memory per node, and the API server's. Writes
``bench/results/fleet.json``; asserts nothing. Without ``KUBEBUILDER_ASSETS`` it says so and
exits 0.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pathlib
import re
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
AGENT_TESTS = ROOT / "tests" / "agent"
NAMESPACE = "gpu-operator"


def skip(reason: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fleet.json").write_text(json.dumps({"skipped": reason}, indent=2) + "\n")
    print(f"bench_fleet: skipped: {reason}")


def rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_SAMPLE = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$')


def request_counts(plane: Any) -> dict[str, float]:
    """apiserver_request_total summed by verb."""
    ctx = ssl.create_default_context(cafile=str(plane.pki / "ca.crt"))
    req = urllib.request.Request(f"{plane.url}/metrics", headers={"Authorization": f"Bearer {plane.admin_token}"})
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        text = resp.read().decode()
    by_verb: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            verb = re.search(r'verb="([^"]*)"', m["labels"])
            key = verb.group(1) if verb else "?"
            by_verb[key] = by_verb.get(key, 0.0) + float(m["value"])
    return by_verb


def load_agent_fixtures() -> Any:
    """The tests' shared control-plane module (the manifests of deploy/ and how to apply them)."""
    sys.path[:0] = [str(AGENT_TESTS), str(AGENT_TESTS.parent)]
    return importlib.import_module("k8s_cluster")


class Bench:
    def __init__(self, assets: str, workdir: pathlib.Path, processes: int) -> None:
        fixtures = load_agent_fixtures()
        from kubernetes import client, config

        from k8s_control_plane import ControlPlane

        self.client = client
        self.workdir = workdir
        self.processes = processes
        self.plane = ControlPlane(assets, workdir / "kube")
        (workdir / "kube").mkdir()
        self.plane.start()
        for doc in fixtures.manifest_documents():
            fixtures.server_side_apply(self.plane, doc, dry_run=False)
        self.admin_kubeconfig = str(self.plane.workdir / "admin.kubeconfig")
        self.core = client.CoreV1Api(config.new_client_from_config(config_file=self.admin_kubeconfig))
        token = self.core.create_namespaced_service_account_token(
            "migkit-agent", NAMESPACE, client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
                audiences=["https://kubernetes.default.svc.cluster.local"], expiration_seconds=7200))).status.token
        self.agent_kubeconfig = self.plane.write_kubeconfig(
            workdir / "agent.kubeconfig", "system:serviceaccount:gpu-operator:migkit-agent", token)

    def harness(self, fleet_file: pathlib.Path, workdir: pathlib.Path, log: pathlib.Path) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MIGKIT_", "KUBE"))}
        with open(log, "w") as err:  # the child keeps its own descriptor
            return subprocess.Popen(
                [sys.executable, "-m", "migkit.fleet.harness", "--fleet", str(fleet_file), "--kubeconfig",
                 str(self.agent_kubeconfig), "--namespace", NAMESPACE, "--workdir", str(workdir)],
                stdout=subprocess.PIPE, stderr=err, text=True, env=env)

    def baseline_rss(self) -> int:
        """A harness process with no agent: what every process costs before its first agent."""
        empty = self.workdir / "empty.json"
        empty.write_text("[]")
        proc = self.harness(empty, self.workdir / "empty", self.workdir / "empty.log")
        assert proc.stdout is not None
        proc.stdout.readline()
        rss = rss_kib(proc.pid)
        proc.terminate()
        proc.wait()
        return rss

    def settled(self, selector: str, n: int, state: str = "success") -> int:
        nodes = self.core.list_node(label_selector=selector).items
        return sum(1 for node in nodes if (node.metadata.labels or {}).get("nvidia.com/mig.config.state") == state)

    def run(self, n: int, config: str, max_unavailable: str, baseline: int) -> dict[str, Any]:
        from migkit.fleet.harness import make_fleet, node_labels

        tag = f"n{n}"
        selector = f"migkit.bench/fleet={tag}"
        names = [f"{tag}-{i:04d}" for i in range(n)]
        sims = make_fleet(self.workdir / tag, names, "8xh100-80gb")
        for sim in sims:
            labels = node_labels("h100-80gb", 8, {"migkit.bench/fleet": tag, "nvidia.com/mig.config": "all-disabled"})
            self.core.create_node(self.client.V1Node(metadata=self.client.V1ObjectMeta(name=sim.name, labels=labels)))
        started = time.monotonic()
        procs = []
        for p in range(self.processes):
            chunk = sims[p :: self.processes]
            fleet_file = self.workdir / f"{tag}-{p}.json"
            fleet_file.write_text(json.dumps([s.as_json() for s in chunk]))
            procs.append(self.harness(fleet_file, self.workdir / tag, self.workdir / f"{tag}-{p}.log"))
        for p, proc in enumerate(procs):
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("ready"):
                log = (self.workdir / f"{tag}-{p}.log").read_text()[-3000:]
                raise RuntimeError(f"harness {p} of N={n} did not start ({line!r}):\n{log}")
        ready_s = time.monotonic() - started
        deadline = time.monotonic() + 600
        while self.settled(selector, n) < n and time.monotonic() < deadline:
            time.sleep(0.5)
        settled_s = time.monotonic() - started
        time.sleep(2.0)  # let the agents' first reconciles (and their ConfigMaps) finish
        rss_before = sum(rss_kib(p.pid) for p in procs)
        cpu_before = sum(cpu_seconds(p.pid) for p in procs)
        requests_before = request_counts(self.plane)
        t0 = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-m", "migkit", "rollout", "--selector", selector, "--config", config,
             "--max-unavailable", max_unavailable, "--timeout", "600", "--kubeconfig", self.admin_kubeconfig,
             "--namespace", NAMESPACE, "-o", "json"], capture_output=True, text=True, check=False)
        rollout_s = time.monotonic() - t0
        requests_after = request_counts(self.plane)
        cpu_after = sum(cpu_seconds(p.pid) for p in procs)
        rss_after = sum(rss_kib(p.pid) for p in procs)
        report = json.loads(out.stdout) if out.stdout.strip() else {"counts": {}, "api_requests": 0}
        apiserver_rss = rss_kib(self.plane.apiserver.pid) if self.plane.apiserver else 0
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
        for name in names:
            self.core.delete_node(name)
        delta = {k: requests_after.get(k, 0.0) - requests_before.get(k, 0.0) for k in requests_after}
        non_watch = sum(v for k, v in delta.items() if k != "WATCH")
        return {
            "nodes": n,
            "processes": self.processes,
            "wave_size": report.get("wave_size"),
            "waves": len(report.get("waves") or []),
            "exit_code": out.returncode,
            "success": report["counts"].get("success", 0),
            "agents_ready_s": round(ready_s, 2),
            "agents_settled_s": round(settled_s, 2),
            "rollout_s": round(rollout_s, 2),
            "api_requests_by_verb": {k: v for k, v in sorted(delta.items()) if v},
            "api_requests_per_node": round(non_watch / n, 2),
            "watch_requests_per_node": round(delta.get("WATCH", 0.0) / n, 2),
            "rollout_requests_per_node": round(report.get("api_requests", 0) / n, 2),
            "agent_rss_per_node_kib": round((rss_after - baseline * self.processes) / n),
            "agent_idle_rss_per_node_kib": round((rss_before - baseline * self.processes) / n),
            "harness_rss_total_mib": round(rss_after / 1024, 1),
            "harness_rss_before_mib": round(rss_before / 1024, 1),
            "agent_cpu_s_per_node": round((cpu_after - cpu_before) / n, 3),
            "apiserver_rss_mib": round(apiserver_rss / 1024, 1),
            "stderr_tail": out.stderr[-500:],
        }

    def close(self) -> None:
        self.plane.stop()


def table(rows: list[dict[str, Any]]) -> str:
    head = ("N", "waves", "rollout s", "s/node", "API req/node", "of which rollout", "agent RSS/node idle",
            "after", "agent CPU s/node", "apiserver RSS", "success")
    body = [(str(r["nodes"]), f"{r['waves']}x{r['wave_size']}", f"{r['rollout_s']:.1f}",
             f"{r['rollout_s'] / r['nodes']:.2f}", f"{r['api_requests_per_node']:.1f}",
             f"{r['rollout_requests_per_node']:.1f}", f"{r['agent_idle_rss_per_node_kib'] / 1024:.2f} MiB",
             f"{r['agent_rss_per_node_kib'] / 1024:.2f} MiB",
             f"{r['agent_cpu_s_per_node']:.3f}", f"{r['apiserver_rss_mib']:.0f} MiB",
             f"{r['success']}/{r['nodes']}") for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in [head, *body]]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="10,50,100,200", help="fleet sizes, comma separated")
    parser.add_argument("--processes", type=int, default=2, help="harness processes sharing the agents")
    parser.add_argument("--config", default="all-balanced")
    parser.add_argument("--max-unavailable", default="25%")
    args = parser.parse_args()
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets:
        skip("KUBEBUILDER_ASSETS is not set (export KUBEBUILDER_ASSETS=$(../shared/k8s/assets))")
        return 0
    sizes = [int(s) for s in args.nodes.split(",") if s]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        bench = Bench(assets, pathlib.Path(tmp), args.processes)
        try:
            baseline = bench.baseline_rss()
            for n in sizes:
                print(f"== N={n}", flush=True)
                row = bench.run(n, args.config, args.max_unavailable, baseline)
                print(json.dumps({k: v for k, v in row.items() if k != "stderr_tail"}), flush=True)
                rows.append(row)
        finally:
            bench.close()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fleet.json").write_text(json.dumps({"config": args.config, "max_unavailable": args.max_unavailable,
                                                    "harness_baseline_rss_kib": baseline, "rows": rows},
                                                   indent=2) + "\n")
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
