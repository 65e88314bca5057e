"""Applying configs on simulated nodes: the GPU Operator walkthroughs, minimal disruption,
validation before mutation, failures mid-apply, and concurrency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import migkit
from builders import mutations, on_node, snapshot
from migkit import simulator
from migkit.config import load_config

# The NVML calls an apply makes to change a GPU's instances (placements chosen by the plan).
LAYOUT_CALLS = (
    "nvmlDeviceCreateGpuInstanceWithPlacement",
    "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
    "nvmlComputeInstanceDestroy",
    "nvmlGpuInstanceDestroy",
)
OPERATOR_CONFIG = """\
version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false
  all-1g.10gb:
    - devices: all
      mig-enabled: true
      mig-devices:
        "1g.10gb": 7
  all-3g.40gb:
    - devices: all
      mig-enabled: true
      mig-devices:
        "3g.40gb": 2
  all-balanced:
    - devices: all
      mig-enabled: true
      mig-devices:
        "1g.10gb": 2
        "2g.20gb": 1
        "3g.40gb": 1
  keep-3g-and-1gs:
    - devices: all
      mig-enabled: true
      mig-devices:
        "3g.40gb": 1
        "1g.10gb": 4
  custom-mig:
    - devices: [0]
      mig-enabled: false
    - devices: [1]
      mig-enabled: true
      mig-devices:
        "1g.10gb": 2
    - devices: [2]
      mig-enabled: true
      mig-devices:
        "2g.20gb": 2
        "3g.40gb": 1
    - devices: [3]
      mig-enabled: true
      mig-devices:
        "3g.40gb": 1
        "4g.40gb": 1
  five-1g-one-2g:
    - devices: all
      mig-enabled: true
      mig-devices:
        "1g.10gb": 5
        "2g.20gb": 1
  bogus-profile:
    - devices: all
      mig-enabled: true
      mig-devices:
        "2g.10gb": 1
  too-much:
    - devices: all
      mig-enabled: true
      mig-devices:
        "3g.40gb": 2
        "1g.10gb": 1
"""


@pytest.fixture
def config_file(tmp_path: Path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(OPERATOR_CONFIG)
    return str(path)


@pytest.fixture
def node8(tmp_path: Path) -> Iterator[str]:
    """A fresh simulated 8xH100 node; yields its state file."""
    yield simulator.write_state(tmp_path / "node.state", "8xh100-80gb")


def test_single_strategy_all_1g_10gb(
    node8: str, config_file: str
) -> None:
    """all-1g.10gb gives 7 MIG devices per H100 and single-strategy labels for all of them."""
    assert on_node(node8, "apply", "-f", config_file, "-c", "all-1g.10gb").code == 0
    assert on_node(node8, "assert", "-f", config_file, "-c", "all-1g.10gb").code == 0
    gpus = snapshot(node8)
    assert all(len(g.gpu_instances) == 7 for g in gpus)
    assert all(g.device_counts() == {"1g.10gb": 7} for g in gpus)
    run = on_node(node8, "labels", "--strategy", "single", "-o", "json")
    assert run.code == 0
    labels = json.loads(run.stdout)
    assert labels["nvidia.com/gpu.count"] == "56"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb"
    assert labels["nvidia.com/gpu.slices.gi"] == "1"
    assert labels["nvidia.com/mig.strategy"] == "single"


def test_mixed_strategy_all_balanced_labels(node8: str, config_file: str) -> None:
    """all-balanced gives 2x1g.10gb, 1x2g.20gb, 1x3g.40gb per GPU with the documented label values."""
    assert on_node(node8, "apply", "-f", config_file, "-c", "all-balanced").code == 0
    run = on_node(node8, "labels", "--strategy", "mixed", "-o", "json")
    assert run.code == 0
    labels = json.loads(run.stdout)
    expected = {
        "1g.10gb": ("16", "1", "1", "9984", "16", "1"),
        "2g.20gb": ("8", "2", "2", "20096", "32", "2"),
        "3g.40gb": ("8", "3", "3", "40320", "60", "3"),
    }
    for profile, (count, copy, dec, memory, sms, slices) in expected.items():
        key = f"nvidia.com/mig-{profile}"
        assert labels[f"{key}.count"] == count
        assert labels[f"{key}.engines.copy"] == copy
        assert labels[f"{key}.engines.decoder"] == dec
        assert labels[f"{key}.memory"] == memory
        assert labels[f"{key}.multiprocessors"] == sms
        assert labels[f"{key}.slices.gi"] == slices
        assert labels[f"{key}.slices.ci"] == slices


def test_reconfigure_all_balanced_to_all_3g(node8: str, config_file: str) -> None:
    """all-balanced -> all-3g.40gb keeps the existing 3g.40gb of every GPU."""
    assert on_node(node8, "apply", "-f", config_file, "-c", "all-balanced").code == 0
    before = {
        g.index: next(gi for gi in g.gpu_instances if gi.profile == "3g.40gb")
        for g in snapshot(node8)
    }
    assert on_node(node8, "apply", "-f", config_file, "-c", "all-3g.40gb").code == 0
    assert on_node(node8, "assert", "-f", config_file, "-c", "all-3g.40gb").code == 0
    for gpu in snapshot(node8):
        assert gpu.device_counts() == {"3g.40gb": 2}
        assert any(
            gi.id == before[gpu.index].id and gi.start == before[gpu.index].start
            for gi in gpu.gpu_instances
        )


def test_keeping_instances_destroys_one_gi_per_gpu(node8: str, config_file: str) -> None:
    """all-balanced -> {3g.40gb:1, 1g.10gb:4} destroys exactly the 2g.20gb on each GPU."""
    assert on_node(node8, "apply", "-f", config_file, "-c", "all-balanced").code == 0
    before = simulator.stats(node8)
    assert on_node(node8, "apply", "-f", config_file, "-c", "keep-3g-and-1gs").code == 0
    after = simulator.stats(node8)
    destroyed = after.get("nvmlGpuInstanceDestroy", 0) - before.get("nvmlGpuInstanceDestroy", 0)
    assert destroyed == 8
    assert all(g.device_counts() == {"3g.40gb": 1, "1g.10gb": 4} for g in snapshot(node8))


def test_custom_per_device_config(tmp_path: Path, config_file: str) -> None:
    """The documentation's custom-mig example: each GPU gets its own layout; unlisted GPUs stay."""
    state = simulator.write_state(tmp_path / "n.state", "5xh100-80gb")
    assert on_node(state, "apply", "-f", config_file, "-c", "custom-mig").code == 0
    gpus = snapshot(state)
    assert not gpus[0].mig_enabled
    assert gpus[1].device_counts() == {"1g.10gb": 2}
    assert gpus[2].device_counts() == {"2g.20gb": 2, "3g.40gb": 1}
    assert gpus[3].device_counts() == {"3g.40gb": 1, "4g.40gb": 1}
    assert not gpus[4].mig_enabled  # not covered: untouched
    assert on_node(state, "assert", "-f", config_file, "-c", "custom-mig").code == 0


def test_five_1g_one_2g_then_all_disabled(node8: str, config_file: str) -> None:
    """five-1g-one-2g applies on every GPU, and all-disabled turns MIG off again."""
    assert on_node(node8, "apply", "-f", config_file, "-c", "five-1g-one-2g").code == 0
    assert all(g.device_counts() == {"1g.10gb": 5, "2g.20gb": 1} for g in snapshot(node8))
    assert on_node(node8, "apply", "-f", config_file, "-c", "all-disabled").code == 0
    assert all(not g.mig_enabled and not g.gpu_instances for g in snapshot(node8))
    assert on_node(node8, "assert", "-f", config_file, "-c", "all-disabled").code == 0


def test_matching_node_is_not_touched(node8: str, config_file: str) -> None:
    """A second apply of the same config issues no mutating NVML call."""
    assert on_node(node8, "apply", "-f", config_file, "-c", "all-balanced").code == 0
    before = mutations(node8)
    assert on_node(node8, "apply", "-f", config_file, "-c", "all-balanced").code == 0
    assert mutations(node8) == before


@pytest.mark.parametrize("name", ["bogus-profile", "too-much"])
def test_invalid_configs_exit_2_without_mutation(
    node8: str, config_file: str, name: str
) -> None:
    """An unknown profile or an infeasible layout stops before any mutating NVML call."""
    run = on_node(node8, "apply", "-f", config_file, "-c", name)
    assert run.code == 2
    err = run.stderr
    assert "GPU 0" in err
    assert ("2g.10gb" in err) if name == "bogus-profile" else ("slice" in err)
    assert not any(mutations(node8).values())


def test_assert_fails_with_reason_on_drift(
    node8: str, config_file: str
) -> None:
    """assert exits 1 and says which GPU differs and how."""
    assert on_node(node8, "apply", "-f", config_file, "-c", "all-balanced").code == 0
    run = on_node(node8, "assert", "-f", config_file, "-c", "all-3g.40gb")
    assert run.code == 1
    err = run.stderr
    assert "GPU 0" in err and "3g.40gb" in err


def test_ampere_mode_change_resets_only_changed_gpus(tmp_path: Path, config_file: str) -> None:
    """On A100s a pending enable is completed by resetting only the GPUs that changed."""
    state = simulator.write_state(tmp_path / "a.state", "2xa100-80gb")
    cfg = tmp_path / "a.yaml"
    cfg.write_text(
        "version: v1\nmig-configs:\n  one:\n    - devices: [1]\n      mig-enabled: true\n"
        '      mig-devices: {"3g.40gb": 2}\n'
    )
    assert on_node(state, "apply", "-f", str(cfg), "-c", "one").code == 0
    gpus = snapshot(state)
    assert not gpus[0].mig_enabled and gpus[1].mig_enabled
    assert simulator.stats(state).get("migkitSimResetGpu") == 1


def test_skip_reset_reports_pending_mode(tmp_path: Path) -> None:
    """--mode-only --skip-reset leaves an Ampere change pending and says so, with exit 0."""
    state = simulator.write_state(tmp_path / "a.state", "1xa100-40gb")
    cfg = tmp_path / "a.yaml"
    cfg.write_text(
        "version: v1\nmig-configs:\n  on:\n    - devices: all\n      mig-enabled: true\n      mig-devices: {}\n"
    )
    assert on_node(state, "apply", "--mode-only", "--skip-reset", "-f", str(cfg)).code == 0
    gpu = snapshot(state)[0]
    assert gpu.mig_mode == 0 and gpu.pending_mig_mode == 1
    assert on_node(state, "apply", "-f", str(cfg)).code == 0
    assert snapshot(state)[0].mig_enabled


def _apply_in_process(state: str, config_file: str, name: str) -> migkit.ApplyReport:
    config = load_config(config_file)
    with migkit.open_node(sim_state=state) as node:
        return migkit.apply(node, config, name, config_file=config_file)


def _leaks(gpu: migkit.GpuState) -> list[str]:
    return [f"{gi.profile}@{gi.start}" for gi in gpu.gpu_instances if not gi.compute_instances]


@pytest.mark.parametrize("function", LAYOUT_CALLS)
def test_fault_at_every_mutating_call_restores_and_converges(
    tmp_path: Path, config_file: str, monkeypatch: pytest.MonkeyPatch, function: str
) -> None:
    """An NVML failure at any call of an apply leaves no orphan instance, and a rerun converges."""
    base = simulator.write_state(tmp_path / "base.state", "2xh100-80gb")
    assert _apply_in_process(base, config_file, "all-balanced").ok
    reference = tmp_path / "ref.state"
    reference.write_text(Path(base).read_text())
    before = simulator.stats(str(reference)).get(function, 0)
    assert _apply_in_process(str(reference), config_file, "five-1g-one-2g").ok
    calls = simulator.stats(str(reference)).get(function, 0) - before
    assert calls > 0
    for n in range(1, calls + 1):
        state = tmp_path / f"s{n}.state"
        state.write_text(Path(base).read_text())
        previous = {g.index: g.device_counts() for g in snapshot(str(state))}
        monkeypatch.setenv("MIGKIT_SIM_FAULTS", f"{function}@{n}=INSUFFICIENT_RESOURCES")
        report = _apply_in_process(str(state), config_file, "five-1g-one-2g")
        monkeypatch.delenv("MIGKIT_SIM_FAULTS")
        assert not report.ok
        assert "INSUFFICIENT_RESOURCES" in report.summary()
        for gpu in snapshot(str(state)):
            assert not _leaks(gpu), f"{function}@{n}: GPU {gpu.index} leaked {_leaks(gpu)}"
            assert gpu.device_counts() in (
                previous[gpu.index],
                {"1g.10gb": 5, "2g.20gb": 1},
            )
        assert _apply_in_process(str(state), config_file, "five-1g-one-2g").ok


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "migkit", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _wait_for_lock(state: str, timeout: float = 30.0) -> None:
    """Wait until an apply holds the node's lock (it writes its pid there)."""
    lock = Path(state + ".apply.lock")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lock.exists() and lock.read_text().strip():
            return
        time.sleep(0.01)
    raise AssertionError("the apply never took the node lock")


def test_killed_apply_converges_on_rerun(node8: str, config_file: str) -> None:
    """An apply killed half-way is completed by running it again."""
    proc = _cli(
        "--sim-state",
        node8,
        "apply",
        "-f",
        config_file,
        "-c",
        "all-balanced",
        env={"MIGKIT_SIM_LATENCY_MS": "150"},
    )
    _wait_for_lock(node8)
    time.sleep(0.6)  # mode phase done (150 ms), config phase (8 x 150 ms per GPU) under way
    proc.kill()
    proc.wait()
    assert on_node(node8, "assert", "-f", config_file, "-c", "all-balanced").code == 1
    assert on_node(node8, "apply", "-f", config_file, "-c", "all-balanced").code == 0
    assert on_node(node8, "assert", "-f", config_file, "-c", "all-balanced").code == 0


def test_concurrent_applies_do_not_interleave(node8: str, config_file: str) -> None:
    """Of two simultaneous applies one runs and the other refuses, naming the lock."""
    env = {"MIGKIT_SIM_LATENCY_MS": "150"}
    first = _cli("--sim-state", node8, "apply", "-f", config_file, "-c", "all-balanced", env=env)
    _wait_for_lock(node8)
    second = _cli("--sim-state", node8, "apply", "-f", config_file, "-c", "all-3g.40gb", env=env)
    _out2, err2 = second.communicate(timeout=120)
    _out1, err1 = first.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert second.returncode == 1
    assert "another migkit apply is running" in err2
    assert on_node(node8, "assert", "-f", config_file, "-c", "all-balanced").code == 0
