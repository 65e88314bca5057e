"""Stateful test of the C NVML simulator: random MIG operations through pynvml, checked
against a small pure-Python model of the driver's rules.

The model reads only the profile *tables* from the state file (IDs, placements, instance
counts, the driver's placement order); the *rules* — memory overlap, instance caps, the
ALL_ME/NO_ME exclusion, the Ampere pending mode, heap-numbered GI ids, lowest-free CI ids,
remaining capacity — are written out here again, independently of the C code. After every
step NVML's view (modes, GIs and CIs with their placements, remaining capacities) must equal
the model's.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
import time
from ctypes import byref, c_uint
from typing import Any

import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from migkit import simulator

ctypes.CDLL(simulator.library_path(), mode=ctypes.RTLD_GLOBAL)
pynvml: Any = pytest.importorskip("pynvml")

# Hopper (immediate mode switch), Ampere (pending until reset), and ALL_ME/NO_ME profiles.
SPEC = "1xh100-80gb,1xa100-40gb,1xrtx-pro-6000"
SUCCESS, INVALID_ARGUMENT, NOT_SUPPORTED, IN_USE, INSUFFICIENT_RESOURCES = 0, 2, 3, 19, 23
ALL_ME, NO_ME = {0x0F, 0x10}, {0x0D, 0x0E}

Span = tuple[int, int]


@attrs.frozen
class ComputeProfile:
    id: int
    instances: int
    placements: tuple[Span, ...]


@attrs.frozen
class GpuProfile:
    id: int
    index: int
    instances: int
    size: int
    placements: tuple[Span, ...]
    order: tuple[int, ...]
    compute: dict[int, ComputeProfile]


@attrs.define
class ModelGi:
    profile: int
    start: int
    size: int
    cis: dict[int, tuple[int, int, int]] = attrs.Factory(dict)  # ci id -> (profile, start, size)


@attrs.define
class ModelGpu:
    arch: int
    slices: int
    profiles: dict[int, GpuProfile]
    mode: int = 0
    pending: int = 0
    gis: dict[int, ModelGi] = attrs.Factory(dict)


def load_model(path: str) -> list[ModelGpu]:
    """GPUs and their profile tables as the state file describes them, MIG off, empty."""

    def spans(text: str) -> tuple[Span, ...]:
        if text == "-":
            return ()
        return tuple((int(a), int(b)) for a, b in (item.split(":") for item in text.split(",")))

    records = simulator.read_state(path)
    gpus = [ModelGpu(arch=r.int("arch"), slices=0, profiles={}) for r in records if r.keyword == "gpu"]
    for r in records:
        if r.keyword == "gip":
            places = spans(r.fields["placements"])
            gpu = gpus[r.int("gpu")]
            gpu.profiles[r.int("id")] = GpuProfile(
                id=r.int("id"), index=r.int("index"), instances=r.int("instances"), size=places[0][1],
                placements=places, order=tuple(int(s) for s in r.fields["order"].split(",")), compute={},
            )
            gpu.slices = max(gpu.slices, *(s + n for s, n in places))
    for r in records:
        if r.keyword == "cip":
            profile = gpus[r.int("gpu")].profiles[r.int("gip")]
            profile.compute[r.int("id")] = ComputeProfile(
                id=r.int("id"), instances=r.int("instances"), placements=spans(r.fields["placements"])
            )
    return gpus


def overlaps(a: Span, b: Span) -> bool:
    return a[0] < b[0] + b[1] and b[0] < a[0] + a[1]


def all_me_clash(gpu: ModelGpu, profile: GpuProfile) -> bool:
    for gi in gpu.gis.values():
        other = gpu.profiles[gi.profile]
        if (other.index in ALL_ME and profile.index not in NO_ME) or (
            profile.index in ALL_ME and other.index not in NO_ME
        ):
            return True
    return False


def memory_free(gpu: ModelGpu, span: Span) -> bool:
    return not any(overlaps((gi.start, gi.size), span) for gi in gpu.gis.values())


def gi_remaining(gpu: ModelGpu, profile: GpuProfile) -> int:
    existing = sum(gi.profile == profile.id for gi in gpu.gis.values())
    if all_me_clash(gpu, profile) or existing >= profile.instances:
        return 0
    free = sum(memory_free(gpu, p) for p in profile.placements)
    return min(free, profile.instances - existing)


def compute_free(gi: ModelGi, span: Span) -> bool:
    return not any(overlaps((s, n), span) for _, s, n in gi.cis.values())


def ci_remaining(gi: ModelGi, profile: ComputeProfile) -> int:
    existing = sum(p == profile.id for p, _, _ in gi.cis.values())
    if existing >= profile.instances:
        return 0
    return min(sum(compute_free(gi, p) for p in profile.placements), profile.instances - existing)


def rc_of(call: Any, *args: Any) -> tuple[int, Any]:
    try:
        return SUCCESS, call(*args)
    except pynvml.NVMLError as err:
        return int(err.value), None


class SimulatorMachine(RuleBasedStateMachine):
    """pynvml against the simulator on one side, the model on the other."""

    def __init__(self) -> None:
        super().__init__()
        self.tmpdir = tempfile.mkdtemp(prefix="migkit-sim-sm-")
        self.path = simulator.write_state(os.path.join(self.tmpdir, "node.state"), SPEC)
        self.saved_env = {k: os.environ.get(k) for k in ("MIGKIT_SIM_STATE", "MIGKIT_SIM_FAULTS")}
        os.environ["MIGKIT_SIM_STATE"] = self.path
        os.environ.pop("MIGKIT_SIM_FAULTS", None)
        pynvml.nvmlInit()
        self.model = load_model(self.path)
        self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(len(self.model))]

    def teardown(self) -> None:
        pynvml.nvmlShutdown()
        for key, value in self.saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def gi_handle(self, gpu: int, gi_id: int) -> Any:
        return pynvml.nvmlDeviceGetGpuInstanceById(self.handles[gpu], gi_id)

    # ------------------------------------------------------------------ rules

    @initialize(enable=st.booleans())
    def start_with_mig_enabled(self, enable: bool) -> None:
        """Most runs start with MIG on everywhere (the Ampere GPU reset), so that instance
        rules are not mostly refused; the others start from the fresh node."""
        if enable:
            for gpu in range(len(self.model)):
                self.set_mig_mode(gpu, 1)
            self.reset(1)

    @rule(gpu=st.integers(0, 2), mode=st.sampled_from([1, 1, 0]))
    def set_mig_mode(self, gpu: int, mode: int) -> None:
        model = self.model[gpu]
        rc, status = rc_of(pynvml.nvmlDeviceSetMigMode, self.handles[gpu], mode)
        if mode == 0 and model.gis:
            assert rc == IN_USE
            return
        assert (rc, status) == (SUCCESS, SUCCESS)
        model.pending = mode
        if model.arch >= 9:
            model.mode = mode

    @rule(gpu=st.integers(0, 2))
    def reset(self, gpu: int) -> None:
        simulator.reset_gpus(self.path, [gpu])
        model = self.model[gpu]
        model.mode = model.pending
        model.gis.clear()
        time.sleep(0.002)  # read-only calls re-check the file at most once per millisecond

    def create_gpu_instance(self, gpu: int, data: st.DataObject, explicit: bool) -> None:
        model = self.model[gpu]
        profile = model.profiles[data.draw(st.sampled_from(sorted(model.profiles)), label="profile")]
        want: Span | None = None
        if explicit:
            want = data.draw(
                st.sampled_from(profile.placements) | st.tuples(st.integers(0, 8), st.integers(1, 8)),
                label="placement",
            )
            p = pynvml.c_nvmlGpuInstancePlacement_t(*want)
            rc, gi = rc_of(pynvml.nvmlDeviceCreateGpuInstanceWithPlacement, self.handles[gpu], profile.id, byref(p))
        else:
            rc, gi = rc_of(pynvml.nvmlDeviceCreateGpuInstance, self.handles[gpu], profile.id)
        expected, start = self.expect_gi(model, profile, want)
        assert rc == expected
        if rc != SUCCESS:
            return
        gi_id = model.slices // profile.size - 1 + start // profile.size
        model.gis[gi_id] = ModelGi(profile.id, start, profile.size)
        info = pynvml.nvmlGpuInstanceGetInfo(gi)
        assert (info.id, info.profileId, info.placement.start, info.placement.size) == (
            gi_id, profile.id, start, profile.size
        )

    @rule(gpu=st.integers(0, 2), data=st.data())
    def create_gpu_instance_at_placement(self, gpu: int, data: st.DataObject) -> None:
        self.create_gpu_instance(gpu, data, explicit=True)

    @rule(gpu=st.integers(0, 2), data=st.data())
    def create_gpu_instance_where_the_driver_chooses(self, gpu: int, data: st.DataObject) -> None:
        self.create_gpu_instance(gpu, data, explicit=False)

    @staticmethod
    def expect_gi(model: ModelGpu, profile: GpuProfile, want: Span | None) -> tuple[int, int]:
        if model.mode == 0:
            return NOT_SUPPORTED, -1
        if want is not None and want not in profile.placements:
            return INVALID_ARGUMENT, -1
        existing = sum(gi.profile == profile.id for gi in model.gis.values())
        if all_me_clash(model, profile) or existing >= profile.instances:
            return INSUFFICIENT_RESOURCES, -1
        if want is not None:
            return (SUCCESS, want[0]) if memory_free(model, want) else (INSUFFICIENT_RESOURCES, -1)
        for start in profile.order:
            if memory_free(model, (start, profile.size)):
                return SUCCESS, start
        return INSUFFICIENT_RESOURCES, -1

    def gpus_with_gis(self) -> list[int]:
        return [index for index, model in enumerate(self.model) if model.gis]

    @precondition(lambda self: self.gpus_with_gis())
    @rule(data=st.data())
    def create_compute_instance(self, data: st.DataObject) -> None:
        gpu = data.draw(st.sampled_from(self.gpus_with_gis()), label="gpu")
        model = self.model[gpu]
        gi_id = data.draw(st.sampled_from(sorted(model.gis)), label="gi")
        gi = model.gis[gi_id]
        table = model.profiles[gi.profile].compute
        profile = table[data.draw(st.sampled_from(sorted(table)), label="ci profile")]
        want = data.draw(st.none() | st.sampled_from(profile.placements) | st.just((5, 1)), label="placement")
        handle = self.gi_handle(gpu, gi_id)
        if want is None:
            rc, ci = rc_of(pynvml.nvmlGpuInstanceCreateComputeInstance, handle, profile.id)
        else:
            p = pynvml.c_nvmlComputeInstancePlacement_t(*want)
            rc, ci = rc_of(pynvml.nvmlGpuInstanceCreateComputeInstanceWithPlacement, handle, profile.id, byref(p))
        existing = sum(p == profile.id for p, _, _ in gi.cis.values())
        free = [s for s in profile.placements if compute_free(gi, s)]
        if want is not None and want not in profile.placements:
            expected: tuple[int, Span | None] = (INVALID_ARGUMENT, None)
        elif existing >= profile.instances:
            expected = (INSUFFICIENT_RESOURCES, None)
        elif want is not None:
            expected = (SUCCESS, want) if want in free else (INSUFFICIENT_RESOURCES, None)
        else:
            expected = (SUCCESS, free[0]) if free else (INSUFFICIENT_RESOURCES, None)
        assert rc == expected[0]
        if rc != SUCCESS or expected[1] is None:
            return
        ci_id = min(set(range(8)) - set(gi.cis))
        gi.cis[ci_id] = (profile.id, *expected[1])
        info = pynvml.nvmlComputeInstanceGetInfo(ci)
        assert (info.id, info.profileId, info.placement.start, info.placement.size) == (ci_id, *gi.cis[ci_id])

    @precondition(lambda self: any(gi.cis for model in self.model for gi in model.gis.values()))
    @rule(data=st.data())
    def destroy_compute_instance(self, data: st.DataObject) -> None:
        cis = [(n, g, c) for n, model in enumerate(self.model) for g, gi in model.gis.items() for c in gi.cis]
        gpu, gi_id, ci_id = data.draw(st.sampled_from(sorted(cis)), label="ci")
        model = self.model[gpu]
        ci = pynvml.nvmlGpuInstanceGetComputeInstanceById(self.gi_handle(gpu, gi_id), ci_id)
        pynvml.nvmlComputeInstanceDestroy(ci)
        del model.gis[gi_id].cis[ci_id]

    @precondition(lambda self: self.gpus_with_gis())
    @rule(data=st.data())
    def destroy_gpu_instance(self, data: st.DataObject) -> None:
        gpu = data.draw(st.sampled_from(self.gpus_with_gis()), label="gpu")
        model = self.model[gpu]
        gi_id = data.draw(st.sampled_from(sorted(model.gis)), label="gi")
        rc, _ = rc_of(pynvml.nvmlGpuInstanceDestroy, self.gi_handle(gpu, gi_id))
        if model.gis[gi_id].cis:
            assert rc == IN_USE
        else:
            assert rc == SUCCESS
            del model.gis[gi_id]

    # ------------------------------------------------------------------ invariant

    @invariant()
    def nvml_agrees_with_the_model(self) -> None:
        for index, model in enumerate(self.model):
            handle = self.handles[index]
            assert pynvml.nvmlDeviceGetMigMode(handle) == [model.mode, model.pending]
            seen: dict[int, tuple[int, int, int]] = {}
            for profile in model.profiles.values():
                array = (pynvml.c_nvmlGpuInstance_t * profile.instances)()
                count = c_uint(profile.instances)
                rc, _ = rc_of(pynvml.nvmlDeviceGetGpuInstances, handle, profile.id, array, byref(count))
                assert rc == SUCCESS  # with MIG off too: no instance (as on 580.159.04)
                assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, profile.id) == gi_remaining(
                    model, profile
                )
                for k in range(count.value):
                    info = pynvml.nvmlGpuInstanceGetInfo(array[k])
                    seen[info.id] = (info.profileId, info.placement.start, info.placement.size)
                    self.check_compute_instances(model, info.id, array[k])
            expected = {gi_id: (gi.profile, gi.start, gi.size) for gi_id, gi in model.gis.items()}
            assert seen == (expected if model.mode else {})

    def check_compute_instances(self, model: ModelGpu, gi_id: int, handle: Any) -> None:
        gi = model.gis[gi_id]
        seen: dict[int, tuple[int, int, int]] = {}
        for profile in model.profiles[gi.profile].compute.values():
            array = (pynvml.c_nvmlComputeInstance_t * profile.instances)()
            count = c_uint(profile.instances)
            pynvml.nvmlGpuInstanceGetComputeInstances(handle, profile.id, array, byref(count))
            remaining = pynvml.nvmlGpuInstanceGetComputeInstanceRemainingCapacity(handle, profile.id)
            assert remaining == ci_remaining(gi, profile)
            for k in range(count.value):
                info = pynvml.nvmlComputeInstanceGetInfo(array[k])
                seen[info.id] = (info.profileId, info.placement.start, info.placement.size)
        assert seen == gi.cis


SimulatorMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=40, deadline=None)
TestSimulatorAgainstModel = SimulatorMachine.TestCase
