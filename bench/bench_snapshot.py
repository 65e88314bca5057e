"""How long reading a whole node takes: migkit's one-call snapshot vs pynvml vs a C loop.

The node is a simulated 8xh100-80gb, every GPU partitioned all-balanced (2x 1g.10gb,
1x 2g.20gb, 1x 3g.40gb, one full compute instance each). Three readers gather the same
information with the same NVML calls:

  migkit   ``node.snapshot()``: one call into the shim, then frozen models
           ("warm": models reused for unchanged GPUs, the steady state of a process that
           polls; "one GPU changed": a compute instance on GPU 0 destroyed or re-created
           before each read, so that GPU's models are rebuilt; "cold": every memo cleared
           before each read, every model built afresh and every profile table read again)
  pynvml   NVIDIA's nvidia-ml-py, in this process, call by call
  C loop   a tiny C module compiled now that makes the same calls and keeps a checksum

Times are best and median of many repetitions (``time.perf_counter_ns``), measured side by
side in one run. The warm and one-GPU-changed reads keep each GPU's profile tables (read once
while its UUID and MIG mode stay the same), so they make fewer NVML calls than the other
readers; the cold read makes every call the others make. Run:
``python bench/bench_snapshot.py [--reps N]``. Raw numbers go to
``bench/results/snapshot.json``. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from ctypes import byref, c_uint
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _snapshot_cloop_build  # noqa: E402
import pynvml  # noqa: E402

from migkit import simulator  # noqa: E402
from migkit.models import Placement  # noqa: E402
from migkit.nvml._library import lib  # noqa: E402
from migkit.nvml.node import (  # noqa: E402
    ComputeInstanceRef,
    ComputeInstanceRequest,
    GpuInstanceRequest,
    MigModeRequest,
    Node,
    open_node,
)

SPEC = "8xh100-80gb"
BALANCED = [  # (GI profile id, placement, full CI profile id, CI placement)
    (9, Placement(4, 4), 2, Placement(0, 3)),
    (14, Placement(0, 2), 1, Placement(0, 2)),
    (19, Placement(2, 1), 0, Placement(0, 1)),
    (19, Placement(3, 1), 0, Placement(0, 1)),
]


def partition(node: Node, gpus: int) -> None:
    """All-balanced on every GPU, with one full CI per GI."""
    assert all(r.ok for r in node.set_mig_mode([MigModeRequest(i, 1) for i in range(gpus)]))
    created = node.create_gpu_instances(
        [GpuInstanceRequest(i, pid, pl) for i in range(gpus) for pid, pl, _, _ in BALANCED]
    )
    assert all(r.ok for r in created), [r.error for r in created if not r.ok]
    cis = [
        ComputeInstanceRequest(r.request.gpu, r.gpu_instance or 0, cid, cpl)
        for r, (_, _, cid, cpl) in zip(created, BALANCED * gpus, strict=True)
    ]
    assert all(r.ok for r in node.create_compute_instances(cis))


def _placements(read: Any, handle: Any, profile_id: int, ctype: Any) -> list[tuple[int, int]]:
    count = c_uint(0)
    read(handle, profile_id, None, byref(count))
    array = (ctype * count.value)()
    read(handle, profile_id, array, byref(count))
    return [(array[i].start, array[i].size) for i in range(count.value)]


def gather_with_pynvml() -> list[dict[str, Any]]:
    """What node.snapshot() reports, gathered through pynvml with the same NVML calls."""
    gpus = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        device = pynvml.nvmlDeviceGetHandleByIndex(index)
        pci = pynvml.nvmlDeviceGetPciInfo_v3(device)
        gpu: dict[str, Any] = {
            "index": index,
            "uuid": pynvml.nvmlDeviceGetUUID(device),
            "name": pynvml.nvmlDeviceGetName(device),
            "pci": (pci.pciDeviceId, pci.pciSubSystemId, pci.busId),
            "memory_mib": pynvml.nvmlDeviceGetMemoryInfo(device).total >> 20,
            "architecture": pynvml.nvmlDeviceGetArchitecture(device),
            "profiles": [],
            "gpu_instances": [],
        }
        gpus.append(gpu)
        try:
            current, pending = pynvml.nvmlDeviceGetMigMode(device)
        except pynvml.NVMLError_NotSupported:
            continue
        gpu["modes"] = (current, pending)
        profiles = []
        for profile_index in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
            try:
                p = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(device, profile_index)
            except pynvml.NVMLError_NotSupported:
                continue
            except pynvml.NVMLError_InvalidArgument:
                break
            profiles.append(
                {
                    "id": p.id,
                    "index": profile_index,
                    "name": p.name,
                    "slices": p.sliceCount,
                    "instances": p.instanceCount,
                    "memory": p.memorySizeMB,
                    "sm": p.multiprocessorCount,
                    "engines": (
                        p.copyEngineCount,
                        p.decoderCount,
                        p.encoderCount,
                        p.jpegCount,
                        p.ofaCount,
                    ),
                    "placements": _placements(
                        pynvml.nvmlDeviceGetGpuInstancePossiblePlacements,
                        device,
                        p.id,
                        pynvml.c_nvmlGpuInstancePlacement_t,
                    ),
                    "compute_profiles": None,
                }
            )
        gpu["profiles"] = profiles
        if current != 1:
            continue
        cis_by_gi: dict[int, list[dict[str, Any]]] = {}
        for profile in profiles:
            array = (pynvml.c_nvmlGpuInstance_t * profile["instances"])()
            count = c_uint(profile["instances"])
            pynvml.nvmlDeviceGetGpuInstances(device, profile["id"], array, byref(count))
            for k in range(count.value):
                gi = array[k]
                info = pynvml.nvmlGpuInstanceGetInfo(gi)
                if profile["compute_profiles"] is None:
                    compute_profiles = []
                    for ci_index in range(pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
                        try:
                            cp = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                                gi, ci_index, pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
                            )
                        except pynvml.NVMLError_NotSupported:
                            continue
                        except pynvml.NVMLError_InvalidArgument:
                            break
                        compute_profiles.append(
                            {
                                "id": cp.id,
                                "index": ci_index,
                                "name": cp.name,
                                "slices": cp.sliceCount,
                                "instances": cp.instanceCount,
                                "sm": cp.multiprocessorCount,
                                "placements": _placements(
                                    pynvml.nvmlGpuInstanceGetComputeInstancePossiblePlacements,
                                    gi,
                                    cp.id,
                                    pynvml.c_nvmlComputeInstancePlacement_t,
                                ),
                            }
                        )
                    profile["compute_profiles"] = compute_profiles
                cis = []
                for cp in profile["compute_profiles"]:
                    ci_array = (pynvml.c_nvmlComputeInstance_t * cp["instances"])()
                    ci_count = c_uint(cp["instances"])
                    pynvml.nvmlGpuInstanceGetComputeInstances(gi, cp["id"], ci_array, byref(ci_count))
                    for j in range(ci_count.value):
                        ci = pynvml.nvmlComputeInstanceGetInfo(ci_array[j])
                        cis.append(
                            {
                                "id": ci.id,
                                "profile_id": ci.profileId,
                                "placement": (ci.placement.start, ci.placement.size),
                            }
                        )
                cis_by_gi[info.id] = cis
                gpu["gpu_instances"].append(
                    {
                        "id": info.id,
                        "profile_id": info.profileId,
                        "placement": (info.placement.start, info.placement.size),
                        "compute_instances": cis,
                    }
                )
        for k in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(device)):
            try:
                mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(device, k)
            except (pynvml.NVMLError_NotFound, pynvml.NVMLError_InvalidArgument):
                continue
            gi_id = pynvml.nvmlDeviceGetGpuInstanceId(mig)
            ci_id = pynvml.nvmlDeviceGetComputeInstanceId(mig)
            uuid = pynvml.nvmlDeviceGetUUID(mig)
            memory = pynvml.nvmlDeviceGetMemoryInfo(mig).total >> 20
            attributes = pynvml.nvmlDeviceGetAttributes(mig)
            pids = [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(mig)]
            for ci in cis_by_gi.get(gi_id, ()):
                if ci["id"] == ci_id:
                    ci.update(uuid=uuid, memory_mib=memory, sm=attributes.multiprocessorCount, pids=pids)
    return gpus


def measure(fn: Callable[[], object], reps: int, before: Callable[[], object] | None = None) -> list[int]:
    """Nanoseconds of ``reps`` calls of ``fn`` (``before`` runs untimed ahead of each)."""
    times = []
    for _ in range(reps):
        if before is not None:
            before()
        start = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - start)
    return times


def summary(times: list[int]) -> dict[str, float]:
    return {"best_us": min(times) / 1e3, "median_us": statistics.median(times) / 1e3}


def _nvml_calls(state_file: str) -> int:
    counts = simulator.stats(state_file)
    return sum(v for k, v in counts.items() if k.startswith("nvml") and k not in ("nvmlInitWithFlags", "nvmlShutdown"))


def calls_made(state_file: str, run: Callable[[], object]) -> int:
    """NVML calls ``run`` makes, as the simulator counts them.

    The simulator merges its in-memory read counts into the state file when the last NVML
    reference is released, so ``run`` opens and releases NVML itself, with nothing else
    holding it open.
    """
    before = _nvml_calls(state_file)
    run()
    return _nvml_calls(state_file) - before


def _with_pynvml(fn: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        pynvml.nvmlInit()
        try:
            fn()
        finally:
            pynvml.nvmlShutdown()

    return run


def _with_node(state_file: str, read: bool) -> Callable[[], None]:
    def run() -> None:
        with open_node(sim_state=state_file) as node:
            if read:
                node.snapshot()

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=300, help="repetitions per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "snapshot.json"))
    args = parser.parse_args(argv)

    spec = f"{args.gpus}x{SPEC.partition('x')[2]}"
    with simulator.simulate(spec) as sim:
        state = sim.state_file
        with open_node(sim_state=state) as node:
            partition(node, args.gpus)
        cloop = _snapshot_cloop_build.build()
        if cloop.lib.cloop_open(sim.library_path.encode()) != 0:
            raise SystemExit("the C loop could not open the simulator")
        ncalls = cloop.ffi.new("unsigned int *")

        def c_loop() -> None:
            if cloop.lib.cloop_walk(ncalls) < 0:
                raise SystemExit("the C loop failed")

        # with nothing else holding NVML, count the calls each reader makes
        calls = {
            "migkit": calls_made(state, _with_node(state, True)) - calls_made(state, _with_node(state, False)),
            "pynvml": calls_made(state, _with_pynvml(gather_with_pynvml)),
            "c_loop": calls_made(state, _with_pynvml(c_loop)),
        }
        calls["c_loop_self_count"] = int(ncalls[0])

        with open_node(sim_state=state) as node:
            pynvml.nvmlInit()  # finds the simulator migkit loaded, by its soname
            snapshotter = node._snapshotter

            def cold() -> None:
                """Forget the memoised models and the tables the shim keeps."""
                snapshotter.clear_cache()
                lib.shim_forget_tables(-1)
            assert all(len(g.gpu_instances) == 4 for g in node.snapshot())
            one_gi = next(g for g in node.snapshot()[0].gpu_instances if g.start == 3)
            present = [True]

            def change_one_gpu() -> None:
                """Destroy or re-create one compute instance on GPU 0 (untimed)."""
                if present[0]:
                    done = node.destroy_compute_instances([ComputeInstanceRef(0, one_gi.id, 0)])
                else:
                    done = node.create_compute_instances([ComputeInstanceRequest(0, one_gi.id, 0, Placement(0, 1))])
                assert done[0].ok
                present[0] = not present[0]
                # the simulator re-checks its file for reads at most every 1 ms; spin rather
                # than sleep so that the timed read does not start on an idle core
                until = time.perf_counter() + 0.0011
                while time.perf_counter() < until:
                    pass

            readers: dict[str, tuple[Callable[[], object], Callable[[], object] | None]] = {
                "migkit_warm": (node.snapshot, None),
                "migkit_one_gpu_changed": (node.snapshot, change_one_gpu),
                "migkit_cold": (node.snapshot, cold),
                "pynvml": (gather_with_pynvml, None),
                "c_loop": (c_loop, None),
                # the simulator re-reads its state file after a change: the same for both
                "c_loop_one_gpu_changed": (c_loop, change_one_gpu),
            }
            for fn, before in readers.values():  # warm up
                measure(fn, 20, before)
            samples: dict[str, list[int]] = {name: [] for name in readers}
            gc.disable()
            try:
                for _ in range(args.rounds):
                    for name, (fn, before) in readers.items():
                        reps = args.reps if name != "pynvml" else max(args.reps // 5, 20)
                        samples[name] += measure(fn, reps, before)
            finally:
                gc.enable()
                pynvml.nvmlShutdown()

    stats = {name: summary(times) for name, times in samples.items()}
    best = {name: s["best_us"] for name, s in stats.items()}
    median = {name: s["median_us"] for name, s in stats.items()}
    ratios = {
        "pynvml_over_migkit_warm_median": median["pynvml"] / median["migkit_warm"],
        "pynvml_over_migkit_cold_median": median["pynvml"] / median["migkit_cold"],
        "migkit_warm_over_c_loop_median": median["migkit_warm"] / median["c_loop"],
        "migkit_cold_over_c_loop_median": median["migkit_cold"] / median["c_loop"],
        "migkit_one_gpu_changed_over_c_loop_median": (
            median["migkit_one_gpu_changed"] / median["c_loop_one_gpu_changed"]
        ),
        "pynvml_over_migkit_warm_best": best["pynvml"] / best["migkit_warm"],
        "migkit_warm_over_c_loop_best": best["migkit_warm"] / best["c_loop"],
        "migkit_cold_over_c_loop_best": best["migkit_cold"] / best["c_loop"],
    }
    print(
        f"snapshot of a simulated {spec} node, every GPU all-balanced "
        f"(4 GIs + 4 CIs each); NVML calls per read: {calls}"
    )
    print(f"{'reader':<14}{'best us':>12}{'median us':>12}{'samples':>10}")
    for name, s in stats.items():
        print(f"{name:<14}{s['best_us']:>12.1f}{s['median_us']:>12.1f}{len(samples[name]):>10}")
    print(
        "ratios (median): "
        f"pynvml/migkit = {ratios['pynvml_over_migkit_warm_median']:.1f}x warm, "
        f"{ratios['pynvml_over_migkit_cold_median']:.1f}x cold (goal >= 10x); "
        f"migkit/C loop = {ratios['migkit_warm_over_c_loop_median']:.2f}x warm, "
        f"{ratios['migkit_one_gpu_changed_over_c_loop_median']:.2f}x one GPU changed, "
        f"{ratios['migkit_cold_over_c_loop_median']:.2f}x cold (goal <= 1.5x)"
    )

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(
            {
                "spec": spec,
                "layout": "all-balanced, one full CI per GI",
                "python": sys.version.split()[0],
                "machine": platform.machine(),
                "nvml_calls_per_read": calls,
                "summary": stats,
                "ratios": ratios,
                "samples_ns": samples,
            },
            f,
            indent=1,
        )
    print(f"raw numbers: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
