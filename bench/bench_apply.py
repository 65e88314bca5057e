"""Parallel apply speed-up under simulated NVML latency.

Applies all-balanced from MIG-disabled on a simulated node of 1 and of 8 H100s, with every
mutating NVML call delayed by ``MIGKIT_SIM_LATENCY_MS`` (default 100 ms), and prints the
ratio of the two wall times. GPUs are changed in parallel threads, so the goal is a ratio of
at most 1.3. Raw numbers go to ``bench/results/apply.json``.

    python bench/bench_apply.py [--latency-ms 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import tempfile
import time

import migkit
from migkit import simulator
from migkit.config import parse_config

CONFIG = """\
version: v1
mig-configs:
  all-balanced:
    - devices: all
      mig-enabled: true
      mig-devices: {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}
"""
RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def apply_once(gpus: int, directory: str) -> tuple[float, dict[str, int]]:
    state = simulator.write_state(os.path.join(directory, f"n{gpus}.state"), f"{gpus}xh100-80gb")
    config = parse_config(CONFIG)
    with migkit.open_node(sim_state=state) as node:
        start = time.perf_counter()
        report = migkit.apply(node, config, "all-balanced")
        elapsed = time.perf_counter() - start
    if not report.ok:
        raise SystemExit(f"apply failed on {gpus} GPUs:\n{report.summary()}")
    return elapsed, simulator.stats(state)


def run(latency_ms: int, repeat: int) -> dict[str, object]:
    os.environ["MIGKIT_SIM_LATENCY_MS"] = str(latency_ms)
    times: dict[int, list[float]] = {1: [], 8: []}
    calls: dict[int, int] = {}
    try:
        with tempfile.TemporaryDirectory() as directory:
            for _ in range(repeat):
                for gpus in (1, 8):
                    elapsed, stats = apply_once(gpus, directory)
                    times[gpus].append(elapsed)
                    calls[gpus] = sum(
                        stats.get(f, 0)
                        for f in (
                            "nvmlDeviceSetMigMode",
                            "nvmlDeviceCreateGpuInstanceWithPlacement",
                            "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
                        )
                    )
    finally:
        os.environ.pop("MIGKIT_SIM_LATENCY_MS", None)
    one, eight = statistics.median(times[1]), statistics.median(times[8])
    return {
        "latency_ms": latency_ms,
        "repeat": repeat,
        "seconds_1_gpu": times[1],
        "seconds_8_gpus": times[8],
        "mutating_calls_1_gpu": calls[1],
        "mutating_calls_8_gpus": calls[8],
        "ratio_8_vs_1": eight / one,
        "goal": "<= 1.3",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    result = run(args.latency_ms, args.repeat)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "apply.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"apply all-balanced from MIG disabled, {args.latency_ms} ms per mutating NVML call")
    print(
        f"  1 GPU : {statistics.median(result['seconds_1_gpu']):.3f} s "  # type: ignore[arg-type]
        f"({result['mutating_calls_1_gpu']} mutating calls)"
    )
    print(
        f"  8 GPUs: {statistics.median(result['seconds_8_gpus']):.3f} s "  # type: ignore[arg-type]
        f"({result['mutating_calls_8_gpus']} mutating calls)"
    )
    print(f"  ratio 8/1: {result['ratio_8_vs_1']:.2f}  (goal <= 1.3)")


if __name__ == "__main__":
    main()
