"""A config that enables MIG nowhere is applied and asserted from each GPU's mode alone: no
GPU's profile tables are read (on real hardware they are most of what a snapshot costs)."""

from __future__ import annotations

from pathlib import Path

import pytest

import migkit
from migkit import simulator

CONFIG = migkit.load_config(
    "version: v1\nmig-configs:\n"
    "  all-disabled: [{devices: all, mig-enabled: false}]\n"
    "  all-1g: [{devices: all, mig-enabled: true, mig-devices: {'1g.10gb': 7}}]\n"
)
TABLE_READS = (
    "nvmlDeviceGetGpuInstanceProfileInfoV",
    "nvmlDeviceGetGpuInstanceProfileInfo",
    "nvmlDeviceGetGpuInstancePossiblePlacements_v2",
)


def _table_reads(state: str, run: str) -> int:
    before = simulator.stats(state)
    with migkit.open_node(sim_state=state) as node:
        if run == "assert":
            assert migkit.assert_config(node, CONFIG, "all-disabled").ok
        else:
            assert migkit.apply(node, CONFIG, "all-disabled").ok
    after = simulator.stats(state)
    return sum(after.get(f, 0) - before.get(f, 0) for f in TABLE_READS)


@pytest.mark.parametrize("run", ["assert", "apply"])
def test_a_config_without_mig_reads_no_profile_tables(tmp_path: Path, run: str) -> None:
    """assert and apply of all-disabled on a node with MIG off read modes, not tables."""
    state = simulator.write_state(tmp_path / "n.state", "2xh100-80gb")
    assert _table_reads(state, run) == 0


def test_a_config_with_mig_still_reads_the_tables(tmp_path: Path) -> None:
    """The tables are read as soon as the config enables MIG anywhere (the check can fail)."""
    state = simulator.write_state(tmp_path / "n.state", "2xh100-80gb")
    before = simulator.stats(state)
    with migkit.open_node(sim_state=state) as node:
        assert not migkit.assert_config(node, CONFIG, "all-1g").ok
    after = simulator.stats(state)
    assert sum(after.get(f, 0) - before.get(f, 0) for f in TABLE_READS) > 0


def test_disabling_mig_from_mode_reads_still_clears_every_instance(tmp_path: Path) -> None:
    """From a partitioned node, all-disabled (mode reads only) clears and disables every GPU."""
    state = simulator.write_state(tmp_path / "n.state", "2xh100-80gb")
    with migkit.open_node(sim_state=state) as node:
        assert migkit.apply(node, CONFIG, "all-1g").ok
        report = migkit.apply(node, CONFIG, "all-disabled")
        assert report.ok and report.changed == 2
        assert all(not g.mig_enabled and not g.gpu_instances for g in node.snapshot())
