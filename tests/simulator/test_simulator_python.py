"""The simulator's Python side: specs, state files, reset, busy marks, the stats command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from migkit import simulator
from migkit.simulator import SimulatorError


def test_spec_expands_counts_in_pci_order() -> None:
    """'2xa100-80gb,1xl40s' is two A100s then one L40S."""
    assert [m.name for m in simulator.parse_spec("2xa100-80gb,1xl40s")] == [
        "a100-80gb",
        "a100-80gb",
        "l40s",
    ]
    assert [m.name for m in simulator.parse_spec("h100-80gb")] == ["h100-80gb"]


@pytest.mark.parametrize(
    "spec", ["", "0xh100-80gb", "8xh100", "8x", "h100-80gb,,a30-24gb", "65xh100-80gb"]
)
def test_bad_specs_are_refused(spec: str) -> None:
    """Malformed or unknown specs raise SimulatorError with the reason."""
    with pytest.raises(SimulatorError):
        simulator.parse_spec(spec)


def test_state_file_round_trips(tmp_path: os.PathLike[str]) -> None:
    """A written state file parses back to the same records and renders identically."""
    path = simulator.write_state(os.path.join(tmp_path, "s"), "1xa30-24gb,1xl40s")
    records = simulator.read_state(path)
    assert simulator.render_state(records) == Path(path).read_text()
    gpus = [r for r in records if r.keyword == "gpu"]
    assert [r.fields["name"] for r in gpus] == ["NVIDIA A30", "NVIDIA L40S"]
    assert gpus[1].fields["mig_capable"] == "0"
    assert not [r for r in records if r.keyword == "gip" and r.fields["gpu"] == "1"]


def test_reset_makes_pending_mode_current_and_drops_instances(tmp_path: os.PathLike[str]) -> None:
    """A simulated reset applies the pending mode and loses the GPU's instances."""
    path = simulator.write_state(os.path.join(tmp_path, "s"), "2xa100-40gb")
    with simulator.edit_state(path) as records:
        for r in records:
            if r.keyword == "gpu":
                r.fields["pending"] = "1"
        records.append(
            simulator.Record(
                "gi",
                {"gpu": "1", "id": "0", "profile": "0", "start": "0", "size": "8", "busy": "0"},
            )
        )
    assert simulator.reset_gpus(path, [0]) == [0]
    gpus = {r.int("index"): r for r in simulator.read_state(path) if r.keyword == "gpu"}
    assert gpus[0].fields["mode"] == "1" and gpus[1].fields["mode"] == "0"
    assert [r for r in simulator.read_state(path) if r.keyword == "gi"]  # GPU 1 untouched


def test_busy_instances_block_a_reset(tmp_path: os.PathLike[str]) -> None:
    """A GPU whose instance is used by a process cannot be reset."""
    path = simulator.write_state(os.path.join(tmp_path, "s"), "1xa100-40gb")
    with simulator.edit_state(path) as records:
        records.append(
            simulator.Record(
                "gi",
                {"gpu": "0", "id": "0", "profile": "0", "start": "0", "size": "8", "busy": "0"},
            )
        )
    simulator.mark_busy(path, 0, 0, pid=1234)
    with pytest.raises(SimulatorError, match="GPU 0"):
        simulator.reset_gpus(path)
    with pytest.raises(SimulatorError, match="no GPU 0 GI 5"):
        simulator.mark_busy(path, 0, 5)


def test_simulate_sets_and_restores_the_environment(tmp_path: os.PathLike[str]) -> None:
    """simulate() points MIGKIT_SIM_STATE at the node and removes a temporary one afterwards."""
    before = os.environ.get(simulator.STATE_ENV)
    with simulator.simulate("1xh100-80gb") as sim:
        assert os.environ[simulator.STATE_ENV] == sim.state_file
        assert os.path.exists(sim.state_file)
        assert os.path.exists(sim.library_path)
    assert os.environ.get(simulator.STATE_ENV) == before
    assert not os.path.exists(sim.state_file)
    kept = os.path.join(tmp_path, "kept.state")
    with simulator.simulate("1xh100-80gb", state_file=kept):
        pass
    assert os.path.exists(kept)


def test_stats_command_prints_json(tmp_path: os.PathLike[str]) -> None:
    """`python -m migkit.simulator stats FILE` prints the call counts as a JSON object."""
    path = simulator.write_state(os.path.join(tmp_path, "s"), "1xh100-80gb")
    with simulator.edit_state(path) as records:
        records.append(simulator.Record("calls", {"nvmlGpuInstanceDestroy": "2"}))
    out = subprocess.run(
        [sys.executable, "-m", "migkit.simulator", "stats", path],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert json.loads(out) == {"nvmlGpuInstanceDestroy": 2}
