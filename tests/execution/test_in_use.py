"""Instances that processes are using: the snapshot reports them with their PIDs, and an apply
that would destroy one is refused before any change."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import migkit
from builders import CliRun, mutations, on_node, snapshot
from migkit import simulator

CONFIG = """\
version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false
  all-7g.80gb:
    - devices: all
      mig-enabled: true
      mig-devices:
        "7g.80gb": 1
  all-balanced:
    - devices: all
      mig-enabled: true
      mig-devices:
        "1g.10gb": 2
        "2g.20gb": 1
        "3g.40gb": 1
  keeps-the-2g:
    - devices: all
      mig-enabled: true
      mig-devices:
        "2g.20gb": 1
        "3g.40gb": 1
        "1g.10gb": 1
"""

@pytest.fixture
def config_file(tmp_path: Path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return str(path)


@pytest.fixture
def balanced(tmp_path: Path, config_file: str) -> Iterator[str]:
    """A simulated 1xH100 node with all-balanced applied; yields its state file."""
    state = simulator.write_state(tmp_path / "node.state", "1xh100-80gb")
    assert apply(state, config_file, "all-balanced").code == 0
    yield state


def apply(state: str, config_file: str, config: str) -> CliRun:
    return on_node(state, "apply", "-f", config_file, "-c", config)


def the_2g(gpu: migkit.GpuState) -> migkit.GpuInstance:
    (gi,) = [gi for gi in gpu.gpu_instances if gi.profile == "2g.20gb"]
    return gi


def mark_2g_busy(state: str, pid: int = 4242) -> migkit.GpuInstance:
    gi = the_2g(snapshot(state)[0])
    simulator.mark_busy(state, 0, gi.id, gi.compute_instances[0].id, pid=pid)
    time.sleep(0.002)  # the simulator re-reads its file at most once per millisecond
    return gi


def test_snapshot_reports_the_busy_instance_and_its_pid(balanced: str) -> None:
    """Only the GI whose CI a process uses is in use, and its CI carries that PID."""
    assert not any(gi.in_use for gi in snapshot(balanced)[0].gpu_instances)
    mark_2g_busy(balanced)
    gpu = snapshot(balanced)[0]
    busy = the_2g(gpu)
    assert busy.in_use
    assert [ci.pids for ci in busy.compute_instances] == [(4242,)]
    others = [gi for gi in gpu.gpu_instances if gi is not busy]
    assert not any(gi.in_use for gi in others)
    assert all(ci.pids == () for gi in others for ci in gi.compute_instances)


def test_a_busy_gpu_instance_marks_its_compute_instances(balanced: str) -> None:
    """A process on the GI itself shows on its CI too, and clearing it ends the in-use state."""
    gi = the_2g(snapshot(balanced)[0])
    simulator.mark_busy(balanced, 0, gi.id, pid=99)
    time.sleep(0.002)
    assert the_2g(snapshot(balanced)[0]).compute_instances[0].pids == (99,)
    simulator.mark_busy(balanced, 0, gi.id, pid=0)
    time.sleep(0.002)
    assert not the_2g(snapshot(balanced)[0]).in_use


@pytest.mark.parametrize("config", ["all-7g.80gb", "all-disabled"])
def test_apply_that_would_destroy_it_is_refused_before_any_change(
    balanced: str, config_file: str, config: str
) -> None:
    """Exit 2 naming the GPU, the instance and the PID, with no NVML change made."""
    busy = mark_2g_busy(balanced)
    before = mutations(balanced)
    run = apply(balanced, config_file, config)
    assert run.code == 2
    err = run.stderr
    assert "GPU 0" in err
    assert "2g.20gb" in err
    assert "memory slices 0-1" in err
    assert "PID 4242" in err
    assert mutations(balanced) == before
    after = snapshot(balanced)[0]
    assert after.mig_enabled
    assert the_2g(after).placement == busy.placement


def test_apply_that_keeps_it_succeeds(balanced: str, config_file: str) -> None:
    """A config that still holds a 2g.20gb keeps the busy GI in place and changes the rest."""
    busy = mark_2g_busy(balanced)
    assert apply(balanced, config_file, "keeps-the-2g").code == 0
    gpu = snapshot(balanced)[0]
    kept = the_2g(gpu)
    assert (kept.id, kept.placement, kept.in_use) == (busy.id, busy.placement, True)
    assert sorted(gi.profile for gi in gpu.gpu_instances) == ["1g.10gb", "2g.20gb", "3g.40gb"]
