"""migkit against NVIDIA's nvidia-mig-parted on the same simulated 8xH100 node, side by side.

    python bench/bench_peer.py [--steps N] [--repeat N]

Both tools run as the user runs them, one process per command, on their own fresh simulated
node, over the same sequence of configs (each followed by an ``assert`` of it):

    all-disabled -> all-balanced -> {3g.40gb: 1, 1g.10gb: 4} -> all-1g.10gb -> all-3g.40gb
    -> all-balanced

The simulator runs with its latency model (``MIGKIT_SIM_LATENCY=hopper-580``): every NVML call
takes the time it took on a real H100/H200 with driver 580, reads included, calls on one GPU
taking turns. For every command: the exit code, the NVML calls (reads and mutating, from the
simulator's per-function counts), the GPU instances destroyed, the wall time, and the time the
model charged for reads and for opening and closing NVML. Mutating calls were never measured
on real GPUs and cost nothing here; both tools are charged alike. Writes
``bench/results/peer.json``; prints the table and the ratios. Asserts nothing.

Needs ``../shared/peers/nvidia-mig-parted`` and ``fakehost`` (root, for its mount namespace);
prints one line saying why and exits 0 when they are not there.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared"
PEERS = SHARED / "peers"
RESULTS = HERE / "results"

SPEC = "8xh100-80gb"
CONFIG = """\
version: v1
mig-configs:
  all-disabled:
  - devices: all
    mig-enabled: false
  all-balanced:
  - devices: all
    mig-enabled: true
    mig-devices:
      1g.10gb: 2
      2g.20gb: 1
      3g.40gb: 1
  custom-3g-4x1g:
  - devices: all
    mig-enabled: true
    mig-devices:
      3g.40gb: 1
      1g.10gb: 4
  all-1g.10gb:
  - devices: all
    mig-enabled: true
    mig-devices:
      1g.10gb: 7
  all-3g.40gb:
  - devices: all
    mig-enabled: true
    mig-devices:
      3g.40gb: 2
"""
SEQUENCE = ("all-disabled", "all-balanced", "custom-3g-4x1g", "all-1g.10gb", "all-3g.40gb", "all-balanced")

MUTATING = frozenset(
    {
        "nvmlDeviceSetMigMode",
        "nvmlDeviceCreateGpuInstance",
        "nvmlDeviceCreateGpuInstanceWithPlacement",
        "nvmlGpuInstanceDestroy",
        "nvmlGpuInstanceCreateComputeInstance",
        "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
        "nvmlComputeInstanceDestroy",
    }
)
NVML_OPEN_CLOSE = frozenset({"nvmlInit", "nvmlInit_v2", "nvmlInitWithFlags", "nvmlShutdown"})

LATENCY = "hopper-580"


def nvml_time(charged: dict[str, int]) -> dict[str, float]:
    """Charged milliseconds of one command: its reads, and opening and closing NVML."""
    reads = sum(ns for name, ns in charged.items() if name not in MUTATING and name not in NVML_OPEN_CLOSE)
    open_close = sum(ns for name, ns in charged.items() if name in NVML_OPEN_CLOSE)
    return {"reads_ms": reads / 1e6, "open_close_ms": open_close / 1e6}


def stats(state: str) -> dict[str, int]:
    from migkit import simulator

    return simulator.stats(state)


def charged(state: str) -> dict[str, int]:
    from migkit import simulator

    return simulator.charged(state)


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


class Tool:
    """One CLI and how to run it against a state file."""

    def __init__(self, name: str, workdir: pathlib.Path) -> None:
        self.name = name
        self.state = str(workdir / f"{name}.state")
        self.workdir = workdir
        self.config = str(workdir / "config.yaml")

    def command(self, verb: str, config: str) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def run(self, verb: str, config: str) -> dict[str, Any]:
        argv, env = self.command(verb, config)
        env = {**env, "MIGKIT_SIM_LATENCY": LATENCY}
        env.pop("MIGKIT_SIM_FAULTS", None)
        before, before_ns = stats(self.state), charged(self.state)
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        calls = _delta(stats(self.state), before)
        return {
            **nvml_time(_delta(charged(self.state), before_ns)),
            "exit": proc.returncode,
            "wall_ms": wall * 1000,
            "calls": calls,
            "reads": sum(n for k, n in calls.items() if k not in MUTATING and k not in NVML_OPEN_CLOSE),
            "mutating": sum(n for k, n in calls.items() if k in MUTATING),
            "gi_destroyed": calls.get("nvmlGpuInstanceDestroy", 0),
            "output": (proc.stdout + proc.stderr)[-2000:],
        }


class Migkit(Tool):
    def command(self, verb: str, config: str) -> tuple[list[str], dict[str, str]]:
        env = {**os.environ, "MIGKIT_SIM_STATE": self.state}
        argv = [sys.executable, "-m", "migkit", "--sim-state", self.state, verb, "-f", self.config, "-c", config]
        return argv, env


class MigParted(Tool):
    def __init__(self, name: str, workdir: pathlib.Path, library: str) -> None:
        super().__init__(name, workdir)
        self.libdir = workdir / "nvml"
        self.libdir.mkdir(exist_ok=True)
        link = self.libdir / "libnvidia-ml.so.1"
        if not link.exists():
            link.symlink_to(library)

    def command(self, verb: str, config: str) -> tuple[list[str], dict[str, str]]:
        env = {
            **os.environ,
            "MIGKIT_SIM_STATE": self.state,
            "LD_LIBRARY_PATH": str(self.libdir),
            "PATH": f"{PEERS / 'bin'}:{os.environ.get('PATH', '')}",
            "MIGKIT_PY": sys.executable,
        }
        argv = [
            str(PEERS / "fakehost"),
            self.state,
            str(PEERS / "nvidia-mig-parted"),
            verb,
            "-f",
            self.config,
            "-c",
            config,
        ]
        return argv, env


def missing_peer() -> str | None:
    for path in (PEERS / "nvidia-mig-parted", PEERS / "fakehost"):
        if not os.access(path, os.X_OK):
            return f"{path.relative_to(ROOT.parent)} not found or not executable"
    if os.geteuid() != 0:
        return "fakehost needs root (a private mount namespace)"
    return None


def _snapshot_run(spec: str, reads: Sequence[bool], repeat: int = 1) -> dict[str, Any]:
    """NVML opened once on a fresh ``spec`` node under the latency model, taking snapshots (the
    ``tables`` flag of each; the last one ``repeat`` times): its NVML calls, the read time
    charged, and the wall time of each of the last snapshots."""
    from migkit import open_node, simulator

    previous = os.environ.get("MIGKIT_SIM_LATENCY")
    os.environ["MIGKIT_SIM_LATENCY"] = LATENCY
    try:
        with tempfile.TemporaryDirectory() as tmp:
            state = simulator.write_state(os.path.join(tmp, "node.state"), spec)
            times = []
            with open_node(sim_state=state) as node:
                for tables in reads[:-1]:
                    node.snapshot(tables=tables)
                for _ in range(repeat):
                    start = time.perf_counter()
                    node.snapshot(tables=reads[-1])
                    times.append((time.perf_counter() - start) * 1000)
            calls = {k: n for k, n in stats(state).items() if k not in NVML_OPEN_CLOSE}
            reads_ms = nvml_time(charged(state))["reads_ms"]
    finally:
        if previous is None:
            os.environ.pop("MIGKIT_SIM_LATENCY", None)
        else:
            os.environ["MIGKIT_SIM_LATENCY"] = previous
    return {"calls": sum(calls.values()), "reads_ms": reads_ms, "wall_ms": times}


def snapshots() -> dict[str, Any]:
    """Snapshots under the latency model: one H100 read again and again while NVML stays open, and 8
    H100s read the ways an operation can (first full read, first mode-only read, again)."""
    one = _snapshot_run("1xh100-80gb", [True])
    again = _snapshot_run("1xh100-80gb", [True, True], repeat=51)
    eight = _snapshot_run(SPEC, [True])
    eight_mode = _snapshot_run(SPEC, [False])
    eight_twice = _snapshot_run(SPEC, [True, True])
    return {
        "1xh100 first": [one["calls"], one["wall_ms"][0]],
        "1xh100 repeated": [(again["calls"] - one["calls"]) / 51, statistics.median(again["wall_ms"])],
        "8xh100 first": [eight["calls"], eight["wall_ms"][0]],
        "8xh100 first, tables=False": [eight_mode["calls"], eight_mode["wall_ms"][0]],
        "8xh100 repeated": [eight_twice["calls"] - eight["calls"], eight_twice["wall_ms"][0]],
    }


def run_sequence(steps: Sequence[str]) -> tuple[list[dict[str, Any]], bool]:
    """Both tools over ``steps`` from fresh nodes: a row per command, and whether the two
    nodes export the same config at the end."""
    from migkit import simulator

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        (work / "config.yaml").write_text(CONFIG)
        tools: list[Tool] = [Migkit("migkit", work), MigParted("mig-parted", work, simulator.library_path())]
        for tool in tools:
            simulator.write_state(tool.state, SPEC)
        for config in steps:
            for verb in ("apply", "assert"):
                row: dict[str, Any] = {"step": f"{verb} {config}"}
                for tool in tools:
                    row[tool.name] = tool.run(verb, config)
                rows.append(row)
        exports = [
            subprocess.run(
                [sys.executable, "-m", "migkit", "--sim-state", tool.state, "export"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            for tool in tools
        ]
    return rows, exports[0] == exports[1]


def run(steps: Sequence[str], repeat: int) -> dict[str, Any]:
    """The sequence ``repeat`` times; each command keeps its shortest wall time (the machine
    is shared, and a slow run says more about it than about the tool)."""
    rows, identical = run_sequence(steps)
    for _ in range(repeat - 1):
        again, same = run_sequence(steps)
        identical = identical and same
        for row, other in zip(rows, again, strict=True):
            for tool in ("migkit", "mig-parted"):
                row[tool]["wall_ms"] = min(row[tool]["wall_ms"], other[tool]["wall_ms"])
    return {
        "latency_model": LATENCY,
        "repeat": repeat,
        "steps": rows,
        "export_identical": identical,
        "snapshots": snapshots(),
    }


def table(data: dict[str, Any]) -> str:
    head = (
        "command",
        "exit k/p",
        "reads k/p",
        "mutating k/p",
        "GIs destroyed k/p",
        "wall ms k/p",
        "wall k/p",
        "read ms k/p",
        "read k/p",
        "init+shutdown ms k/p",
    )
    lines = []
    for row in data["steps"]:
        k, p = row["migkit"], row["mig-parted"]
        lines.append(
            (
                row["step"],
                f"{k['exit']}/{p['exit']}",
                f"{k['reads']}/{p['reads']}",
                f"{k['mutating']}/{p['mutating']}",
                f"{k['gi_destroyed']}/{p['gi_destroyed']}",
                f"{k['wall_ms']:.0f}/{p['wall_ms']:.0f}",
                f"{k['wall_ms'] / p['wall_ms']:.2f}x",
                f"{k['reads_ms']:.1f}/{p['reads_ms']:.1f}",
                f"{k['reads_ms'] / p['reads_ms']:.2f}x" if p["reads_ms"] else "-",
                f"{k['open_close_ms']:.0f}/{p['open_close_ms']:.0f}",
            )
        )
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    fmt = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt.format(*head), sep, *(fmt.format(*r) for r in lines)])


def summary(data: dict[str, Any]) -> list[str]:
    steps = data["steps"]
    wall = [r["migkit"]["wall_ms"] / r["mig-parted"]["wall_ms"] for r in steps]
    noop = [r for r in steps if r["migkit"]["mutating"] == 0 and r["mig-parted"]["mutating"] == 0]
    noop_reads = [r["migkit"]["reads_ms"] <= r["mig-parted"]["reads_ms"] for r in noop]
    snap = data["snapshots"]
    repeat_ms = snap["1xh100 repeated"][1]
    return [
        f"wall time migkit / mig-parted: worst {max(wall):.2f}x, median {statistics.median(wall):.2f}x"
        f" (goal <= 0.5x on every command: {'yes' if max(wall) <= 0.5 else 'NO'})",
        f"NVML read time on the {len(noop)} commands where neither tool changed anything: migkit <= mig-parted on"
        f" {sum(noop_reads)}/{len(noop)} (goal: all)",
        f"repeated snapshot of one H100: {snap['1xh100 repeated'][0]:.0f} NVML calls, {repeat_ms:.3f} ms"
        f" (median of 51; goal <= 1 ms: {'yes' if repeat_ms <= 1 else 'NO'})",
        *(
            f"snapshot, {name}: {snap[name][0]:.0f} NVML calls, {snap[name][1]:.1f} ms"
            for name in ("1xh100 first", "8xh100 first", "8xh100 first, tables=False", "8xh100 repeated")
        ),
        f"export after the sequence identical: {data['export_identical']}",
        f"all exits 0: {all(r[t]['exit'] == 0 for r in steps for t in ('migkit', 'mig-parted'))}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=len(SEQUENCE), help="run the first N configs only")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the sequence; the best wall time counts")
    args = parser.parse_args()
    why = missing_peer()
    RESULTS.mkdir(exist_ok=True)
    if why is not None:
        print(f"bench_peer: skipped: {why}")
        (RESULTS / "peer.json").write_text(json.dumps({"skipped": why}) + "\n")
        return
    sys.path.insert(0, str(ROOT / "src"))
    data = run(SEQUENCE[: args.steps], max(args.repeat, 1))
    (RESULTS / "peer.json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"k = migkit, p = nvidia-mig-parted; simulator latency model {LATENCY} (reads as on a real H100,")
    print(f"mutating calls free for both); read ms = time the model charged for reads; wall = best of {data['repeat']}")
    print(table(data))
    for line in summary(data):
        print(line)


if __name__ == "__main__":
    main()
