"""ABI cross-check: NVIDIA's own Python binding and migkit's shim read the same simulator.

pynvml (nvidia-ml-py) declares NVIDIA's structs with ctypes; migkit's shim declares its own
from the struct layouts of NVIDIA's published nvml.h. The simulator has the soname ``libnvidia-ml.so.1``, so
once migkit's shim has loaded it, pynvml's ``CDLL("libnvidia-ml.so.1")`` gets the very same
library. If every value agrees, our layouts match NVIDIA's.
"""

from __future__ import annotations

from collections.abc import Iterator
from ctypes import byref, c_uint
from typing import Any

import pytest

from migkit import open_node
from migkit.models import GpuState, Placement
from migkit.nvml.node import (
    ComputeInstanceRequest,
    GpuInstanceRequest,
    MigModeRequest,
    Node,
)

pynvml: Any = pytest.importorskip("pynvml")


@pytest.fixture
def node() -> Iterator[Node]:
    """A simulated 2xh100-80gb node open in migkit and in pynvml at the same time."""
    with open_node(simulate="2xh100-80gb") as n:
        pynvml.nvmlInit()
        try:
            yield n
        finally:
            pynvml.nvmlShutdown()


def _nvml_error_code(call: Any, *args: Any) -> int:
    with pytest.raises(pynvml.NVMLError) as info:
        call(*args)
    return int(info.value.value)


def test_pynvml_loads_the_simulator_migkit_loaded(node: Node) -> None:
    """pynvml's CDLL('libnvidia-ml.so.1') resolves to the simulator migkit opened."""
    assert pynvml.nvmlDeviceGetCount() == 2
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    assert pynvml.nvmlDeviceGetName(handle) == node.snapshot()[0].name


def test_errors_seen_through_pynvml_and_the_state_migkit_reads(node: Node) -> None:
    """3g at 0:4 then 4g at 0:4 is error 23; destroying a GI with a CI is error 19; migkit
    then sees exactly that GI and CI."""
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    pynvml.nvmlDeviceSetMigMode(device, pynvml.NVML_DEVICE_MIG_ENABLE)
    profile_info = pynvml.nvmlDeviceGetGpuInstanceProfileInfo
    three = profile_info(device, pynvml.NVML_GPU_INSTANCE_PROFILE_3_SLICE)
    four = profile_info(device, pynvml.NVML_GPU_INSTANCE_PROFILE_4_SLICE)
    assert (three.id, four.id) == (9, 5)
    at_0 = pynvml.c_nvmlGpuInstancePlacement_t()
    at_0.start, at_0.size = 0, 4
    gi = pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(device, three.id, byref(at_0))
    code = _nvml_error_code(pynvml.nvmlDeviceCreateGpuInstanceWithPlacement, device, four.id, byref(at_0))
    assert code == pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES == 23

    ci_profile = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
        gi,
        pynvml.NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE,
        pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED,
    )
    ci = pynvml.nvmlGpuInstanceCreateComputeInstance(gi, ci_profile.id)
    assert _nvml_error_code(pynvml.nvmlGpuInstanceDestroy, gi) == pynvml.NVML_ERROR_IN_USE == 19

    gi_info = pynvml.nvmlGpuInstanceGetInfo(gi)
    ci_info = pynvml.nvmlComputeInstanceGetInfo(ci)
    gpu = node.snapshot()[0]
    (instance,) = gpu.gpu_instances
    assert (instance.id, instance.profile_id, instance.placement) == (gi_info.id, 9, Placement(0, 4))
    assert instance.profile == "3g.40gb"
    (compute,) = instance.compute_instances
    assert (compute.id, compute.profile_id, compute.placement) == (
        ci_info.id,
        ci_profile.id,
        Placement(ci_info.placement.start, ci_info.placement.size),
    )
    assert compute.placement == Placement(0, 3)
    assert node.snapshot()[1].gpu_instances == ()


# --------------------------------------------------------------------------- full cross-read


def _partition(node: Node) -> None:
    """GPU 0: all-balanced with one full CI each; GPU 1: a 7g split into 1c/2c/4c CIs."""
    assert all(r.ok for r in node.set_mig_mode([MigModeRequest(0, 1), MigModeRequest(1, 1)]))
    created = node.create_gpu_instances(
        [
            GpuInstanceRequest(0, 9, Placement(4, 4)),
            GpuInstanceRequest(0, 14, Placement(0, 2)),
            GpuInstanceRequest(0, 19, Placement(2, 1)),
            GpuInstanceRequest(0, 19, Placement(3, 1)),
            GpuInstanceRequest(1, 0, Placement(0, 8)),
        ]
    )
    assert all(r.ok for r in created)
    ids = [r.gpu_instance for r in created]
    assert all(i is not None for i in ids)
    requests = [
        ComputeInstanceRequest(0, ids[0] or 0, 2, Placement(0, 3)),
        ComputeInstanceRequest(0, ids[1] or 0, 1, Placement(0, 2)),
        ComputeInstanceRequest(0, ids[2] or 0, 0, Placement(0, 1)),
        ComputeInstanceRequest(0, ids[3] or 0, 0, Placement(0, 1)),
        ComputeInstanceRequest(1, ids[4] or 0, 3, Placement(0, 4)),
        ComputeInstanceRequest(1, ids[4] or 0, 1, Placement(4, 2)),
        ComputeInstanceRequest(1, ids[4] or 0, 0, Placement(6, 1)),
    ]
    assert all(r.ok for r in node.create_compute_instances(requests))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _placements(read: Any, handle: Any, profile_id: int, ctype: Any) -> tuple[Placement, ...]:
    count = c_uint(0)
    read(handle, profile_id, None, byref(count))
    array = (ctype * count.value)()
    read(handle, profile_id, array, byref(count))
    return tuple(Placement(array[i].start, array[i].size) for i in range(count.value))


def _read_with_pynvml(index: int) -> dict[str, Any]:
    """Everything migkit's snapshot reports about GPU ``index``, read through pynvml."""
    device = pynvml.nvmlDeviceGetHandleByIndex(index)
    pci = pynvml.nvmlDeviceGetPciInfo_v3(device)
    current, pending = pynvml.nvmlDeviceGetMigMode(device)
    out: dict[str, Any] = {
        "uuid": _text(pynvml.nvmlDeviceGetUUID(device)),
        "name": _text(pynvml.nvmlDeviceGetName(device)),
        "pci": (pci.pciDeviceId, pci.pciSubSystemId, _text(pci.busId)),
        "memory_mib": pynvml.nvmlDeviceGetMemoryInfo(device).total >> 20,
        "architecture": pynvml.nvmlDeviceGetArchitecture(device),
        "modes": (current, pending),
    }
    profiles, gis, ci_profiles = [], [], {}
    for profile_index in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
        try:
            info = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(device, profile_index)
        except pynvml.NVMLError_NotSupported:
            continue
        except pynvml.NVMLError_InvalidArgument:  # past the driver's last index (R580: 0x11)
            break
        placements = _placements(
            pynvml.nvmlDeviceGetGpuInstancePossiblePlacements,
            device,
            info.id,
            pynvml.c_nvmlGpuInstancePlacement_t,
        )
        profiles.append(
            (
                info.id,
                profile_index,
                _text(info.name),
                info.sliceCount,
                info.instanceCount,
                info.memorySizeMB,
                info.multiprocessorCount,
                info.copyEngineCount,
                info.decoderCount,
                info.encoderCount,
                info.jpegCount,
                info.ofaCount,
                placements,
            )
        )
        if current != pynvml.NVML_DEVICE_MIG_ENABLE:
            continue  # GI calls are NOT_SUPPORTED while MIG is off
        array = (pynvml.c_nvmlGpuInstance_t * info.instanceCount)()
        count = c_uint(info.instanceCount)
        pynvml.nvmlDeviceGetGpuInstances(device, info.id, array, byref(count))
        for k in range(count.value):
            gi = array[k]
            gi_info = pynvml.nvmlGpuInstanceGetInfo(gi)
            cis = []
            for ci_index in range(pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
                try:
                    cp = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                        gi, ci_index, pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
                    )
                except pynvml.NVMLError_NotSupported:
                    continue
                ci_profiles[(info.id, cp.id)] = (
                    cp.id,
                    ci_index,
                    _text(cp.name),
                    cp.sliceCount,
                    cp.instanceCount,
                    cp.multiprocessorCount,
                    cp.sharedCopyEngineCount,
                    cp.sharedDecoderCount,
                    cp.sharedEncoderCount,
                    cp.sharedJpegCount,
                    cp.sharedOfaCount,
                    _placements(
                        pynvml.nvmlGpuInstanceGetComputeInstancePossiblePlacements,
                        gi,
                        cp.id,
                        pynvml.c_nvmlComputeInstancePlacement_t,
                    ),
                )
                ci_array = (pynvml.c_nvmlComputeInstance_t * cp.instanceCount)()
                ci_count = c_uint(cp.instanceCount)
                pynvml.nvmlGpuInstanceGetComputeInstances(gi, cp.id, ci_array, byref(ci_count))
                for j in range(ci_count.value):
                    ci_info = pynvml.nvmlComputeInstanceGetInfo(ci_array[j])
                    cis.append((ci_info.id, ci_info.profileId, ci_info.placement.start, ci_info.placement.size))
            gis.append(
                (gi_info.id, gi_info.profileId, gi_info.placement.start, gi_info.placement.size, tuple(sorted(cis)))
            )
    mig_devices = {}
    for k in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(device)):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(device, k)
        except (pynvml.NVMLError_NotFound, pynvml.NVMLError_InvalidArgument):
            continue
        attributes = pynvml.nvmlDeviceGetAttributes(mig)
        key = (pynvml.nvmlDeviceGetGpuInstanceId(mig), pynvml.nvmlDeviceGetComputeInstanceId(mig))
        mig_devices[key] = (
            _text(pynvml.nvmlDeviceGetUUID(mig)),
            pynvml.nvmlDeviceGetMemoryInfo(mig).total >> 20,
            attributes.multiprocessorCount,
            attributes.sharedCopyEngineCount,
            attributes.sharedDecoderCount,
            attributes.sharedEncoderCount,
            attributes.sharedJpegCount,
            attributes.sharedOfaCount,
        )
    out.update(profiles=sorted(profiles), gis=sorted(gis), ci_profiles=ci_profiles, mig_devices=mig_devices)
    return out


def _as_read_by_migkit(gpu: GpuState) -> dict[str, Any]:
    """The same fields, from migkit's snapshot."""
    ci_profiles = {}
    for p in gpu.profiles:
        for cp in p.compute_profiles:
            ci_profiles[(p.id, cp.id)] = (
                cp.id,
                cp.index,
                cp.nvml_name,
                cp.slice_count,
                cp.instance_count,
                cp.multiprocessors,
                cp.copy_engines,
                cp.decoders,
                cp.encoders,
                cp.jpegs,
                cp.ofas,
                cp.placements,
            )
    return {
        "uuid": gpu.uuid,
        "name": gpu.name,
        "pci": (gpu.pci_device_id, gpu.pci_subsystem_id, gpu.bus_id),
        "memory_mib": gpu.memory_mib,
        "architecture": gpu.architecture,
        "modes": (gpu.mig_mode, gpu.pending_mig_mode),
        "profiles": sorted(
            (
                p.id,
                p.index,
                p.nvml_name,
                p.slice_count,
                p.instance_count,
                p.memory_mib,
                p.multiprocessors,
                p.copy_engines,
                p.decoders,
                p.encoders,
                p.jpegs,
                p.ofas,
                p.placements,
            )
            for p in gpu.profiles
        ),
        "gis": sorted(
            (
                g.id,
                g.profile_id,
                g.start,
                g.size,
                tuple(sorted((c.id, c.profile_id, c.start, c.size) for c in g.compute_instances)),
            )
            for g in gpu.gpu_instances
        ),
        "ci_profiles": ci_profiles,
        "mig_devices": {
            (g.id, c.id): (
                c.uuid,
                c.memory_mib,
                c.multiprocessors,
                c.copy_engines,
                c.decoders,
                c.encoders,
                c.jpegs,
                c.ofas,
            )
            for g in gpu.gpu_instances
            for c in g.compute_instances
        },
    }


def test_every_snapshot_value_equals_what_pynvml_reads(node: Node) -> None:
    """On a partitioned node, each value of migkit's snapshot equals pynvml's reading."""
    _partition(node)
    gpus = node.snapshot()
    assert len(gpus) == pynvml.nvmlDeviceGetCount() == 2
    for gpu in gpus:
        ours = _as_read_by_migkit(gpu)
        theirs = _read_with_pynvml(gpu.index)
        assert ours == theirs
        assert len(ours["gis"]) == (4 if gpu.index == 0 else 1)
        assert len(ours["mig_devices"]) == (4 if gpu.index == 0 else 3)


def test_unpartitioned_gpus_agree_too(node: Node) -> None:
    """With MIG off, identity, modes and profile tables agree and nothing else exists."""
    for gpu in node.snapshot():
        assert _as_read_by_migkit(gpu) == _read_with_pynvml(gpu.index)
