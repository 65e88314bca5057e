"""migkit against NVIDIA's nvidia-mig-parted on the same simulated 8xH100 node, side by side.

    python bench/bench_peer.py [--steps N]

Both tools run as the user runs them, one process per command, on their own fresh simulated
node, over the same sequence of configs (each followed by an ``assert`` of it):

    all-disabled -> all-balanced -> {3g.40gb: 1, 1g.10gb: 4} -> all-1g.10gb -> all-3g.40gb
    -> all-balanced

For every command: the exit code, the NVML calls (reads and mutating, from the simulator's
per-function counts), the GPU instances destroyed, the wall time, and the NVML read time priced
with the per-call costs captured on real GPUs (driver 580, ``../shared/reference/captures/``).
The simulator answers in microseconds, so its wall time alone hides what reads cost on real
hardware; "estimated" adds the priced reads and NVML sessions to the measured wall time.
Writes ``bench/results/peer.json``; prints the table and the ratios. Asserts nothing.

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
CAPTURES = SHARED / "reference" / "captures"
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
SESSION = frozenset({"nvmlInit", "nvmlInit_v2", "nvmlInitWithFlags", "nvmlShutdown"})

# Costs of reads nobody has captured yet (µs), each by analogy with a captured call: a call that
# asks the driver about MIG objects costs like its captured relative, a pure handle or id
# lookup like the captured identity reads. Printed with the table so nobody takes them for data.
ASSUMED_US: dict[str, tuple[float, str]] = {
    "nvmlGpuInstanceGetInfo": (10.0, "like GetMigDeviceHandleByIndex"),
    "nvmlComputeInstanceGetInfo_v2": (10.0, "like GetMigDeviceHandleByIndex"),
    "nvmlGpuInstanceGetComputeInstanceProfileInfo": (300.0, "like GetGpuInstanceProfileInfoByIdV"),
    "nvmlGpuInstanceGetComputeInstanceProfileInfoV": (300.0, "like GetGpuInstanceProfileInfoByIdV"),
    "nvmlGpuInstanceGetComputeInstancePossiblePlacements": (200.0, "like the GI placements"),
    "nvmlGpuInstanceGetComputeInstances": (280.0, "like GetGpuInstances"),
    "nvmlGpuInstanceGetComputeInstanceRemainingCapacity": (185.0, "like the GI remaining capacity"),
    "nvmlDeviceGetGpuInstanceById": (280.0, "like GetGpuInstances"),
    "nvmlGpuInstanceGetComputeInstanceById": (280.0, "like GetGpuInstances"),
    "nvmlDeviceGetGpuInstanceId": (2.0, "like IsMigDeviceHandle"),
    "nvmlDeviceGetComputeInstanceId": (2.0, "like IsMigDeviceHandle"),
    "nvmlDeviceGetDeviceHandleFromMigDeviceHandle": (2.0, "like IsMigDeviceHandle"),
    "nvmlDeviceGetMaxMigDeviceCount": (135.0, "captured on H200 only"),
}
DEFAULT_US = 100.0  # any other read: flagged in the output


def read_prices() -> tuple[dict[str, float], dict[str, str], dict[str, float]]:
    """Per-function read cost (µs) from the captures, where each came from, and session costs."""
    h100 = json.loads((CAPTURES / "h100-80gb-580.159.04" / "pynvml.json").read_text())["latency"]
    more = json.loads((CAPTURES / "h200-141gb-580.159.04" / "latency-more.json").read_text())
    lat = more["latency"]

    def med(prefix: str) -> float:
        values = [v["median_us"] for k, v in lat.items() if k.startswith(prefix)]
        return statistics.mean(values)

    # mig-parted reads profiles index by index too, so a profile read is priced as the mean
    # over a whole index sweep (supported ~505 µs, unsupported ~160, past the end ~5)
    sweep = med("ProfileInfoV index")
    prices = {
        "nvmlDeviceGetCount_v2": h100["nvmlDeviceGetCount"]["median_us"],
        "nvmlDeviceGetHandleByIndex_v2": h100["nvmlDeviceGetHandleByIndex"]["median_us"],
        "nvmlDeviceGetName": h100["nvmlDeviceGetName"]["median_us"],
        "nvmlDeviceGetUUID": h100["nvmlDeviceGetUUID"]["median_us"],
        "nvmlDeviceGetPciInfo_v3": h100["nvmlDeviceGetPciInfo"]["median_us"],
        "nvmlDeviceGetMemoryInfo": h100["nvmlDeviceGetMemoryInfo"]["median_us"],
        "nvmlDeviceGetArchitecture": h100["nvmlDeviceGetArchitecture"]["median_us"],
        "nvmlDeviceGetMigMode": h100["nvmlDeviceGetMigMode"]["median_us"],
        "nvmlDeviceGetGpuInstanceProfileInfoV": sweep,
        "nvmlDeviceGetGpuInstanceProfileInfo": sweep,
        "nvmlDeviceGetGpuInstanceProfileInfoByIdV": med("ProfileInfoByIdV"),
        "nvmlDeviceGetGpuInstancePossiblePlacements_v2": h100["nvmlDeviceGetGpuInstancePossiblePlacements(count)"][
            "median_us"
        ],
        "nvmlDeviceGetGpuInstanceRemainingCapacity": med("GetRemainingCapacity"),
        "nvmlDeviceGetGpuInstances": med("GetGpuInstances"),
        "nvmlDeviceGetMaxMigDeviceCount": med("GetMaxMigDeviceCount"),
        "nvmlDeviceGetMigDeviceHandleByIndex": med("GetMigDeviceHandleByIndex"),
        "nvmlDeviceGetHandleByPciBusId_v2": med("GetHandleByPciBusId"),
        "nvmlDeviceGetHandleByUUID": med("GetHandleByUUID"),
        "nvmlDeviceGetComputeRunningProcesses_v3": med("GetComputeRunningProcesses"),
        "nvmlDeviceIsMigDeviceHandle": med("IsMigDeviceHandle"),
        "nvmlSystemGetNVMLVersion": med("SystemGetNVMLVersion"),
        "nvmlDeviceGetAttributes_v2": med("GetAttributes"),
    }
    source = {name: "captured" for name in prices}
    for name, (cost, why) in ASSUMED_US.items():
        if name not in prices:
            prices[name] = cost
            source[name] = f"assumed: {why}"
    session = {
        "first_init_us": more["nvmlInit_first_ms"] * 1000,
        "later_init_us": more["nvmlInit_second_ms"] * 1000,
        "shutdown_us": more["nvmlShutdown_ms"] * 1000,
    }
    return prices, source, session


def price(calls: dict[str, int], prices: dict[str, float], session: dict[str, float]) -> dict[str, Any]:
    """Priced NVML time of one command (one process): reads, and its NVML sessions."""
    reads_us = 0.0
    unpriced: dict[str, int] = {}
    for name, n in calls.items():
        if name in MUTATING or name in SESSION:
            continue
        if name not in prices:
            unpriced[name] = n
        reads_us += n * prices.get(name, DEFAULT_US)
    inits = sum(n for name, n in calls.items() if name.startswith("nvmlInit"))
    session_us = (
        (session["first_init_us"] + (inits - 1) * session["later_init_us"] if inits else 0.0)
        + calls.get("nvmlShutdown", 0) * session["shutdown_us"]
    )
    return {"reads_ms": reads_us / 1000, "session_ms": session_us / 1000, "unpriced": unpriced}


def stats(state: str) -> dict[str, int]:
    from migkit import simulator

    return simulator.stats(state)


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
        before = stats(self.state)
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        after = stats(self.state)
        calls = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
        return {
            "exit": proc.returncode,
            "wall_ms": wall * 1000,
            "calls": calls,
            "reads": sum(n for k, n in calls.items() if k not in MUTATING and k not in SESSION),
            "mutating": sum(n for k, n in calls.items() if k in MUTATING),
            "gi_destroyed": calls.get("nvmlGpuInstanceDestroy", 0),
            "output": (proc.stdout + proc.stderr)[-2000:],
        }


class Migkit(Tool):
    def command(self, verb: str, config: str) -> tuple[list[str], dict[str, str]]:
        env = {**os.environ, "MIGKIT_SIM_STATE": self.state}
        env.pop("MIGKIT_SIM_FAULTS", None)
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
        env.pop("MIGKIT_SIM_FAULTS", None)
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


def _snapshot_session(spec: str, reads: Sequence[bool], repeat: int = 1) -> tuple[dict[str, int], list[float]]:
    """NVML calls of one session on a fresh ``spec`` node taking snapshots (``tables`` flag per
    snapshot; the last one ``repeat`` times), and the measured time of each of the last ones."""
    from migkit import open_node, simulator

    with tempfile.TemporaryDirectory() as tmp:
        state = simulator.write_state(os.path.join(tmp, "node.state"), spec)
        before = stats(state)
        times = []
        with open_node(sim_state=state) as node:
            for tables in reads[:-1]:
                node.snapshot(tables=tables)
            for _ in range(repeat):
                start = time.perf_counter()
                node.snapshot(tables=reads[-1])
                times.append((time.perf_counter() - start) * 1000)
        after = stats(state)
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}, times


def snapshots(prices: dict[str, float], session: dict[str, float]) -> dict[str, Any]:
    """Priced snapshots: one H100 read twice in a session, and 8 H100s read the ways an
    operation can (first full read, first mode-only read, a repeated read)."""

    def priced(calls: dict[str, int]) -> tuple[int, float]:
        reads = {k: n for k, n in calls.items() if k not in SESSION}
        return sum(reads.values()), price(reads, prices, session)["reads_ms"]

    one, _ = _snapshot_session("1xh100-80gb", [True])
    one_twice, times = _snapshot_session("1xh100-80gb", [True, True], repeat=51)
    repeat = {k: (one_twice.get(k, 0) - one.get(k, 0)) // 51 for k in one_twice}
    out: dict[str, Any] = {
        "1xh100 first": priced(one),
        "1xh100 repeated": priced({k: n for k, n in repeat.items() if n}),
        "1xh100 repeated measured_ms": statistics.median(times),
    }
    eight_full, _ = _snapshot_session(SPEC, [True])
    eight_mode, _ = _snapshot_session(SPEC, [False])
    eight_twice, _ = _snapshot_session(SPEC, [True, True])
    out["8xh100 first"] = priced(eight_full)
    out["8xh100 first, tables=False"] = priced(eight_mode)
    out["8xh100 repeated"] = priced({k: eight_twice.get(k, 0) - eight_full.get(k, 0) for k in eight_twice})
    return out


def run(steps: Sequence[str]) -> dict[str, Any]:
    from migkit import simulator

    prices, source, session = read_prices()
    out: dict[str, Any] = {"latency_model": "captured medians priced in the benchmark", "steps": []}
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
                    result = tool.run(verb, config)
                    result.update(price(result["calls"], prices, session))
                    result["estimated_ms"] = result["wall_ms"] + result["reads_ms"] + result["session_ms"]
                    row[tool.name] = result
                out["steps"].append(row)
        out["export_identical"] = [
            subprocess.run(
                [sys.executable, "-m", "migkit", "--sim-state", tool.state, "export"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            for tool in tools
        ]
        out["export_identical"] = out["export_identical"][0] == out["export_identical"][1]
    out["snapshots"] = snapshots(prices, session)
    out["prices_us"] = {k: [round(v, 1), source[k]] for k, v in sorted(prices.items())}
    out["session_us"] = session
    return out


def table(data: dict[str, Any]) -> str:
    head = (
        "step",
        "exit k/p",
        "reads k/p",
        "mut k/p",
        "GI destroyed k/p",
        "wall ms k/p",
        "read ms k/p",
        "est. ms k/p",
        "est. k/p",
        "reads k/p ms",
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
                f"{k['reads_ms']:.1f}/{p['reads_ms']:.1f}",
                f"{k['estimated_ms']:.0f}/{p['estimated_ms']:.0f}",
                f"{k['estimated_ms'] / p['estimated_ms']:.2f}x",
                f"{k['reads_ms'] / p['reads_ms']:.2f}x" if p["reads_ms"] else "-",
            )
        )
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    fmt = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt.format(*head), sep, *(fmt.format(*r) for r in lines)])


def summary(data: dict[str, Any]) -> list[str]:
    steps = data["steps"]
    est = [r["migkit"]["estimated_ms"] / r["mig-parted"]["estimated_ms"] for r in steps]
    wall = [r["migkit"]["wall_ms"] / r["mig-parted"]["wall_ms"] for r in steps]
    noop = [r for r in steps if r["migkit"]["mutating"] == 0 and r["mig-parted"]["mutating"] == 0]
    noop_reads = [r["migkit"]["reads_ms"] <= r["mig-parted"]["reads_ms"] for r in noop]
    snap = data["snapshots"]
    calls, reads_ms = snap["1xh100 repeated"]
    measured = snap["1xh100 repeated measured_ms"]
    total = reads_ms + measured
    return [
        f"estimated time (wall + priced reads + NVML sessions) migkit / mig-parted: worst {max(est):.2f}x,"
        f" median {statistics.median(est):.2f}x (goal <= 0.5x on every step: {'yes' if max(est) <= 0.5 else 'NO'})",
        f"measured wall time on the simulator migkit / mig-parted: worst {max(wall):.2f}x,"
        f" median {statistics.median(wall):.2f}x",
        f"NVML read time on the {len(noop)} commands where neither tool changed anything: migkit <= mig-parted on"
        f" {sum(noop_reads)}/{len(noop)} (goal: all)",
        f"repeated snapshot of one H100: {calls} NVML calls priced {reads_ms:.3f} ms + {measured:.3f} ms measured"
        f" (median of 51, simulator included) = {total:.3f} ms (goal <= 1 ms: {'yes' if total <= 1 else 'NO'})",
        *(
            f"snapshot, {name}: {snap[name][0]} NVML calls, priced {snap[name][1]:.1f} ms"
            for name in ("1xh100 first", "8xh100 first", "8xh100 first, tables=False", "8xh100 repeated")
        ),
        f"export after the sequence identical: {data['export_identical']}",
        f"all exits 0: {all(r[t]['exit'] == 0 for r in steps for t in ('migkit', 'mig-parted'))}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=len(SEQUENCE), help="run the first N configs only")
    args = parser.parse_args()
    why = missing_peer()
    RESULTS.mkdir(exist_ok=True)
    if why is not None:
        print(f"bench_peer: skipped: {why}")
        (RESULTS / "peer.json").write_text(json.dumps({"skipped": why}) + "\n")
        return
    sys.path.insert(0, str(ROOT / "src"))
    data = run(SEQUENCE[: args.steps])
    (RESULTS / "peer.json").write_text(json.dumps(data, indent=2) + "\n")
    print("k = migkit, p = nvidia-mig-parted; read ms priced with captured per-call costs (driver 580)")
    print(table(data))
    for line in summary(data):
        print(line)
    assumed = sorted(
        {name for r in data["steps"] for t in ("migkit", "mig-parted") for name in r[t]["calls"]}
        & {k for k, (_, src) in data["prices_us"].items() if src.startswith("assumed")}
    )
    unpriced = sorted({n for r in data["steps"] for t in ("migkit", "mig-parted") for n in r[t]["unpriced"]})
    if assumed:
        print("priced by assumption (no capture yet):", ", ".join(assumed))
    if unpriced:
        print(f"priced at the default {DEFAULT_US:.0f} us:", ", ".join(unpriced))


if __name__ == "__main__":
    main()
