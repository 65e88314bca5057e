"""Fail closed on reads: every read the snapshot makes, failed at every call position.

A read that fails leaves a fact unknown. The snapshot either raises (the whole GPU cannot be
read: its handle, identity or MIG mode) or lists the failed read in ``GpuState.unknown``; it
never hands back a default value in its place. The sweep makes the ``N``th call of each read
function the snapshot uses fail with each relevant error (the simulator's fault injection) and
checks, GPU by GPU, that the result is either the fault-free reading or carries an unknown.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from migkit import open_node, simulator
from migkit.errors import NvmlError
from migkit.models import GpuState, Placement
from migkit.nvml.node import (
    ComputeInstanceRequest,
    GpuInstanceRequest,
    MigModeRequest,
)

ERRORS = ("NOT_SUPPORTED", "NOT_FOUND", "INVALID_ARGUMENT", "UNKNOWN")
MAX_POSITIONS = 24  # per function; beyond it, positions are sampled evenly (and the last kept)

MUTATING = frozenset(
    {
        "nvmlDeviceSetMigMode",
        "nvmlDeviceCreateGpuInstanceWithPlacement",
        "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
    }
)
LIFETIME = frozenset({"nvmlInitWithFlags", "nvmlInit_v2", "nvmlShutdown"})

Reading = tuple[tuple[GpuState, ...], dict[str, int]]  # a snapshot and its calls per function


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two H100s: GPU 0 with MIG on, a 3g.40gb split into two 1c compute instances, a busy
    2g.20gb, and a 1g.10gb GPU instance without compute instances; GPU 1 with MIG off."""
    state = str(tmp_path_factory.mktemp("faults") / "node.state")
    simulator.write_state(state, "2xh100-80gb")
    with open_node(sim_state=state) as node:
        assert node.set_mig_mode([MigModeRequest(0, 1)])[0].ok
        made = node.create_gpu_instances(
            [
                GpuInstanceRequest(0, 9, Placement(4, 4)),
                GpuInstanceRequest(0, 14, Placement(0, 2)),
                GpuInstanceRequest(0, 19, Placement(2, 1)),
            ]
        )
        assert all(r.ok for r in made)
        three_g, two_g, _ = (r.gpu_instance for r in made)
        assert three_g is not None and two_g is not None
        cis = node.create_compute_instances(
            [
                ComputeInstanceRequest(0, three_g, 0, Placement(0, 1)),
                ComputeInstanceRequest(0, three_g, 0, Placement(1, 1)),
                ComputeInstanceRequest(0, two_g, 1, Placement(0, 2)),
            ]
        )
        assert all(r.ok for r in cis)
    simulator.mark_busy(state, 0, two_g, cis[2].compute_instance, pid=4242)
    yield state


def _read(state: str) -> Reading:
    """One snapshot with NVML opened afresh, and the calls it made per function."""
    before = simulator.stats(state)
    with open_node(sim_state=state) as node:
        gpus = node.snapshot()
    after = simulator.stats(state)
    return gpus, {name: after.get(name, 0) - before.get(name, 0) for name in after}


@pytest.fixture(scope="module")
def baseline(partitioned: str) -> Reading:
    gpus, calls = _read(partitioned)
    assert all(not g.unknown for g in gpus)
    busy = [gi for gi in gpus[0].gpu_instances if gi.in_use]
    assert [gi.profile for gi in busy] == ["2g.20gb"]  # the in-use state is really read
    return gpus, calls


def _read_functions(calls: dict[str, int]) -> list[str]:
    return sorted(name for name, n in calls.items() if n and name not in MUTATING | LIFETIME)


def _positions(n: int) -> list[int]:
    if n <= MAX_POSITIONS:
        return list(range(1, n + 1))
    step = n / MAX_POSITIONS
    return sorted({1 + int(k * step) for k in range(MAX_POSITIONS)} | {n})


def test_the_sweep_covers_every_read_of_a_partitioned_node(baseline: Reading) -> None:
    """The fault-free snapshot reads instances, compute instances, MIG devices and processes,
    so the sweep below reaches every kind of read."""
    functions = set(_read_functions(baseline[1]))
    assert {
        "nvmlDeviceGetMigMode",
        "nvmlDeviceGetGpuInstanceProfileInfoV",
        "nvmlDeviceGetGpuInstances",
        "nvmlGpuInstanceGetInfo",
        "nvmlGpuInstanceGetComputeInstanceProfileInfoV",
        "nvmlGpuInstanceGetComputeInstances",
        "nvmlComputeInstanceGetInfo_v2",
        "nvmlDeviceGetMaxMigDeviceCount",
        "nvmlDeviceGetMigDeviceHandleByIndex",
        "nvmlDeviceGetComputeRunningProcesses_v3",
    } <= functions


def _sweep_cases() -> list[str]:
    # The functions are known only once the node exists; listing them here keeps test ids stable.
    return [
        "nvmlComputeInstanceGetInfo_v2",
        "nvmlDeviceGetArchitecture",
        "nvmlDeviceGetAttributes_v2",
        "nvmlDeviceGetComputeInstanceId",
        "nvmlDeviceGetComputeRunningProcesses_v3",
        "nvmlDeviceGetCount_v2",
        "nvmlDeviceGetGpuInstanceId",
        "nvmlDeviceGetGpuInstancePossiblePlacements_v2",
        "nvmlDeviceGetGpuInstanceProfileInfoV",
        "nvmlDeviceGetGpuInstances",
        "nvmlDeviceGetHandleByIndex_v2",
        "nvmlDeviceGetMaxMigDeviceCount",
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetMigDeviceHandleByIndex",
        "nvmlDeviceGetMigMode",
        "nvmlDeviceGetName",
        "nvmlDeviceGetPciInfo_v3",
        "nvmlDeviceGetUUID",
        "nvmlGpuInstanceGetComputeInstancePossiblePlacements",
        "nvmlGpuInstanceGetComputeInstanceProfileInfoV",
        "nvmlGpuInstanceGetComputeInstances",
        "nvmlGpuInstanceGetInfo",
    ]


def test_the_sweep_lists_every_read_the_snapshot_makes(baseline: Reading) -> None:
    """No read function of the snapshot escapes the sweep."""
    assert _read_functions(baseline[1]) == _sweep_cases()


@pytest.mark.parametrize("function", _sweep_cases())
def test_a_failed_read_is_unknown_or_raises_never_a_default(
    function: str,
    partitioned: str,
    baseline: Reading,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every call position of ``function`` x every relevant error: each GPU reads as without
    the fault, or lists an unknown fact; a snapshot that raises names the call and the GPU."""
    want, calls = baseline
    hit = 0
    for error in ERRORS:
        for position in _positions(calls[function]):
            monkeypatch.setenv(simulator.FAULTS_ENV, f"{function}@{position}={error}")
            try:
                got, _ = _read(partitioned)
            except NvmlError as err:
                assert err.call == function or "nvmlDeviceGetCount" in str(err), (position, error, err)
                assert function == "nvmlDeviceGetCount_v2" or "GPU " in str(err), (position, error, err)
                hit += 1
                continue
            assert len(got) == len(want), (position, error)
            for g, w in zip(got, want, strict=True):
                if g.unknown:
                    hit += 1
                    assert all(line.startswith("nvml") for line in g.unknown), g.unknown
                else:
                    assert g == w, (function, position, error, g.index)
    monkeypatch.delenv(simulator.FAULTS_ENV)
    # an error the driver gives for "nothing here" can be a true answer (no profile at that
    # index, no MIG device at that index), so not every fault must show; but some must
    assert hit > 0, f"no injected fault of {function} was noticed"


def test_a_failed_process_query_leaves_the_busy_instance_unknown_not_idle(
    partitioned: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The query that says a compute instance is busy fails: the GPU says so, by name."""
    for position in (1, 2, 3):
        monkeypatch.setenv(simulator.FAULTS_ENV, f"nvmlDeviceGetComputeRunningProcesses_v3@{position}=NOT_SUPPORTED")
        gpu = _read(partitioned)[0][0]
        assert any(
            line.startswith("nvmlDeviceGetComputeRunningProcesses_v3 (in-use state of GPU instance")
            and line.endswith("NOT_SUPPORTED")
            for line in gpu.unknown
        ), gpu.unknown


@pytest.mark.parametrize("error", ["NOT_FOUND", "INVALID_ARGUMENT"])
def test_a_mig_device_that_cannot_be_found_leaves_its_instance_unknown(
    error: str, partitioned: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NOT_FOUND / INVALID_ARGUMENT mean "no MIG device at this index"; a compute instance
    whose MIG device is then never found has an unknown in-use state."""
    monkeypatch.setenv(simulator.FAULTS_ENV, f"nvmlDeviceGetMigDeviceHandleByIndex@1={error}")
    gpu = _read(partitioned)[0][0]
    assert any("no MIG device found" in line for line in gpu.unknown), gpu.unknown


def test_mig_mode_not_supported_on_a_mig_gpu_is_unknown(partitioned: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """NOT_SUPPORTED from GetMigMode means "no MIG" only where the GPU has none: on an H100
    it is an unknown MIG mode, not a GPU to skip."""
    monkeypatch.setenv(simulator.FAULTS_ENV, "nvmlDeviceGetMigMode@2=NOT_SUPPORTED")
    gpu = _read(partitioned)[0][1]
    assert gpu.unknown == ("nvmlDeviceGetMigMode (MIG mode): NOT_SUPPORTED, though h100-80gb has MIG",)


def test_a_profile_that_does_not_answer_is_unknown(partitioned: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile index the GPU's table has but the driver said NOT_SUPPORTED for is unknown:
    its instances would otherwise be missing from the snapshot."""
    monkeypatch.setenv(simulator.FAULTS_ENV, "nvmlDeviceGetGpuInstanceProfileInfoV@1=NOT_SUPPORTED")
    gpu = _read(partitioned)[0][0]
    assert gpu.unknown and "GPU instance profile index 0" in gpu.unknown[0]


def test_the_fault_environment_is_clean_after_the_sweep() -> None:
    """The sweep's fault variable does not leak into later tests."""
    assert simulator.FAULTS_ENV not in os.environ


def test_no_fault_reads_the_same_twice(partitioned: str) -> None:
    """Without a fault, NVML opened twice reads the same node the same way, unknowns empty."""
    first, _ = _read(partitioned)
    second, _ = _read(partitioned)
    assert first == second and not any(g.unknown for g in first)


def test_a_missing_inferred_table_row_is_not_an_unknown(tmp_path: object) -> None:
    """A profile the bundled table only infers (A100-80GB's 1g.20gb, which drivers before R525
    lack) may be absent without making the GPU unknown; an observed one may not."""
    state = os.path.join(str(tmp_path), "a100.state")
    simulator.write_state(state, "1xa100-80gb")
    with open_node(sim_state=state) as node:
        clean = node.snapshot()[0]
    indices = sorted(p.index for p in clean.profiles)
    seen: dict[str, tuple[str, ...]] = {}
    for position in range(1, 40):
        os.environ["MIGKIT_SIM_FAULTS"] = f"nvmlDeviceGetGpuInstanceProfileInfoV@{position}=NOT_SUPPORTED"
        try:
            with open_node(sim_state=state) as node:
                gpu = node.snapshot()[0]
        finally:
            del os.environ["MIGKIT_SIM_FAULTS"]
        missing = sorted(set(indices) - {p.index for p in gpu.profiles})
        if len(missing) == 1:
            name = next(p.name for p in clean.profiles if p.index == missing[0])
            seen[name] = gpu.unknown
    assert "1g.20gb" in seen and "2g.20gb" in seen, sorted(seen)
    assert seen["1g.20gb"] == ()
    assert seen["2g.20gb"] and "2g.20gb" in seen["2g.20gb"][0]
