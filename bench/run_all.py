"""Run every migkit benchmark side by side and print one table of ratios.

    python bench/run_all.py [--quick]

Each benchmark is a script in this folder that writes its raw numbers as JSON under
``bench/results/``; this runner runs them in turn (one process each, so none warms another's
caches), then reads the JSON and prints the claims as ratios. Absolute times depend on the
machine; the ratios are what the goals are about. Nothing here asserts anything.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"

BENCHMARKS = {
    "snapshot": ("bench_snapshot.py", [], ["--reps", "100", "--rounds", "2"]),
    "solver": ("bench_solver.py", [], []),
    "apply": ("bench_apply.py", [], ["--repeat", "1"]),
    "cli": ("bench_cli.py", [], ["--repeat", "5"]),
    "config": ("bench_config.py", [], ["--repeat", "1"]),
    # skips itself, with a line saying why, where nvidia-mig-parted or root is missing
    "peer": ("bench_peer.py", [], ["--steps", "2", "--repeat", "1"]),
    # needs a control plane (KUBEBUILDER_ASSETS); without one it records why and is skipped
    "fleet": ("bench_fleet.py", [], ["--nodes", "10,50"]),
}


def run_benchmarks(quick: bool) -> dict[str, float]:
    durations = {}
    for name, (script, args, quick_args) in BENCHMARKS.items():
        print(f"== {name}: python bench/{script}", flush=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, str(HERE / script), *(quick_args if quick else args)], check=True)
        durations[name] = time.perf_counter() - start
    return durations


def load(name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((RESULTS / f"{name}.json").read_text())
    return data


def rows() -> list[tuple[str, str, str, str]]:
    snap, solver, apply_, cli = load("snapshot"), load("solver"), load("apply"), load("cli")
    config_rows = {row["megabytes"]: row for row in load("config")["rows"]}  # type: ignore[attr-defined]
    biggest = config_rows[max(config_rows)]
    smallest = config_rows[min(config_rows)]
    per_mb = "/".join(f"{config_rows[mb]['migkit_s_per_mb']:.2f}" for mb in sorted(config_rows))
    ratios = snap["ratios"]  # type: ignore[index]
    s = solver["solve"]["first pass"]  # type: ignore[index]
    reconf = solver["reconfigurations"]  # type: ignore[index]
    med = statistics.median

    def ok(flag: bool) -> str:
        return "yes" if flag else "NO"

    fast = ratios["pynvml_over_migkit_warm_median"]  # type: ignore[index]
    cold = ratios["pynvml_over_migkit_cold_median"]  # type: ignore[index]
    closs = ratios["migkit_warm_over_c_loop_median"]  # type: ignore[index]
    closs_cold = ratios["migkit_cold_over_c_loop_median"]  # type: ignore[index]
    return [
        (
            "snapshot, 8 partitioned GPUs, repeated reads: nvidia-ml-py / migkit",
            f"{fast:.1f}x",
            ">= 10x",
            ok(fast >= 10),
        ),
        ("snapshot, first read in a process: nvidia-ml-py / migkit", f"{cold:.1f}x", ">= 10x", ok(cold >= 10)),
        (
            "snapshot, repeated reads: migkit / plain C loop of the same calls",
            f"{closs:.2f}x",
            "<= 1.5x",
            ok(closs <= 1.5),
        ),
        (
            "snapshot, first read in a process: migkit / plain C loop",
            f"{closs_cold:.2f}x",
            "<= 1.5x",
            ok(closs_cold <= 1.5),
        ),
        (
            f"solver: all {solver['requests']} count combinations on h100-80gb, total",  # type: ignore[index]
            f"{s['total_s'] * 1000:.0f} ms",
            "-",
            "-",
        ),
        (
            "solver: p99 per solve (pure Python)",
            f"{s['p99_us'] / 1000:.3f} ms",
            "< 1 ms",
            ok(s["p99_us"] < 1000),
        ),
        (
            "reconfiguration: plans destroying the oracle's minimum",
            f"{reconf['equal_to_oracle']}/{reconf['runs']} ({reconf['equal_pct']:.1f}%)",
            "100%",
            ok(reconf["equal_pct"] == 100.0),
        ),
        (
            f"apply all-balanced, {apply_['latency_ms']} ms/NVML call: 8 GPUs / 1 GPU",
            f"{apply_['ratio_8_vs_1']:.2f}x",
            "<= 1.3x",
            ok(apply_["ratio_8_vs_1"] <= 1.3),
        ),  # type: ignore[operator]
        (
            "CLI start-up: migkit --version / bare python",
            f"{cli['version_over_bare']:.2f}x ({med(cli['version_s']) * 1000:.0f} ms)",
            "lazy import",  # type: ignore[arg-type]
            ok(not cli["modules_loaded_by_version"]),
        ),
        *peer_rows(),
        (
            "CLI start-up: migkit assert on 8 simulated GPUs / bare python",
            f"{cli['assert_over_bare']:.2f}x ({med(cli['assert_8_gpus_s']) * 1000:.0f} ms)",
            "-",
            "-",
        ),  # type: ignore[arg-type]
        (
            f"config load, {biggest['megabytes']:g} MB: migkit / PyYAML CSafeLoader",
            f"{biggest['ratio']:.2f}x ({biggest['migkit_s']:.1f} s)",
            "<= 1.5x",
            ok(biggest["ratio"] <= 1.5),
        ),
        (
            f"config load, s/MB at {'/'.join(f'{mb:g}' for mb in sorted(config_rows))} MB (linear)",
            per_mb,
            "flat (<= 2x)",
            ok(biggest["migkit_s_per_mb"] <= 2 * smallest["migkit_s_per_mb"]),
        ),
    ]


def peer_rows() -> list[tuple[str, str, str, str]]:
    """migkit against nvidia-mig-parted (bench_peer.py), or the line saying why it was skipped."""
    peer = load("peer")
    if "skipped" in peer:
        return [("migkit vs nvidia-mig-parted, 8 simulated H100s", f"skipped: {peer['skipped']}", "-", "-")]
    steps: list[dict[str, Any]] = peer["steps"]  # type: ignore[assignment]
    wall = [r["migkit"]["wall_ms"] / r["mig-parted"]["wall_ms"] for r in steps]
    noop = [r for r in steps if r["migkit"]["mutating"] == 0 and r["mig-parted"]["mutating"] == 0]
    cheaper = sum(r["migkit"]["reads_ms"] <= r["mig-parted"]["reads_ms"] for r in noop)
    snap: dict[str, Any] = peer["snapshots"]  # type: ignore[assignment]
    repeat_ms = snap["1xh100 repeated"][1]
    return [
        (
            f"migkit / nvidia-mig-parted wall time, {len(steps)} commands on 8 H100s ({peer['latency_model']}), worst",
            f"{max(wall):.2f}x",
            "<= 0.5x",
            "yes" if max(wall) <= 0.5 else "NO",
        ),
        (
            "NVML read time, commands that change nothing: migkit <= nvidia-mig-parted",
            f"{cheaper}/{len(noop)}",
            "all",
            "yes" if cheaper == len(noop) else "NO",
        ),
        (
            f"repeated snapshot of one H100 ({peer['latency_model']})",
            f"{repeat_ms:.3f} ms",
            "<= 1 ms",
            "yes" if repeat_ms <= 1 else "NO",
        ),
    ]


def fleet_rows() -> list[tuple[str, str, str, str]]:
    """The fleet benchmark's rows: the largest N run, and how time, requests and memory grow."""
    path = RESULTS / "fleet.json"
    if not path.exists():
        return [("fleet: rollout across simulated nodes", "not run", "-", "-")]
    data = load("fleet")
    if "skipped" in data:
        return [("fleet: rollout across simulated nodes", f"skipped: {data['skipped']}", "-", "-")]
    runs: list[dict[str, Any]] = data["rows"]  # type: ignore[assignment]
    if not runs:
        return []
    big, small = runs[-1], runs[0]
    n, n0 = big["nodes"], small["nodes"]
    return [
        (f"fleet: rollout to all success, {n} nodes ({big['waves']} waves)",
         f"{big['rollout_s']:.1f} s, {big['success']}/{n} success", ">= 200 nodes", "yes" if n >= 200 and
         big["success"] == n else "NO"),
        (f"fleet: API requests per node per reconfiguration, N={n0} -> {n}",
         f"{small['api_requests_per_node']:.1f} -> {big['api_requests_per_node']:.1f}", "flat in N", "-"),
        (f"fleet: agent memory per node (threads), N={n0} -> {n}",
         f"{small['agent_rss_per_node_kib'] / 1024:.1f} -> {big['agent_rss_per_node_kib'] / 1024:.1f} MiB", "-",
         "-"),
    ]


def render(table: list[tuple[str, str, str, str]]) -> str:
    head = ("benchmark", "measured", "goal", "met")
    widths = [max(len(r[i]) for r in [head, *table]) for i in range(4)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=False)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + " |" for r in table]
    return "\n".join([line, sep, *body])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--table-only", action="store_true", help="only print the table from bench/results/")
    args = parser.parse_args()
    if not args.table_only:
        durations = run_benchmarks(args.quick)
        summary = {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "benchmark_seconds": durations,
            "rows": rows() + fleet_rows(),
        }
        (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print()
    print(render(rows() + fleet_rows()))


if __name__ == "__main__":
    main()
