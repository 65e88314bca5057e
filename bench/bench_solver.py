"""Solver benchmark: speed over every request on h100-80gb, and disruption against brute force.

Part 1 solves every GI-level count combination within the instance caps on h100-80gb (all
seven profiles, ``1g.10gb+me`` included; feasible and infeasible alike) and reports the total
time and the p50/p99/max per solve, in three regimes measured side by side:

- ``first pass``: a fresh process, the per-model memo filling as it goes;
- ``warm``: the same requests again;
- ``no shared memo``: the memo emptied before every solve (each solve on its own).

A brute-force enumeration of the placement tables is timed on a sample for comparison.

Part 2 runs 1,000 random reconfigurations (seeded): a current layout drawn uniformly from all
legal layouts, and a desired feasible count map (half from another random layout, half a small
edit of the current one). The plan's number of destroyed GPU instances is compared with the
brute-force minimum. Results go to ``bench/results/solver.json``.

Run: ``python bench/bench_solver.py`` (from the repository root). Nothing here asserts a time.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import statistics
import sys
import time
from collections import Counter
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from migkit.config import ConfigEntry  # noqa: E402
from migkit.errors import InfeasibleError  # noqa: E402
from migkit.hardware import gpu_model  # noqa: E402
from migkit.models import GpuModel  # noqa: E402
from migkit.planning import solver  # noqa: E402
from migkit.planning.coverage import GpuCoverage  # noqa: E402
from migkit.planning.plan import plan_gpu  # noqa: E402
from migkit.planning.solver.compiled import compile_model  # noqa: E402
from strategies import (  # noqa: E402 - the shared oracles live with the tests
    feasible_gi_counts,
    layout_instances,
    legal_layouts,
    oracle_gi_feasible,
    oracle_max_kept,
)

MODEL = "h100-80gb"
RECONFIGURATIONS = 1000
SEED = 20240601


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def all_requests(model: GpuModel) -> list[dict[str, int]]:
    import itertools

    ranges = [range(p.instance_count + 1) for p in model.profiles]
    return [
        {p.name: c for p, c in zip(model.profiles, combo, strict=True) if c}
        for combo in itertools.product(*ranges)
    ]


def time_requests(
    model: GpuModel, requests: list[dict[str, int]], clear_memo: bool
) -> tuple[list[float], int, int]:
    """Per-solve seconds; also the feasible count and disagreements with brute force."""
    times: list[float] = []
    feasible = 0
    wrong = 0
    compiled = compile_model(model)
    for counts in requests:
        if clear_memo:
            compiled._memo.clear()
        start = time.perf_counter()
        try:
            solver.solve(model, counts)
            ok = True
        except InfeasibleError:
            ok = False
        times.append(time.perf_counter() - start)
        feasible += ok
        wrong += ok != oracle_gi_feasible(model.name, counts)
    return times, feasible, wrong


def summary(times: list[float]) -> dict[str, float]:
    return {
        "total_s": sum(times),
        "mean_us": statistics.fmean(times) * 1e6,
        "p50_us": percentile(times, 50) * 1e6,
        "p99_us": percentile(times, 99) * 1e6,
        "max_us": max(times) * 1e6,
    }


def brute_force_seconds(model: GpuModel, requests: list[dict[str, int]]) -> float:
    """Mean time to answer one request by enumerating every legal layout afresh."""
    sample = requests[:: max(1, len(requests) // 20)]
    start = time.perf_counter()
    for counts in sample:
        legal_layouts.cache_clear()
        feasible_gi_counts.cache_clear()
        oracle_gi_feasible(model.name, counts)
    return (time.perf_counter() - start) / len(sample)


def edit(rng: random.Random, model: GpuModel, counts: Counter[str]) -> dict[str, int]:
    """Add or remove one or two instances, keeping the result feasible."""
    names = [p.name for p in model.profiles]
    for _ in range(50):
        trial = Counter(counts)
        for _ in range(rng.randint(1, 2)):
            name = rng.choice(names)
            if trial[name] and rng.random() < 0.5:
                trial[name] -= 1
            else:
                trial[name] += 1
        result = {k: v for k, v in trial.items() if v}
        if result and oracle_gi_feasible(model.name, result):
            return result
    return dict(counts)


def reconfigurations(model: GpuModel) -> dict[str, Any]:
    rng = random.Random(SEED)
    layouts = legal_layouts(model.name)
    equal = 0
    destroyed_plan = 0
    destroyed_min = 0
    kept_total = 0
    existing_total = 0
    times: list[float] = []
    mismatches: list[dict[str, Any]] = []
    for _ in range(RECONFIGURATIONS):
        current = rng.choice(layouts)
        current_counts = Counter(name for name, _ in current)
        if rng.random() < 0.5:
            desired = dict(Counter(name for name, _ in rng.choice(layouts)))
        else:
            desired = edit(rng, model, current_counts)
        if not desired:
            desired = {model.profiles[0].name: 1}
        existing = layout_instances(model, current)
        entry = ConfigEntry(devices="all", mig_enabled=True, mig_devices=desired)
        coverage = GpuCoverage(0, "covered", entry, 0, (0,))
        start = time.perf_counter()
        plan = plan_gpu(model, coverage, mig_enabled=True, instances=existing)
        times.append(time.perf_counter() - start)
        best = oracle_max_kept(model.name, desired, current)
        assert best is not None
        minimum = len(current) - best
        got = len(plan.destroy_gpu_instances)
        destroyed_plan += got
        destroyed_min += minimum
        kept_total += len(plan.kept)
        existing_total += len(current)
        if got == minimum:
            equal += 1
        else:
            mismatches.append({"current": current, "desired": desired, "plan": got, "min": minimum})
    return {
        "model": model.name,
        "runs": RECONFIGURATIONS,
        "seed": SEED,
        "equal_to_oracle": equal,
        "equal_pct": 100.0 * equal / RECONFIGURATIONS,
        "destroyed_by_plans": destroyed_plan,
        "destroyed_minimum": destroyed_min,
        "kept": kept_total,
        "existing": existing_total,
        "plan_time": summary(times),
        "mismatches": mismatches[:20],
    }


def main() -> int:
    model = gpu_model(MODEL)
    requests = all_requests(model)
    first, feasible, wrong_first = time_requests(model, requests, clear_memo=False)
    warm, _, wrong_warm = time_requests(model, requests, clear_memo=False)
    isolated, _, wrong_isolated = time_requests(model, requests, clear_memo=True)
    brute = brute_force_seconds(model, requests)
    legal_layouts(model.name)  # refill the oracle cache for part 2
    regimes = {
        "first pass": summary(first),
        "warm": summary(warm),
        "no shared memo": summary(isolated),
    }

    print(f"Part 1: every GI-level request within the caps on {MODEL}")
    print(
        f"  {len(requests)} requests, {feasible} feasible, {len(requests) - feasible} infeasible;"
    )
    print(f"  disagreements with brute force: {wrong_first + wrong_warm + wrong_isolated}")
    print(f"  {'regime':<16}{'total':>10}{'p50':>10}{'p99':>10}{'max':>10}")
    for name, s in regimes.items():
        print(
            f"  {name:<16}{s['total_s']:>9.3f}s{s['p50_us']:>8.0f}us{s['p99_us']:>8.0f}us"
            f"{s['max_us']:>8.0f}us"
        )
    ratio = brute / (statistics.fmean(isolated))
    print(
        f"  brute-force enumeration per request: {brute * 1e3:.1f} ms "
        f"({ratio:.0f}x the solver without shared memo)"
    )

    reconf = reconfigurations(model)
    print(f"\nPart 2: {reconf['runs']} random reconfigurations on {MODEL} (seed {SEED})")
    print(
        f"  plans destroying the brute-force minimum: {reconf['equal_to_oracle']}/{reconf['runs']}"
        f" ({reconf['equal_pct']:.1f}%)"
    )
    print(
        f"  GPU instances destroyed: {reconf['destroyed_by_plans']} (minimum "
        f"{reconf['destroyed_minimum']}); kept {reconf['kept']} of {reconf['existing']}"
    )
    pt = reconf["plan_time"]
    print(
        f"  plan time per GPU: p50 {pt['p50_us']:.0f}us, p99 {pt['p99_us']:.0f}us, "
        f"max {pt['max_us']:.0f}us"
    )

    results = {
        "model": MODEL,
        "python": sys.version.split()[0],
        "requests": len(requests),
        "feasible": feasible,
        "disagreements": wrong_first + wrong_warm + wrong_isolated,
        "solve": regimes,
        "brute_force_per_request_s": brute,
        "reconfigurations": reconf,
        "raw_first_pass_us": [round(t * 1e6, 1) for t in first],
        "raw_no_shared_memo_us": [round(t * 1e6, 1) for t in isolated],
    }
    out = ROOT / "bench" / "results"
    os.makedirs(out, exist_ok=True)
    (out / "solver.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nraw numbers: {out / 'solver.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
