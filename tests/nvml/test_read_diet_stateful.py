"""The kept tables never show: a stateful test against a fresh reading after every change.

A node stays open while random steps change it behind the shim's back (MIG modes, GPU and
compute instances, another GPU model put at an index). After each step the snapshot, which may
use the kept identity and profile tables, must equal a snapshot read with nothing kept; and a
mode-only snapshot must agree with it on every GPU with MIG on.
"""

from __future__ import annotations

import os
import tempfile
import time

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from migkit import open_node, simulator
from migkit.models import GpuState
from migkit.nvml._library import lib
from migkit.nvml.node import (
    ComputeInstanceRef,
    ComputeInstanceRequest,
    GpuInstanceRef,
    GpuInstanceRequest,
    MigModeRequest,
)

SPECS = ("1xh100-80gb,1xa100-40gb", "1xa100-40gb,1xh100-80gb", "2xh100-80gb")


class KeptTablesMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.state = simulator.write_state(os.path.join(self.dir.name, "node.state"), SPECS[0])
        self.node = open_node(sim_state=self.state)
        self.node.snapshot()

    def teardown(self) -> None:
        self.node.close()
        self.dir.cleanup()

    def _gpu(self, index: int) -> GpuState:
        return next(g for g in self.node.snapshot() if g.index == index)

    @rule(gpu=st.integers(0, 1))
    def toggle_mig_mode(self, gpu: int) -> None:
        current = self._gpu(gpu)
        self.node.set_mig_mode([MigModeRequest(gpu, 0 if current.mig_enabled else 1)])
        if current.mig_mode != self._gpu(gpu).pending_mig_mode:
            simulator.reset_gpus(self.state, [gpu])  # an Ampere mode change waits for a reset
            time.sleep(0.002)  # the simulator looks at its state file at most once per ms

    @rule(gpu=st.integers(0, 1), pick=st.integers(0, 50))
    def create_gpu_instance(self, gpu: int, pick: int) -> None:
        current = self._gpu(gpu)
        if not current.mig_enabled or not current.profiles:
            return
        profile = current.profiles[pick % len(current.profiles)]
        placement = profile.placements[pick % len(profile.placements)]
        made = self.node.create_gpu_instances([GpuInstanceRequest(gpu, profile.id, placement)])[0]
        if made.ok and made.gpu_instance is not None and pick % 2 == 0:
            whole = max(profile.compute_profiles, key=lambda cp: cp.slice_count, default=None)
            if whole is None:  # its compute profiles are read through a live instance
                whole = max(self._gpu(gpu).profile(profile.id).compute_profiles, key=lambda cp: cp.slice_count)
            self.node.create_compute_instances([ComputeInstanceRequest(gpu, made.gpu_instance, whole.id)])

    @rule(gpu=st.integers(0, 1))
    def destroy_everything(self, gpu: int) -> None:
        current = self._gpu(gpu)
        self.node.destroy_compute_instances(
            [ComputeInstanceRef(gpu, gi.id, ci.id) for gi in current.gpu_instances for ci in gi.compute_instances]
        )
        self.node.destroy_gpu_instances([GpuInstanceRef(gpu, gi.id) for gi in current.gpu_instances])

    @rule(spec=st.sampled_from(SPECS))
    def another_node_at_the_same_indices(self, spec: str) -> None:
        simulator.write_state(self.state, spec)
        time.sleep(0.002)

    @invariant()
    def kept_tables_read_like_nothing_kept(self) -> None:
        kept = self.node.snapshot()
        mode_only = self.node.snapshot(tables=False)
        lib.shim_forget_tables(-1)
        fresh = self.node.snapshot()
        assert kept == fresh
        assert not any(g.unknown for g in fresh)
        for quick, full in zip(mode_only, fresh, strict=True):
            assert quick.uuid == full.uuid and quick.mig_mode == full.mig_mode
            if full.mig_enabled:
                assert quick == full
            else:
                assert quick.profiles in ((), full.profiles)


KeptTablesMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=12, deadline=None)
test_kept_tables_read_like_nothing_kept = KeptTablesMachine.TestCase
