"""The read diet: profile tables read once per GPU while its UUID and MIG mode stay the same.

The simulator counts NVML calls per function and writes them to its state file when NVML shuts
down, so each test compares whole runs of NVML: one that snapshots once, one that does more.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from migkit import open_node, simulator
from migkit.models import GpuState, Placement
from migkit.nvml.node import GpuInstanceRequest, MigModeRequest, Node

TABLE_READS = (
    "nvmlDeviceGetGpuInstanceProfileInfoV",
    "nvmlDeviceGetGpuInstancePossiblePlacements_v2",
    "nvmlGpuInstanceGetComputeInstanceProfileInfoV",
    "nvmlGpuInstanceGetComputeInstancePossiblePlacements",
)
IDENTITY_READS = (
    "nvmlDeviceGetName",
    "nvmlDeviceGetPciInfo_v3",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetArchitecture",
)


def _nvml_run(state: str, work: Callable[[Node], object]) -> dict[str, int]:
    """The NVML calls made between opening ``state`` and closing it, doing ``work``."""
    before = simulator.stats(state)
    with open_node(sim_state=state) as node:
        work(node)
    after = simulator.stats(state)
    return {name: n - before.get(name, 0) for name, n in after.items() if n - before.get(name, 0)}


def _minus(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {name: a.get(name, 0) - b.get(name, 0) for name in a.keys() | b.keys() if a.get(name, 0) != b.get(name, 0)}


def _snapshots(n: int, **kwargs: bool) -> Callable[[Node], list[tuple[GpuState, ...]]]:
    return lambda node: [node.snapshot(**kwargs) for _ in range(n)]


def test_a_second_snapshot_reads_no_profile_table(tmp_path: Path) -> None:
    """Of eight H100s read twice, the second snapshot reads only each GPU's UUID and mode."""
    state = simulator.write_state(tmp_path / "node.state", "8xh100-80gb")
    once = _nvml_run(state, _snapshots(1))
    twice = _nvml_run(state, _snapshots(2))
    assert once["nvmlDeviceGetGpuInstanceProfileInfoV"] >= 8 * 18  # the first reads every index
    assert _minus(twice, once) == {
        "nvmlDeviceGetCount_v2": 1,
        "nvmlDeviceGetHandleByIndex_v2": 8,
        "nvmlDeviceGetUUID": 8,
        "nvmlDeviceGetMigMode": 8,
    }


def test_the_same_tables_come_back_from_the_cache(tmp_path: Path) -> None:
    """What the second snapshot builds from kept tables equals a fresh reading."""
    state = simulator.write_state(tmp_path / "node.state", "2xh100-80gb,1xa100-40gb")
    with open_node(sim_state=state) as node:
        first, second = node.snapshot(), node.snapshot()
    with open_node(sim_state=state) as node:
        fresh = node.snapshot()
    assert first == second == fresh


def _partition(node: Node) -> None:
    assert node.set_mig_mode([MigModeRequest(0, 1)])[0].ok
    assert node.create_gpu_instances([GpuInstanceRequest(0, 9, Placement(0, 4))])[0].ok


def test_a_mode_change_reads_that_gpus_tables_again(tmp_path: Path) -> None:
    """Enabling MIG on GPU 0 drops its tables, not the other GPU's; the compute-instance
    profiles of a new GPU instance's profile are read once, then kept."""
    state = simulator.write_state(tmp_path / "node.state", "2xh100-80gb")

    def before_and_after(node: Node) -> None:
        node.snapshot()
        _partition(node)
        node.snapshot()

    def three_times(node: Node) -> None:
        before_and_after(node)
        node.snapshot()

    base = _nvml_run(state, lambda node: node.snapshot())  # MIG still off on both
    simulator.write_state(state, "2xh100-80gb")
    changed = _nvml_run(state, before_and_after)
    simulator.write_state(state, "2xh100-80gb")
    again = _nvml_run(state, three_times)
    # GPU 0's table is read a second time after its mode changed, GPU 1's is not
    one_table = base["nvmlDeviceGetGpuInstanceProfileInfoV"] // 2
    assert changed["nvmlDeviceGetGpuInstanceProfileInfoV"] == 3 * one_table
    assert changed["nvmlGpuInstanceGetComputeInstanceProfileInfoV"] > 0
    extra = _minus(again, changed)  # the third snapshot: no table, but the instances afresh
    assert not set(extra) & set(TABLE_READS) and not set(extra) & set(IDENTITY_READS)
    assert extra["nvmlDeviceGetMigMode"] == 2 and extra["nvmlDeviceGetGpuInstances"] > 0


def test_another_gpu_at_the_same_index_is_read_afresh(tmp_path: Path) -> None:
    """The node's GPU 0 is replaced by another model while the node is open: its UUID
    differs, so the snapshot reads the new GPU's identity and tables instead of reusing them."""
    state = simulator.write_state(tmp_path / "node.state", "1xh100-80gb")
    with open_node(sim_state=state) as node:
        h100 = node.snapshot()[0]
        simulator.write_state(state, "1xa100-40gb")
        time.sleep(0.01)  # the simulator looks at its state file at most once per millisecond
        a100 = node.snapshot()[0]
    assert h100.model_name == "h100-80gb" and a100.model_name == "a100-40gb"
    assert a100.uuid != h100.uuid and a100.name != h100.name
    assert {p.name for p in a100.profiles} >= {"1g.5gb", "3g.20gb", "7g.40gb"}
    assert not a100.unknown


def test_a_mode_only_snapshot_reads_two_things_per_gpu(tmp_path: Path) -> None:
    """``tables=False`` on GPUs with MIG off reads identity and mode, no profile table, and
    says so with empty profiles; a full snapshot after it reads the tables."""
    state = simulator.write_state(tmp_path / "node.state", "8xh100-80gb")
    got: list[tuple[GpuState, ...]] = []
    calls = _nvml_run(state, lambda node: got.extend([node.snapshot(tables=False), node.snapshot()]))
    mode_only, full = got
    assert all(g.profiles == () and g.mig_mode == 0 and not g.unknown for g in mode_only)
    assert all(len(g.profiles) == 7 for g in full)
    full = _nvml_run(state, _snapshots(1))
    # the profile tables are read by the full snapshot only
    assert calls["nvmlDeviceGetGpuInstanceProfileInfoV"] == full["nvmlDeviceGetGpuInstanceProfileInfoV"]
    assert calls["nvmlDeviceGetMigMode"] == 16

    alone = _nvml_run(state, _snapshots(1, tables=False))
    assert not set(alone) & set(TABLE_READS)
    assert alone["nvmlDeviceGetMigMode"] == 8 and alone["nvmlDeviceGetUUID"] == 8


def test_a_mode_only_snapshot_still_reads_gpus_with_mig_on_in_full(tmp_path: Path) -> None:
    """A GPU with MIG on has instances to report, so ``tables=False`` reads it whole."""
    state = simulator.write_state(tmp_path / "node.state", "2xh100-80gb")
    with open_node(sim_state=state) as node:
        _partition(node)
    with open_node(sim_state=state) as node:
        on, off = node.snapshot(tables=False)
    assert [gi.profile for gi in on.gpu_instances] == ["3g.40gb"] and len(on.profiles) == 7
    assert off.profiles == () and not off.unknown
