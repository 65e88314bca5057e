"""The shared test builders agree with what they stand for: the simulator and its snapshots."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from builders import MUTATING_NVML, gpu_state, instances_of, snapshot
from migkit import simulator
from migkit.hardware import gpu_models

ROOT = Path(__file__).resolve().parents[1]


def _simulator_mutating_functions() -> set[str]:
    """Names the simulator's C sources list as mutating (``M(name)`` in its function table)."""
    names: set[str] = set()
    for source in sorted((ROOT / "src").rglob("*")):
        if source.suffix not in (".c", ".h"):
            continue
        text = source.read_text(encoding="utf-8")
        if "SIM_FUNCTIONS" in text:
            names.update(re.findall(r"\bM\((nvml\w+)\)", text))
    return names


@pytest.mark.skipif(
    not (ROOT / "src" / "_nvml_sim").is_dir(),
    reason="the simulator's C sources are not beside these tests (the installed-wheel run)",
)
def test_mutating_lists_every_function_the_simulator_marks_mutating() -> None:
    """MUTATING_NVML is exactly the simulator's set of mutating NVML functions."""
    found = _simulator_mutating_functions()
    assert found, "no SIM_FUNCTIONS table found under src/"
    assert set(MUTATING_NVML) == found
    assert len(MUTATING_NVML) == len(found)


@pytest.mark.parametrize("model", [m.name for m in gpu_models()])
def test_gpu_state_of_a_fresh_gpu_matches_a_simulated_snapshot(tmp_path: Path, model: str) -> None:
    """A built GpuState of a fresh GPU equals the simulator's snapshot, identifiers aside."""
    state = simulator.write_state(tmp_path / "node.state", f"1x{model}")
    (read,) = snapshot(state)
    built = gpu_state(model)
    # With MIG off the driver reports no compute profiles and no MIG-device memory yet: the
    # snapshot leaves them empty, the builder fills them from the table. What is read from
    # the driver is marked "observed", whatever provenance the table gives.
    unread = {"compute_profiles": (), "device_memory_mib": 0}
    profiles = tuple(
        attrs.evolve(p, mark=r.mark, placements_mark=r.placements_mark, **unread)
        for p, r in zip(built.profiles, read.profiles, strict=True)
    )
    ids = {"uuid": read.uuid, "bus_id": read.bus_id}
    assert attrs.evolve(built, profiles=profiles, **ids) == read


def test_instances_of_packs_compute_instances_and_wraps_placements() -> None:
    """GI i takes its profile's i-th placement; CIs follow each other from compute slice 0."""
    gis = instances_of("h100-80gb", [("3g.40gb", ["1c.3g.40gb", "2c.3g.40gb"]), ("3g.40gb", ["3g.40gb"])])
    assert [(gi.id, gi.profile, gi.start, gi.size) for gi in gis] == [(0, "3g.40gb", 0, 4), (1, "3g.40gb", 4, 4)]
    assert [(ci.profile, ci.start, ci.size) for ci in gis[0].compute_instances] == [
        ("1c.3g.40gb", 0, 1),
        ("2c.3g.40gb", 1, 2),
    ]
