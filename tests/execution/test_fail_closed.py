"""Fail closed: an unknown fact refuses a GPU, rollback works from a fresh read (MIG mode
included), and a read fault at any call of an apply never becomes a false success."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import migkit
from migkit import simulator
from migkit.cli import main as cli_main
from migkit.config import load_config
from migkit.execution.actions import restore_actions
from migkit.execution.orchestrate import apply, assert_config, restore
from migkit.execution.report import describe_gpu
from migkit.execution.transaction import layout_key
from migkit.models import GpuState
from strategies import random_layouts

MUTATING = (
    "nvmlDeviceSetMigMode",
    "nvmlDeviceCreateGpuInstanceWithPlacement",
    "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
    "nvmlComputeInstanceDestroy",
    "nvmlGpuInstanceDestroy",
)
# Calls that are neither reads of the node's state nor mutations.
NOT_READS = {"nvmlInitWithFlags", "nvmlInit_v2", "nvmlShutdown", "nvmlErrorString"}

CONFIG = """\
version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false
  all-balanced:
    - devices: all
      mig-enabled: true
      mig-devices: {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}
  five-1g-one-2g:
    - devices: all
      mig-enabled: true
      mig-devices: {"1g.10gb": 5, "2g.20gb": 1}
  all-3g.40gb:
    - devices: all
      mig-enabled: true
      mig-devices: {"3g.40gb": 2}
"""
TARGETS = {
    "all-disabled": {},
    "all-balanced": {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1},
    "five-1g-one-2g": {"1g.10gb": 5, "2g.20gb": 1},
    "all-3g.40gb": {"3g.40gb": 2},
}


@pytest.fixture
def config_file(tmp_path: Path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return str(path)


def snapshot(state: str) -> tuple[GpuState, ...]:
    with migkit.open_node(sim_state=state) as node:
        return node.snapshot()


def mutations(state: str) -> int:
    counts = simulator.stats(state)
    return sum(counts.get(name, 0) for name in MUTATING)


def cli(*args: str, faults: str | None = None) -> tuple[int, str, str]:
    """Run the CLI in this process (faults through MIGKIT_SIM_FAULTS); (code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    previous = os.environ.get("MIGKIT_SIM_FAULTS")
    if faults:
        os.environ["MIGKIT_SIM_FAULTS"] = faults
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(list(args))
    finally:
        if faults:
            if previous is None:
                del os.environ["MIGKIT_SIM_FAULTS"]
            else:
                os.environ["MIGKIT_SIM_FAULTS"] = previous
    return code, out.getvalue(), err.getvalue()


def orphans(gpus: tuple[GpuState, ...]) -> list[str]:
    return [
        f"GPU {g.index}: {gi.profile}@{gi.start}"
        for g in gpus
        for gi in g.gpu_instances
        if not gi.compute_instances
    ]


@attrs.define
class UnknownReads:
    """A node whose snapshots say that some reads failed, from the ``after``-th snapshot to
    the ``until``-th (what the NVML layer records in ``GpuState.unknown`` when a read fails)."""

    node: migkit.Node
    unknown: dict[int, tuple[str, ...]]
    after: int = 1
    until: int = 1 << 30
    snapshots: int = 0

    @property
    def state_file(self) -> str | None:
        return self.node.state_file

    @property
    def is_simulated(self) -> bool:
        return self.node.is_simulated

    def snapshot(self, *, tables: bool = True) -> tuple[GpuState, ...]:
        self.snapshots += 1
        gpus = self.node.snapshot(tables=tables)
        if not self.after <= self.snapshots <= self.until:
            return gpus
        return tuple(attrs.evolve(g, unknown=self.unknown.get(g.index, ())) for g in gpus)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.node, name)


PROCESS_READ = "nvmlDeviceGetComputeRunningProcesses_v3 (MIG device 1): NOT_SUPPORTED"


# --------------------------------------------------------------------------- unknown facts


def test_apply_refuses_a_gpu_with_a_failed_read_before_any_change(
    tmp_path: Path, config_file: str
) -> None:
    """A failed read on one GPU refuses the apply: exit 2, the read named, no mutating call."""
    state = simulator.write_state(tmp_path / "n.state", "2xh100-80gb")
    with migkit.open_node(sim_state=state) as node:
        report = apply(UnknownReads(node, {1: (PROCESS_READ,)}), load_config(config_file), "all-balanced")
    assert report.exit_code == 2 and not report.ok and not report.touched
    assert PROCESS_READ in report.summary() and "NOT applied" in report.summary()
    assert "GPU 1" in (report.error or "")
    assert mutations(state) == 0


@pytest.mark.parametrize("look", ["first", "under the lock"])
def test_a_read_failing_before_any_change_exits_2_naming_it(
    tmp_path: Path, config_file: str, look: str
) -> None:
    """A read that fails in the first look or in the look under the lock: exit 2, the call
    named, no mutating call."""
    function = "nvmlDeviceGetGpuInstances"
    state = simulator.write_state(tmp_path / "n.state", "1xh100-80gb")
    assert cli("--sim-state", state, "apply", "-f", config_file, "-c", "all-balanced")[0] == 0
    start = simulator.stats(state).get(function, 0)
    snapshot(state)
    per_look = simulator.stats(state).get(function, 0) - start
    before = mutations(state)
    position = 1 if look == "first" else per_look + 1
    code, out, err = cli(
        "--sim-state", state, "apply", "-f", config_file, "-c", "five-1g-one-2g",
        faults=f"{function}@{position}=UNKNOWN",
    )
    assert code == 2, out + err
    assert function in out + err and "nothing was changed" in out + err
    assert mutations(state) == before


def test_assert_never_passes_on_an_unknown(tmp_path: Path, config_file: str) -> None:
    """A node that matches still fails assert when a read of a covered GPU failed."""
    state = simulator.write_state(tmp_path / "n.state", "2xh100-80gb")
    config = load_config(config_file)
    with migkit.open_node(sim_state=state) as node:
        assert apply(node, config, "all-balanced").ok
        assert assert_config(node, config, "all-balanced").ok
        result = assert_config(UnknownReads(node, {0: (PROCESS_READ,)}), config, "all-balanced")
    assert not result.ok
    assert PROCESS_READ in result.summary()
    with migkit.open_node(sim_state=state) as node:
        valid = assert_config(UnknownReads(node, {0: (PROCESS_READ,)}), config, "all-balanced", valid_only=True)
    assert not valid.ok and PROCESS_READ in valid.summary()


def test_restore_refuses_a_gpu_with_a_failed_read(tmp_path: Path, config_file: str) -> None:
    """restore from a checkpoint is refused like apply when a GPU cannot be read."""
    from migkit import checkpoint

    state = simulator.write_state(tmp_path / "n.state", "2xh100-80gb")
    with migkit.open_node(sim_state=state) as node:
        saved = checkpoint.capture(node.snapshot())
        assert apply(node, load_config(config_file), "all-balanced").ok
        before = mutations(state)
        report = restore(UnknownReads(node, {0: (PROCESS_READ,)}), saved)
    assert report.exit_code == 2 and PROCESS_READ in report.summary()
    assert mutations(state) == before


def test_a_read_failing_after_the_mode_change_rolls_the_gpu_back(
    tmp_path: Path, config_file: str
) -> None:
    """A GPU that becomes unreadable after its MIG mode was enabled is not configured blind:
    its mode is set back, and the run exits 1 naming the read."""
    state = simulator.write_state(tmp_path / "n.state", "2xh100-80gb")
    with migkit.open_node(sim_state=state) as node:
        # snapshots: before the lock, under the lock, then three tries after the mode phase
        # (all unknown); the rollback reads it again
        wrapped = UnknownReads(node, {1: (PROCESS_READ,)}, after=3, until=5)
        report = apply(wrapped, load_config(config_file), "all-balanced")
        gpus = {g.index: g for g in node.snapshot()}
    assert report.exit_code == 1
    assert PROCESS_READ in report.summary()
    assert [o.status for o in report.outcomes] == ["applied", "restored"]
    assert gpus[0].device_counts() == TARGETS["all-balanced"]
    assert not gpus[1].mig_enabled and not gpus[1].gpu_instances


@attrs.define
class HiddenInstances(UnknownReads):
    """A node whose first ``until`` snapshots miss GPU 0's instances at ``starts`` (a read
    that went wrong without saying so)."""

    starts: tuple[int, ...] = ()

    def snapshot(self, *, tables: bool = True) -> tuple[GpuState, ...]:
        self.snapshots += 1
        gpus = self.node.snapshot(tables=tables)
        if self.snapshots > self.until:
            return gpus
        first = gpus[0]
        kept = tuple(gi for gi in first.gpu_instances if gi.start not in self.starts)
        return (attrs.evolve(first, gpu_instances=kept), *gpus[1:])


def test_rollback_never_removes_an_instance_the_run_did_not_create(
    tmp_path: Path, config_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance missing from the state read before the change is left alone by the
    rollback, and the GPU is reported failed rather than restored."""
    state = simulator.write_state(tmp_path / "n.state", "1xh100-80gb")
    assert cli("--sim-state", state, "apply", "-f", config_file, "-c", "all-balanced")[0] == 0
    (gpu,) = snapshot(state)
    three = next(gi for gi in gpu.gpu_instances if gi.profile == "3g.40gb")
    monkeypatch.setenv("MIGKIT_SIM_FAULTS", "nvmlGpuInstanceCreateComputeInstanceWithPlacement@1=UNKNOWN")
    with migkit.open_node(sim_state=state) as node:
        hidden = HiddenInstances(node, {}, until=2, starts=(three.start,))
        report = apply(hidden, load_config(config_file), "all-3g.40gb")
    monkeypatch.delenv("MIGKIT_SIM_FAULTS")
    (after,) = snapshot(state)
    assert any(gi.id == three.id and gi.compute_instances for gi in after.gpu_instances)
    (outcome,) = report.outcomes
    assert outcome.status == "failed" and "did not create" in outcome.detail


@attrs.define
class FailingReads(UnknownReads):
    """A node whose snapshots from the ``after``-th to the ``until``-th raise an NVML error."""

    def snapshot(self, *, tables: bool = True) -> tuple[GpuState, ...]:
        from migkit.errors import NvmlError

        self.snapshots += 1
        if self.after <= self.snapshots <= self.until:
            raise NvmlError(999, call="nvmlDeviceGetGpuInstances")
        return self.node.snapshot(tables=tables)


def test_node_unreadable_after_the_mode_change_rolls_the_mode_back(
    tmp_path: Path, config_file: str
) -> None:
    """When no read succeeds after the mode phase, every GPU whose mode changed is set back
    (the rollback's own read succeeds) and the run exits 1 naming the call."""
    state = simulator.write_state(tmp_path / "n.state", "2xh100-80gb")
    with migkit.open_node(sim_state=state) as node:
        # snapshots 3 to 11: every read of the three re-plans, three tries each
        report = apply(FailingReads(node, {}, after=3, until=11), load_config(config_file), "all-balanced")
    assert report.exit_code == 1
    assert [o.status for o in report.outcomes] == ["restored", "restored"]
    assert "nvmlDeviceGetGpuInstances" in report.summary()
    assert all(not g.mig_enabled and not g.gpu_instances for g in snapshot(state))


@attrs.define
class MissingProfile(UnknownReads):
    """A node whose snapshots from ``after`` to ``until`` lack the 1g.10gb profile (a profile
    table read that went wrong without saying so)."""

    def snapshot(self, *, tables: bool = True) -> tuple[GpuState, ...]:
        self.snapshots += 1
        gpus = self.node.snapshot(tables=tables)
        if not self.after <= self.snapshots <= self.until:
            return gpus
        return tuple(
            attrs.evolve(g, profiles=tuple(p for p in g.profiles if p.name != "1g.10gb")) for g in gpus
        )


def test_config_that_no_longer_plans_after_the_mode_change_rolls_the_mode_back(
    tmp_path: Path, config_file: str
) -> None:
    """If the node stops planning after the mode phase (here: a profile missing from every
    read), the modes are set back and the run exits 1, not 2: something was changed."""
    state = simulator.write_state(tmp_path / "n.state", "2xh100-80gb")
    with migkit.open_node(sim_state=state) as node:
        report = apply(MissingProfile(node, {}, after=3, until=11), load_config(config_file), "all-balanced")
    assert report.exit_code == 1 and report.touched
    assert [o.status for o in report.outcomes] == ["restored", "restored"]
    assert "1g.10gb" in (report.error or "")
    assert all(not g.mig_enabled for g in snapshot(state))


def test_a_gpu_that_stays_unreadable_is_reported_in_neither_layout(
    tmp_path: Path, config_file: str
) -> None:
    """When the GPU cannot be read again, rollback does not act blind and the report says
    so (failed, mode still changed), never "restored"."""
    state = simulator.write_state(tmp_path / "n.state", "1xh100-80gb")
    with migkit.open_node(sim_state=state) as node:
        report = apply(UnknownReads(node, {0: (PROCESS_READ,)}, after=3), load_config(config_file), "all-balanced")
    (outcome,) = report.outcomes
    assert outcome.status == "failed" and outcome.mode_changed
    assert "could not restore" in outcome.detail and PROCESS_READ in outcome.detail
    assert report.exit_code == 1 and "1 GPU(s) changed" not in report.summary()


# --------------------------------------------------------------------------- rollback


def test_restore_actions_take_any_layout_back() -> None:
    """restore_actions from one layout to another, carried out, gives the other's layout key."""
    from migkit.models import ComputeInstance, GpuInstance

    def gi(gid: int, pid: int, start: int, size: int, cis: tuple[tuple[int, int, int], ...]) -> GpuInstance:
        return GpuInstance(
            gid,
            pid,
            f"p{pid}",
            start,
            size,
            tuple(ComputeInstance(k, c[0], f"c{c[0]}", c[1], c[2]) for k, c in enumerate(cis)),
        )

    base = GpuState(0, "GPU-0", "x", 0, 0, "0", 0, 9, True, 1, 1)
    before = attrs.evolve(base, gpu_instances=(gi(1, 9, 0, 4, ((2, 0, 4),)), gi(2, 19, 6, 1, ((0, 0, 1),))))
    now = attrs.evolve(
        base, gpu_instances=(gi(1, 9, 0, 4, ((0, 0, 1), (0, 1, 1))), gi(5, 19, 4, 1, ((0, 0, 1),)))
    )
    actions = restore_actions(now, before)
    assert actions.destroy_cis == ((1, 0), (1, 1), (5, 0))
    assert actions.destroy_gis == (5,)
    assert [(pid, p.start) for pid, p in actions.create_gis] == [(19, 6)]
    assert sorted((p.start, cp) for p, cp, _ in actions.create_cis) == [(0, 2), (6, 0)]
    assert restore_actions(before, before).empty
    assert layout_key(before) != layout_key(now)


H100 = migkit.gpu_model("h100-80gb")


def _set_layout(node: migkit.Node, enabled: bool, layout: tuple[tuple[str, int], ...]) -> None:
    """Put GPU 0 of ``node`` in MIG mode ``enabled`` with ``layout`` (each GI holding one
    GI-wide compute instance), whatever it had."""
    from migkit.execution.actions import clear_actions
    from migkit.execution.transaction import execute_gpu
    from migkit.models import Placement
    from migkit.nvml.node import ComputeInstanceRequest, GpuInstanceRequest, MigModeRequest
    from strategies import full_ci_instance

    (gpu,) = node.snapshot()
    if gpu.mig_enabled:
        execute_gpu(node, gpu, clear_actions(gpu))
    (result,) = node.set_mig_mode([MigModeRequest(0, int(enabled))])
    assert result.ok
    if not enabled:
        return
    wanted = [full_ci_instance(H100, name, start, gi_id=0) for name, start in layout]
    created = node.create_gpu_instances(
        [GpuInstanceRequest(0, gi.profile_id, Placement(gi.start, gi.size)) for gi in wanted]
    )
    assert all(r.ok for r in created)
    cis = node.create_compute_instances(
        [
            ComputeInstanceRequest(0, r.gpu_instance, ci.profile_id, Placement(ci.start, ci.size))
            for r, gi in zip(created, wanted, strict=True)
            for ci in gi.compute_instances
            if r.gpu_instance is not None
        ]
    )
    assert all(r.ok for r in cis)


@settings(max_examples=25, deadline=None)
@given(
    before_enabled=st.booleans(),
    before=random_layouts(H100),
    now_enabled=st.booleans(),
    now=random_layouts(H100),
    drop_ci=st.booleans(),
)
def test_restore_gpu_brings_any_state_back(
    before_enabled: bool,
    before: tuple[tuple[str, int], ...],
    now_enabled: bool,
    now: tuple[tuple[str, int], ...],
    drop_ci: bool,
) -> None:
    """From any MIG mode and layout, restore_gpu returns the GPU to any earlier mode and layout
    (instances at their placements), verified by a fresh read."""
    from migkit.execution.transaction import restore_gpu

    with migkit.open_node(simulate="1xh100-80gb") as node:
        _set_layout(node, before_enabled, before)
        (earlier,) = node.snapshot()
        _set_layout(node, now_enabled, now)
        (current,) = node.snapshot()
        if drop_ci and current.gpu_instances:  # a GPU instance left without its compute instance
            from migkit.nvml.node import ComputeInstanceRef

            gi = current.gpu_instances[0]
            node.destroy_compute_instances([ComputeInstanceRef(0, gi.id, gi.compute_instances[0].id)])
        result = restore_gpu(node, earlier)
        (after,) = node.snapshot()
    assert result.ok, result.problems
    assert layout_key(after) == layout_key(earlier)


@pytest.mark.parametrize(
    "function", ["nvmlGpuInstanceGetInfo", "nvmlComputeInstanceGetInfo_v2"]
)
def test_rollback_removes_an_instance_whose_creation_could_not_be_read(
    tmp_path: Path, config_file: str, function: str
) -> None:
    """Every call position of the read that locates a new instance: no orphan is left, each
    GPU is at its previous layout or at the target, and a rerun converges."""
    base = simulator.write_state(tmp_path / "base.state", "2xh100-80gb")
    assert cli("--sim-state", base, "apply", "-f", config_file, "-c", "all-balanced")[0] == 0
    reference = tmp_path / "ref.state"
    reference.write_text(Path(base).read_text())
    start = simulator.stats(str(reference)).get(function, 0)
    assert cli("--sim-state", str(reference), "apply", "-f", config_file, "-c", "all-3g.40gb")[0] == 0
    calls = simulator.stats(str(reference)).get(function, 0) - start
    previous = TARGETS["all-balanced"]
    create_failures = 0
    for n in range(1, calls + 1):
        state = tmp_path / f"s{n}.state"
        state.write_text(Path(base).read_text())
        code, out, err = cli(
            "--sim-state", str(state), "apply", "-f", config_file, "-c", "all-3g.40gb",
            faults=f"{function}@{n}=UNKNOWN",
        )
        create_failures += "failed creating" in out
        gpus = snapshot(str(state))
        assert not orphans(gpus), f"{function}@{n}: {orphans(gpus)}"
        for gpu in gpus:
            assert gpu.device_counts() in (previous, TARGETS["all-3g.40gb"]), f"{function}@{n}"
        if code != 0:
            assert function in out + err, f"{function}@{n}: the failed read is not named"
        assert cli("--sim-state", str(state), "apply", "-f", config_file, "-c", "all-3g.40gb")[0] == 0
    assert create_failures > 0  # some position hit the read right after a create


# --------------------------------------------------------------------------- MIG mode


def test_failed_mode_change_while_disabling_brings_the_instances_back(
    tmp_path: Path, config_file: str
) -> None:
    """Instances destroyed to disable MIG come back when setting the mode then fails."""
    state = simulator.write_state(tmp_path / "n.state", "1xh100-80gb")
    assert cli("--sim-state", state, "apply", "-f", config_file, "-c", "all-balanced")[0] == 0
    before = layout_key(snapshot(state)[0])
    code, out, err = cli(
        "--sim-state", state, "apply", "-f", config_file, "-c", "all-disabled",
        faults="nvmlDeviceSetMigMode@1=UNKNOWN",
    )
    assert code == 1
    assert "nvmlDeviceSetMigMode" in err or "Unknown Error" in err  # errors go to stderr
    gpu = snapshot(state)[0]
    assert layout_key(gpu) == before
    assert gpu.device_counts() == TARGETS["all-balanced"]
    assert "restored" in out


def test_failure_after_mig_was_enabled_sets_the_mode_back(tmp_path: Path, config_file: str) -> None:
    """A create failing after MIG was enabled ends with MIG disabled again, as it was, and the
    report says restored only because that is true."""
    state = simulator.write_state(tmp_path / "n.state", "1xh100-80gb")
    code, out, _ = cli(
        "--sim-state", state, "apply", "-o", "json", "-f", config_file, "-c", "all-balanced",
        faults="nvmlDeviceCreateGpuInstanceWithPlacement@2=INSUFFICIENT_RESOURCES",
    )
    assert code == 1
    gpu = snapshot(state)[0]
    report = json.loads(out)
    (outcome,) = report["gpus"]
    assert outcome["status"] == "restored"
    assert not gpu.mig_enabled and gpu.pending_mig_mode == 0 and not gpu.gpu_instances
    assert outcome["state"] == describe_gpu(gpu)


def test_disabling_mig_counts_as_a_change(tmp_path: Path, config_file: str) -> None:
    """all-disabled on MIG GPUs reports them changed in the summary and in JSON."""
    state = simulator.write_state(tmp_path / "n.state", "2xh100-80gb")
    assert cli("--sim-state", state, "apply", "-f", config_file, "-c", "all-balanced")[0] == 0
    reference = tmp_path / "ref.state"
    reference.write_text(Path(state).read_text())
    code, out, _ = cli("--sim-state", state, "apply", "-f", config_file, "-c", "all-disabled")
    assert code == 0
    assert "2 GPU(s) changed, 0 unchanged" in out
    code, out, _ = cli(
        "--sim-state", str(reference), "apply", "-o", "json", "-f", config_file, "-c", "all-disabled"
    )
    report = json.loads(out)
    assert code == 0 and report["changed"] == 2
    assert [g["status"] for g in report["gpus"]] == ["applied", "applied"]
    assert all(g["mode_changed"] for g in report["gpus"])


def test_enabling_mig_without_instances_counts_as_a_change(tmp_path: Path) -> None:
    """mig-enabled with no devices: the mode change alone is a change; a rerun is unchanged."""
    state = simulator.write_state(tmp_path / "n.state", "1xh100-80gb")
    config = tmp_path / "c.yaml"
    config.write_text(
        "version: v1\nmig-configs:\n  mig:\n    - devices: all\n      mig-enabled: true\n      mig-devices: {}\n"
    )
    code, out, _ = cli("--sim-state", state, "apply", "-f", str(config), "-c", "mig")
    assert code == 0 and "1 GPU(s) changed, 0 unchanged" in out
    code, out, _ = cli("--sim-state", state, "apply", "-f", str(config), "-c", "mig")
    assert code == 0 and "0 GPU(s) changed, 1 unchanged" in out


def test_mode_only_reports_untouched_gpus_unchanged(tmp_path: Path, config_file: str) -> None:
    """--mode-only changes and reports only the GPUs whose mode differs."""
    state = simulator.write_state(tmp_path / "n.state", "2xh100-80gb")
    assert cli("--sim-state", state, "apply", "-f", config_file, "-c", "all-balanced")[0] == 0
    code, out, _ = cli(
        "--sim-state", state, "apply", "--mode-only", "-o", "json", "-f", config_file, "-c", "all-3g.40gb"
    )
    assert code == 0
    assert [g["status"] for g in json.loads(out)["gpus"]] == ["unchanged", "unchanged"]


# --------------------------------------------------------------------------- read-fault sweep

READ_ERRORS = ("UNKNOWN", "NOT_SUPPORTED", "NOT_FOUND", "GPU_IS_LOST")
# (node, config applied first or None, config applied under faults)
SCENARIOS = (
    ("2xh100-80gb", "all-balanced", "five-1g-one-2g"),
    ("2xh100-80gb", None, "all-balanced"),
    ("2xh100-80gb", "all-balanced", "all-disabled"),
)


def _sweep_profile() -> tuple[int, int]:
    """(positions sampled per function and scenario, errors per position): two and one in
    CI; every position with every error under MIGKIT_FAULT_SWEEP=long; ``P,E`` for P and E."""
    profile = os.environ.get("MIGKIT_FAULT_SWEEP", "")
    if profile == "long":
        return 10_000, len(READ_ERRORS)
    if "," in profile:
        positions, errors = profile.split(",")
        return int(positions), min(int(errors), len(READ_ERRORS))
    return 2, 1


@contextlib.contextmanager
def _copy(tmp_path: Path, base: str, name: str) -> Iterator[str]:
    path = tmp_path / name
    path.write_text(Path(base).read_text())
    try:
        yield str(path)
    finally:
        for leftover in tmp_path.glob(name + "*"):
            leftover.unlink()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: f"{s[1]}-to-{s[2]}")
def test_read_fault_sweep(tmp_path: Path, config_file: str, scenario: tuple[str, str | None, str]) -> None:
    """Every read NVML function an apply calls, at sampled call positions, with read errors:
    the apply exits 0 only with every GPU truly at the target; otherwise it exits 1 or 2
    naming the failed call, leaves no orphan, each GPU at its previous layout (MIG mode
    included) or at the target, the report agreeing with a fresh read, and a rerun converges."""
    spec, first, target = scenario
    base = simulator.write_state(tmp_path / "base.state", spec)
    if first is not None:
        assert cli("--sim-state", base, "apply", "-f", config_file, "-c", first)[0] == 0
    previous = {g.index: layout_key(g) for g in snapshot(base)}
    with _copy(tmp_path, base, "ref.state") as reference:
        start = simulator.stats(reference)
        assert cli("--sim-state", reference, "apply", "-f", config_file, "-c", target)[0] == 0
        end = simulator.stats(reference)
        wanted = {g.index: layout_key(g) for g in snapshot(reference)}
    calls = {
        name: end[name] - start.get(name, 0)
        for name in end
        if name not in NOT_READS and name not in MUTATING and name.startswith("nvml")
        and end[name] > start.get(name, 0)
    }
    assert "nvmlDeviceGetMigMode" in calls and "nvmlDeviceGetGpuInstances" in calls
    positions_per, errors_per = _sweep_profile()
    rng = random.Random(f"{spec}/{first}/{target}")
    trials = failures_named = 0
    problems: list[str] = []
    unnamed: list[str] = []
    for function, count in sorted(calls.items()):
        positions = sorted(rng.sample(range(1, count + 1), min(positions_per, count)))
        for n in positions:
            for error in rng.sample(READ_ERRORS, errors_per):
                trials += 1
                case = f"{function}@{n}={error}"
                with _copy(tmp_path, base, "t.state") as state:
                    code, out, err = cli(
                        "--sim-state", state, "apply", "-o", "json", "-f", config_file, "-c", target,
                        faults=case,
                    )
                    gpus = snapshot(state)
                    if orphans(gpus):
                        problems.append(f"{case}: orphans {orphans(gpus)}")
                    keys = {g.index: layout_key(g) for g in gpus}
                    if code == 0:
                        if keys != wanted:
                            problems.append(f"{case}: exit 0 but the node is not at the target")
                    elif code not in (1, 2):
                        problems.append(f"{case}: exit {code}: {err}")
                    else:
                        failures_named += function in out + err
                        fresh = {g.index: describe_gpu(g) for g in gpus}
                        agrees = all(
                            o["state"] == fresh[o["index"]]
                            for o in (json.loads(out)["gpus"] if out.strip() else ())
                            if o["state"]
                        )
                        if function not in out + err or not agrees:
                            unnamed.append(case)
                        for index, key in keys.items():
                            if key not in (previous[index], wanted[index]):
                                problems.append(f"{case}: GPU {index} in neither layout")
                    if cli("--sim-state", state, "apply", "-f", config_file, "-c", target)[0] != 0:
                        problems.append(f"{case}: the rerun failed")
                    elif cli("--sim-state", state, "assert", "-f", config_file, "-c", target)[0] != 0:
                        problems.append(f"{case}: the rerun did not converge")
    problems.extend(
        f"{case}: the failed call is not named, or the report disagrees with a fresh read"
        for case in unnamed
    )
    print(f"read-fault sweep {first}->{target}: {trials} trials, {len(problems)} failures, "
          f"{len(unnamed)} not named ({failures_named} named)")
    assert not problems, "\n".join(problems)
    assert trials >= len(calls)
    assert failures_named > 0
