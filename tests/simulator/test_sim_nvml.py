"""The C NVML simulator driven through NVIDIA's own binding, nvidia-ml-py (``pynvml``).

The simulator library is loaded into the process first; its soname ``libnvidia-ml.so.1``
makes pynvml's ``CDLL("libnvidia-ml.so.1")`` pick up the very same library. Every test opens
its own simulated node (``MIGKIT_SIM_STATE``) and shuts NVML down again. Raw calls that pynvml
cannot express (NULL pointers, wrong version words) go through ``LIB`` directly.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from ctypes import byref, c_uint
from typing import Any

import pytest

from migkit import simulator

LIB = ctypes.CDLL(simulator.library_path(), mode=ctypes.RTLD_GLOBAL)
pynvml: Any = pytest.importorskip("pynvml")

SUCCESS, INVALID_ARGUMENT, NOT_SUPPORTED, NOT_FOUND = 0, 2, 3, 6
INSUFFICIENT_SIZE, DRIVER_NOT_LOADED, IN_USE, INSUFFICIENT_RESOURCES = 7, 9, 19, 23
UNINITIALIZED, UNKNOWN = 1, 999
MIG_UUID = re.compile(r"^MIG-[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

Opener = Callable[..., str]


@pytest.fixture
def open_sim(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Opener]:
    """``open_sim(spec, faults=..., latency_ms=...)`` writes a node, points NVML at it and
    initialises pynvml; every init is shut down after the test."""
    inits = 0

    def opener(spec: str, *, faults: str | None = None, latency_ms: float | None = None) -> str:
        nonlocal inits
        path = os.path.join(str(tmp_path), f"node{inits}.state")
        simulator.write_state(path, spec)
        monkeypatch.setenv("MIGKIT_SIM_STATE", path)
        if faults is None:
            monkeypatch.delenv("MIGKIT_SIM_FAULTS", raising=False)
        else:
            monkeypatch.setenv("MIGKIT_SIM_FAULTS", faults)
        if latency_ms is None:
            monkeypatch.delenv("MIGKIT_SIM_LATENCY_MS", raising=False)
        else:
            monkeypatch.setenv("MIGKIT_SIM_LATENCY_MS", str(latency_ms))
        pynvml.nvmlInit()
        inits += 1
        return path

    yield opener
    for _ in range(inits):
        pynvml.nvmlShutdown()


def nvml_error(call: Callable[..., Any], *args: Any) -> int:
    """The NVML return code a pynvml call fails with."""
    with pytest.raises(pynvml.NVMLError) as info:
        call(*args)
    return int(info.value.value)


def let_readers_see_it() -> None:
    """Read-only calls re-check the state file at most once per millisecond, so a change
    written by someone else (here: migkit.simulator in this process) shows after 1 ms."""
    time.sleep(0.002)


def device(index: int = 0) -> Any:
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def enable_mig(index: int = 0) -> Any:
    handle = device(index)
    pynvml.nvmlDeviceSetMigMode(handle, pynvml.NVML_DEVICE_MIG_ENABLE)
    return handle


def placement(start: int, size: int) -> Any:
    p = pynvml.c_nvmlGpuInstancePlacement_t()
    p.start, p.size = start, size
    return p


def create_gi(handle: Any, profile_id: int, start: int, size: int) -> Any:
    # pynvml hands the placement argument to C as given: it must be a pointer.
    return pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(
        handle, profile_id, byref(placement(start, size))
    )


def gi_placement(gi: Any) -> tuple[int, int, int]:
    info = pynvml.nvmlGpuInstanceGetInfo(gi)
    return info.id, info.placement.start, info.placement.size


def possible_placements(handle: Any, profile_id: int) -> list[tuple[int, int]]:
    count = c_uint(0)
    pynvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, None, byref(count))
    array = (pynvml.c_nvmlGpuInstancePlacement_t * count.value)()
    pynvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, array, byref(count))
    return [(p.start, p.size) for p in array[: count.value]]


def list_gis(handle: Any, profile_id: int, room: int = 8) -> list[Any]:
    array = (pynvml.c_nvmlGpuInstance_t * room)()
    count = c_uint(room)
    pynvml.nvmlDeviceGetGpuInstances(handle, profile_id, array, byref(count))
    return [array[i] for i in range(count.value)]


def run_python(code: str, state: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that uses the simulator on ``state``."""
    prelude = (
        "import ctypes, migkit.simulator as s\n"
        "ctypes.CDLL(s.library_path(), mode=ctypes.RTLD_GLOBAL)\n"
        "import pynvml\n"
    )
    full_env = {**os.environ, "MIGKIT_SIM_STATE": state, **env}
    full_env.pop("MIGKIT_SIM_FAULTS", None)
    return subprocess.run(
        [sys.executable, "-c", prelude + code], env=full_env, capture_output=True, text=True,
        timeout=60, check=False,
    )


# --------------------------------------------------------------------------- init


def test_init_shutdown_is_reference_counted(open_sim: Opener) -> None:
    """Each init adds one; calls work until the last shutdown, and extra shutdowns are fine."""
    open_sim("2xh100-80gb")
    assert LIB.nvmlInit_v2() == SUCCESS
    assert LIB.nvmlShutdown() == SUCCESS
    assert pynvml.nvmlDeviceGetCount() == 2
    assert LIB.nvmlShutdown() == SUCCESS
    count = c_uint(7)
    assert LIB.nvmlDeviceGetCount_v2(byref(count)) == UNINITIALIZED
    assert LIB.nvmlShutdown() == SUCCESS  # more shutdowns than inits: not an error
    assert LIB.nvmlInit() == SUCCESS  # the fixture's teardown shuts this one down


def test_init_without_a_readable_state_is_driver_not_loaded(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No MIGKIT_SIM_STATE, a missing file or a file that is not a node: DRIVER_NOT_LOADED."""
    monkeypatch.delenv("MIGKIT_SIM_STATE", raising=False)
    assert LIB.nvmlInit_v2() == DRIVER_NOT_LOADED
    monkeypatch.setenv("MIGKIT_SIM_STATE", os.path.join(str(tmp_path), "missing.state"))
    assert LIB.nvmlInitWithFlags(0) == DRIVER_NOT_LOADED
    bogus = os.path.join(str(tmp_path), "bogus.state")
    with open(bogus, "w") as f:
        f.write("migkit-sim version=2\n")
    monkeypatch.setenv("MIGKIT_SIM_STATE", bogus)
    assert LIB.nvmlInit() == DRIVER_NOT_LOADED
    count = c_uint()
    assert LIB.nvmlDeviceGetCount_v2(byref(count)) == UNINITIALIZED


def test_identity_of_a_simulated_h100(open_sim: Opener) -> None:
    """Name, PCI identity, memory, architecture and versions come from the state file."""
    path = open_sim("1xh100-80gb")
    gpu = next(r for r in simulator.read_state(path) if r.keyword == "gpu")
    handle = device()
    assert pynvml.nvmlDeviceGetName(handle) == "NVIDIA H100 80GB HBM3"
    assert pynvml.nvmlDeviceGetUUID(handle) == gpu.fields["uuid"]
    pci = pynvml.nvmlDeviceGetPciInfo(handle)
    assert (pci.pciDeviceId, pci.pciSubSystemId) == (0x233010DE, 0x16C110DE)
    assert (pci.busId, pci.busIdLegacy) == ("00000000:18:00.0", "0000:18:00.0")
    assert pynvml.nvmlDeviceGetMemoryInfo(handle).total == 81559 << 20
    assert pynvml.nvmlDeviceGetArchitecture(handle) == 9
    assert pynvml.nvmlDeviceGetMinorNumber(handle) == 0
    assert pynvml.nvmlDeviceGetIndex(handle) == 0
    assert pynvml.nvmlSystemGetDriverVersion() == "580.105.08"
    assert pynvml.nvmlSystemGetNVMLVersion() == "13.580.105.08"
    assert pynvml.nvmlSystemGetCudaDriverVersion() == 13000
    same = pynvml.nvmlDeviceGetHandleByPciBusId("0000:18:00.0")
    assert pynvml.nvmlDeviceGetUUID(same) == gpu.fields["uuid"]
    assert pynvml.nvmlErrorString(INSUFFICIENT_RESOURCES) == "Insufficient Resources"
    assert pynvml.nvmlErrorString(IN_USE) == "In use by another client"


# --------------------------------------------------------------------------- profiles


def test_h100_profile_ids_and_placements(open_sim: Opener) -> None:
    """Profile indices map to the observed IDs and placements; index and ID differ."""
    open_sim("1xh100-80gb")
    handle = device()
    expected = {
        0x0: (19, "MIG 1g.10gb", [(s, 1) for s in range(7)]),
        0x7: (20, "MIG 1g.10gb+me", [(s, 1) for s in range(7)]),
        0x9: (15, "MIG 1g.20gb", [(0, 2), (2, 2), (4, 2), (6, 2)]),
        0x1: (14, "MIG 2g.20gb", [(0, 2), (2, 2), (4, 2)]),
        0x2: (9, "MIG 3g.40gb", [(0, 4), (4, 4)]),
        0x3: (5, "MIG 4g.40gb", [(0, 4)]),
        0x4: (0, "MIG 7g.80gb", [(0, 8)]),
    }
    seen = {}
    for index in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
        try:
            info = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, index)
        except pynvml.NVMLError_NotSupported:
            continue
        except pynvml.NVMLError_InvalidArgument:  # past the driver's last index
            break
        seen[index] = (info.id, info.name, possible_placements(handle, info.id))
    assert seen == expected
    v1 = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, 0x2, version=1)
    assert (v1.id, v1.sliceCount, v1.instanceCount, v1.memorySizeMB) == (9, 3, 2, 40448)
    by_id = pynvml.nvmlDeviceGetGpuInstanceProfileInfoById(handle, 9)
    assert (by_id.multiprocessorCount, by_id.name) == (60, "MIG 3g.40gb")
    assert nvml_error(pynvml.nvmlDeviceGetGpuInstanceProfileInfo, handle, 0x11) == INVALID_ARGUMENT
    assert nvml_error(pynvml.nvmlDeviceGetGpuInstanceProfileInfo, handle, 0x5) == NOT_SUPPORTED


def test_versioned_structs_check_their_version_word(open_sim: Opener) -> None:
    """v2 and v3 GI/CI profile structs are filled as their version word says; others fail."""
    open_sim("1xh100-80gb")
    handle = enable_mig()
    buf = (ctypes.c_ubyte * 152)()
    ctypes.memmove(buf, byref(c_uint(0x03000098)), 4)  # v3: no isP2pSupported, caps at 144
    assert LIB.nvmlDeviceGetGpuInstanceProfileInfoV(handle, 0x2, buf) == SUCCESS
    words = (ctypes.c_uint * 38).from_buffer(buf)
    assert (words[1], words[2], words[3]) == (9, 3, 2)  # id, sliceCount, instanceCount
    assert ctypes.c_ulonglong.from_buffer(buf, 40).value == 40448
    assert bytes(buf[48:59]) == b"MIG 3g.40gb"
    bad = pynvml.c_nvmlGpuInstanceProfileInfo_v2_t()
    bad.version = 0x01000098
    assert LIB.nvmlDeviceGetGpuInstanceProfileInfoV(handle, 0x2, byref(bad)) == INVALID_ARGUMENT
    assert LIB.nvmlDeviceGetGpuInstanceProfileInfoByIdV(handle, 9, byref(bad)) == INVALID_ARGUMENT
    gi = create_gi(handle, 9, 4, 4)
    ci_v2 = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, 0x0, 0)
    assert (ci_v2.id, ci_v2.sliceCount, ci_v2.instanceCount, ci_v2.name) == (
        0, 1, 3, "MIG 1c.3g.40gb"
    )
    ci_v3 = (ctypes.c_ubyte * 140)()
    ctypes.memmove(ci_v3, byref(c_uint(0x0300008C)), 4)
    assert LIB.nvmlGpuInstanceGetComputeInstanceProfileInfoV(gi, 0x2, 0, ci_v3) == SUCCESS
    assert ctypes.c_uint.from_buffer(ci_v3, 4).value == 2
    ctypes.memmove(ci_v3, byref(c_uint(0x02000099)), 4)
    assert LIB.nvmlGpuInstanceGetComputeInstanceProfileInfoV(gi, 0x2, 0, ci_v3) == INVALID_ARGUMENT
    memory = pynvml.c_nvmlMemory_v2_t()
    memory.version = 0x02000028
    assert LIB.nvmlDeviceGetMemoryInfo_v2(handle, byref(memory)) == SUCCESS
    assert memory.total == 81559 << 20
    memory.version = 0x01000028
    assert LIB.nvmlDeviceGetMemoryInfo_v2(handle, byref(memory)) == INVALID_ARGUMENT


def test_null_buffer_rules(open_sim: Opener) -> None:
    """NULL list arrays and out-pointers are INVALID_ARGUMENT; a NULL placements array
    returns the count; a too-small one is INSUFFICIENT_SIZE with the count needed."""
    open_sim("1xh100-80gb")
    handle = enable_mig()
    gi = create_gi(handle, 14, 0, 2)
    count = c_uint(3)
    assert LIB.nvmlDeviceGetGpuInstances(handle, 14, None, byref(count)) == INVALID_ARGUMENT
    assert LIB.nvmlGpuInstanceGetComputeInstances(gi, 0, None, byref(count)) == INVALID_ARGUMENT
    assert LIB.nvmlDeviceGetCount_v2(None) == INVALID_ARGUMENT
    assert LIB.nvmlDeviceGetMigMode(handle, None, byref(count)) == INVALID_ARGUMENT
    assert LIB.nvmlDeviceCreateGpuInstance(handle, 19, None) == INVALID_ARGUMENT
    count = c_uint(0)
    assert LIB.nvmlDeviceGetGpuInstancePossiblePlacements_v2(handle, 19, None, byref(count)) == 0
    assert count.value == 7
    small = (pynvml.c_nvmlGpuInstancePlacement_t * 3)()
    count = c_uint(3)
    rc = LIB.nvmlDeviceGetGpuInstancePossiblePlacements_v2(handle, 19, small, byref(count))
    assert (rc, count.value) == (INSUFFICIENT_SIZE, 7)
    count = c_uint(0)
    rc = LIB.nvmlGpuInstanceGetComputeInstancePossiblePlacements(gi, 0, None, byref(count))
    assert (rc, count.value) == (SUCCESS, 2)
    name = ctypes.create_string_buffer(8)
    assert LIB.nvmlDeviceGetName(handle, name, 8) == INSUFFICIENT_SIZE
    assert LIB.nvmlDeviceGetUUID(handle, None, 96) == INVALID_ARGUMENT


def test_gi_calls_are_not_supported_while_mig_is_off(open_sim: Opener) -> None:
    """With MIG off, profiles, placements and capacity work and listing finds nothing, as
    on a real H100 (580.159.04); create and by-id do not; there are no MIG devices."""
    open_sim("1xh100-80gb")
    handle = device()
    assert pynvml.nvmlDeviceGetMigMode(handle) == [0, 0]
    assert pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, 0).id == 19
    assert possible_placements(handle, 0) == [(0, 8)]
    assert nvml_error(pynvml.nvmlDeviceCreateGpuInstance, handle, 19) == NOT_SUPPORTED
    assert nvml_error(create_gi, handle, 19, 0, 1) == NOT_SUPPORTED
    assert list_gis(handle, 19) == []
    assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, 19) == 7
    assert nvml_error(pynvml.nvmlDeviceGetGpuInstanceById, handle, 7) == NOT_SUPPORTED
    assert pynvml.nvmlDeviceGetMaxMigDeviceCount(handle) == 0
    assert nvml_error(pynvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, 0) == NOT_FOUND


def test_mig_calls_are_not_supported_on_l40s(open_sim: Opener) -> None:
    """A GPU without MIG answers NOT_SUPPORTED to MIG calls, GetMigMode and SetMigMode
    included, and 0 MIG devices."""
    open_sim("1xl40s")
    handle = device()
    assert pynvml.nvmlDeviceGetName(handle) == "NVIDIA L40S"
    assert nvml_error(pynvml.nvmlDeviceGetMigMode, handle) == NOT_SUPPORTED
    assert nvml_error(pynvml.nvmlDeviceSetMigMode, handle, 1) == NOT_SUPPORTED
    assert nvml_error(pynvml.nvmlDeviceGetGpuInstanceProfileInfo, handle, 0) == NOT_SUPPORTED
    assert nvml_error(possible_placements, handle, 19) == NOT_SUPPORTED
    assert nvml_error(pynvml.nvmlDeviceCreateGpuInstance, handle, 19) == NOT_SUPPORTED
    assert pynvml.nvmlDeviceGetMaxMigDeviceCount(handle) == 0
    assert pynvml.nvmlDeviceIsMigDeviceHandle(handle).value == 0


def test_ampere_mode_stays_pending_until_reset_hopper_switches_at_once(open_sim: Opener) -> None:
    """On A100 SetMigMode only sets the pending mode until the simulated reset; on H100 it
    takes effect immediately."""
    path = open_sim("1xa100-40gb,1xh100-80gb")
    a100, h100 = device(0), device(1)
    assert pynvml.nvmlDeviceSetMigMode(a100, 1) == SUCCESS  # the activation status
    assert pynvml.nvmlDeviceGetMigMode(a100) == [0, 1]
    assert nvml_error(pynvml.nvmlDeviceCreateGpuInstance, a100, 19) == NOT_SUPPORTED
    assert pynvml.nvmlDeviceSetMigMode(h100, 1) == SUCCESS
    assert pynvml.nvmlDeviceGetMigMode(h100) == [1, 1]
    assert simulator.reset_gpus(path, [0]) == [0]
    let_readers_see_it()
    assert pynvml.nvmlDeviceGetMigMode(a100) == [1, 1]
    assert gi_placement(pynvml.nvmlDeviceCreateGpuInstance(a100, 0)) == (0, 0, 8)


def test_disabling_mig_with_instances_is_in_use(open_sim: Opener) -> None:
    """SetMigMode(0) while GIs exist fails with IN_USE and changes nothing."""
    open_sim("1xh100-80gb")
    handle = enable_mig()
    gi = create_gi(handle, 19, 0, 1)
    status = c_uint(99)
    assert LIB.nvmlDeviceSetMigMode(handle, 0, byref(status)) == IN_USE
    assert status.value == IN_USE
    assert pynvml.nvmlDeviceGetMigMode(handle) == [1, 1]
    pynvml.nvmlGpuInstanceDestroy(gi)
    assert pynvml.nvmlDeviceSetMigMode(handle, 0) == SUCCESS
    assert pynvml.nvmlDeviceGetMigMode(handle) == [0, 0]


# --------------------------------------------------------------------------- GPU instances


def test_overlapping_placement_is_insufficient_resources(open_sim: Opener) -> None:
    """A 3g at 0:4 and then a 4g at 0:4 fails with error 23; the 3g at 4:4 still fits."""
    open_sim("1xh100-80gb")
    handle = enable_mig()
    assert gi_placement(create_gi(handle, 9, 0, 4)) == (1, 0, 4)
    assert nvml_error(create_gi, handle, 5, 0, 4) == INSUFFICIENT_RESOURCES
    assert gi_placement(create_gi(handle, 9, 4, 4)) == (2, 4, 4)
    assert nvml_error(create_gi, handle, 19, 5, 1) == INSUFFICIENT_RESOURCES


def test_placement_outside_the_possible_list_is_invalid_argument(open_sim: Opener) -> None:
    """A placement the profile does not offer (a 2g at 1:2, a 1g of size 2) is rejected."""
    open_sim("1xh100-80gb")
    handle = enable_mig()
    assert nvml_error(create_gi, handle, 14, 1, 2) == INVALID_ARGUMENT
    assert nvml_error(create_gi, handle, 19, 0, 2) == INVALID_ARGUMENT
    assert nvml_error(create_gi, handle, 19, 7, 1) == INVALID_ARGUMENT
    assert nvml_error(pynvml.nvmlDeviceCreateGpuInstance, handle, 4) == INVALID_ARGUMENT


def test_instance_cap_is_insufficient_resources(open_sim: Opener) -> None:
    """1g.10gb+me exists once per GPU: a second one fails although memory is free."""
    open_sim("1xh100-80gb")
    handle = enable_mig()
    assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, 20) == 1
    create_gi(handle, 20, 0, 1)
    assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, 20) == 0
    assert nvml_error(create_gi, handle, 20, 3, 1) == INSUFFICIENT_RESOURCES
    assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, 19) == 6


def test_automatic_placement_follows_the_driver_order(open_sim: Opener) -> None:
    """Seven 1g GIs without a placement land on slots 6, 4, 5, 0, 1, 2, 3 (GI ids 13, 11,
    12, 7, 8, 9, 10, as on H100 R550); the eighth is refused."""
    open_sim("1xh100-80gb")
    handle = enable_mig()
    created = [gi_placement(pynvml.nvmlDeviceCreateGpuInstance(handle, 19)) for _ in range(7)]
    assert [start for _, start, _ in created] == [6, 4, 5, 0, 1, 2, 3]
    assert [gi_id for gi_id, _, _ in created] == [13, 11, 12, 7, 8, 9, 10]
    assert nvml_error(pynvml.nvmlDeviceCreateGpuInstance, handle, 19) == INSUFFICIENT_RESOURCES
    assert sorted(gi_placement(g)[0] for g in list_gis(handle, 19)) == list(range(7, 14))


def test_request_order_can_make_a_valid_layout_fail(open_sim: Opener) -> None:
    """1g, 1g, 2g, 3g without placements (the MIG guide's example): the 1g GIs take slots 6
    and 4, the 2g takes 0:2, and no 3g fits; explicit placements fit the same four GIs."""
    open_sim("2xh100-80gb")
    handle = enable_mig(0)
    for profile_id in (19, 19, 14):
        pynvml.nvmlDeviceCreateGpuInstance(handle, profile_id)
    assert gi_placement(list_gis(handle, 14)[0]) == (3, 0, 2)
    assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, 9) == 0
    assert nvml_error(pynvml.nvmlDeviceCreateGpuInstance, handle, 9) == INSUFFICIENT_RESOURCES
    other = enable_mig(1)
    create_gi(other, 19, 0, 1)
    create_gi(other, 19, 1, 1)
    create_gi(other, 14, 2, 2)
    assert gi_placement(pynvml.nvmlDeviceCreateGpuInstance(other, 9)) == (2, 4, 4)


def test_all_me_profiles_exclude_everything_but_no_me(open_sim: Opener) -> None:
    """On RTX PRO 6000 a +me.all GI admits only -me GIs beside it, and needs all others -me."""
    open_sim("2xrtx-pro-6000")
    handle = enable_mig(0)
    ids = {
        index: pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, index).id
        for index in (0x0, 0x0D, 0x0E, 0x0F, 0x10)
    }
    assert ids == {0x0: 14, 0x0D: 67, 0x0E: 66, 0x0F: 65, 0x10: 64}
    create_gi(handle, 65, 0, 1)  # 1g.24gb+me.all
    assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, 14) == 0
    assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, 67) == 3
    assert nvml_error(create_gi, handle, 14, 1, 1) == INSUFFICIENT_RESOURCES
    assert nvml_error(create_gi, handle, 64, 2, 2) == INSUFFICIENT_RESOURCES
    create_gi(handle, 67, 1, 1)  # 1g.24gb-me
    create_gi(handle, 66, 2, 2)  # 2g.48gb-me
    other = enable_mig(1)
    create_gi(other, 67, 0, 1)
    assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(other, 65) == 1
    create_gi(other, 14, 1, 1)
    assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(other, 65) == 0
    assert nvml_error(create_gi, other, 65, 2, 1) == INSUFFICIENT_RESOURCES


def test_destroying_a_gi_that_holds_a_ci_is_in_use(open_sim: Opener) -> None:
    """Error 19 while a CI exists; after the CI is gone the GI can be destroyed."""
    open_sim("1xh100-80gb")
    handle = enable_mig()
    gi = create_gi(handle, 14, 0, 2)
    ci = pynvml.nvmlGpuInstanceCreateComputeInstance(gi, 1)
    assert nvml_error(pynvml.nvmlGpuInstanceDestroy, gi) == IN_USE
    pynvml.nvmlComputeInstanceDestroy(ci)
    pynvml.nvmlGpuInstanceDestroy(gi)
    assert list_gis(handle, 14) == []
    assert nvml_error(pynvml.nvmlDeviceGetGpuInstanceById, handle, 3) == NOT_FOUND


def test_gi_ids_are_reused_and_lookups_agree(open_sim: Opener) -> None:
    """By-id lookup and info agree; a destroyed GI's id comes back with the same placement."""
    open_sim("1xh100-80gb")
    handle = enable_mig()
    gi = create_gi(handle, 14, 2, 2)
    assert gi_placement(pynvml.nvmlDeviceGetGpuInstanceById(handle, 4)) == (4, 2, 2)
    info = pynvml.nvmlGpuInstanceGetInfo(gi)
    assert info.profileId == 14
    assert pynvml.nvmlDeviceGetUUID(info.device) == pynvml.nvmlDeviceGetUUID(handle)
    pynvml.nvmlGpuInstanceDestroy(gi)
    assert gi_placement(create_gi(handle, 14, 2, 2)) == (4, 2, 2)


# --------------------------------------------------------------------------- compute instances


def test_compute_instances_overlap_cap_and_ids(open_sim: Opener) -> None:
    """CIs take the lowest free id and first free placement; overlap and the per-profile cap
    are INSUFFICIENT_RESOURCES; a bad CI placement is INVALID_ARGUMENT."""
    open_sim("1xh100-80gb")
    handle = enable_mig()
    gi = create_gi(handle, 9, 0, 4)  # 3g: CI profiles 0 (1c x3), 1 (2c x1), 2 (3g x1)
    assert pynvml.nvmlGpuInstanceGetComputeInstanceRemainingCapacity(gi, 0) == 3
    first = pynvml.nvmlGpuInstanceCreateComputeInstance(gi, 0)
    info = pynvml.nvmlComputeInstanceGetInfo(first)
    assert (info.id, info.profileId, info.placement.start, info.placement.size) == (0, 0, 0, 1)
    ci_placement = pynvml.c_nvmlComputeInstancePlacement_t()
    ci_placement.start, ci_placement.size = 0, 2
    create_ci = pynvml.nvmlGpuInstanceCreateComputeInstanceWithPlacement
    assert nvml_error(create_ci, gi, 1, byref(ci_placement)) == INSUFFICIENT_RESOURCES
    assert nvml_error(pynvml.nvmlGpuInstanceCreateComputeInstance, gi, 2) == INSUFFICIENT_RESOURCES
    ci_placement.start = 1
    assert nvml_error(create_ci, gi, 1, byref(ci_placement)) == INVALID_ARGUMENT
    second = pynvml.nvmlGpuInstanceCreateComputeInstance(gi, 0)
    pynvml.nvmlGpuInstanceCreateComputeInstance(gi, 0)
    assert nvml_error(pynvml.nvmlGpuInstanceCreateComputeInstance, gi, 0) == INSUFFICIENT_RESOURCES
    assert pynvml.nvmlGpuInstanceGetComputeInstanceRemainingCapacity(gi, 0) == 0
    pynvml.nvmlComputeInstanceDestroy(second)
    again = pynvml.nvmlGpuInstanceCreateComputeInstance(gi, 0)
    assert pynvml.nvmlComputeInstanceGetInfo(again).id == 1
    array = (pynvml.c_nvmlComputeInstance_t * 3)()
    count = c_uint(3)
    pynvml.nvmlGpuInstanceGetComputeInstances(gi, 0, array, byref(count))
    ids = sorted(pynvml.nvmlComputeInstanceGetInfo(array[i]).id for i in range(count.value))
    assert ids == [0, 1, 2]
    by_id = pynvml.nvmlGpuInstanceGetComputeInstanceById(gi, 2)
    assert pynvml.nvmlComputeInstanceGetInfo(by_id).placement.start == 2
    assert nvml_error(pynvml.nvmlGpuInstanceGetComputeInstanceById, gi, 5) == NOT_FOUND
    assert nvml_error(pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo, gi, 0x3, 0) == 3
    assert nvml_error(pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo, gi, 0x9, 0) == 2
    assert nvml_error(pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo, gi, 0x0, 1) == 2


# --------------------------------------------------------------------------- MIG devices


def test_mig_devices_describe_their_instances(open_sim: Opener) -> None:
    """A MIG device has its parent's name plus the profile, the GI's memory, CI SMs and
    GI engines; the CI info's device field is that MIG device."""
    open_sim("1xh100-80gb")
    handle = enable_mig()
    gi = create_gi(handle, 9, 4, 4)
    ci = pynvml.nvmlGpuInstanceCreateComputeInstance(gi, 0)  # 1c.3g.40gb
    mig = pynvml.nvmlComputeInstanceGetInfo(ci).device
    assert pynvml.nvmlDeviceIsMigDeviceHandle(mig).value == 1
    assert pynvml.nvmlDeviceGetName(mig) == "NVIDIA H100 80GB HBM3 MIG 1c.3g.40gb"
    assert MIG_UUID.match(pynvml.nvmlDeviceGetUUID(mig))
    assert pynvml.nvmlDeviceGetMemoryInfo(mig).total == 40320 << 20  # the 3g's devmem
    attributes = pynvml.nvmlDeviceGetAttributes(mig)
    assert (attributes.multiprocessorCount, attributes.sharedCopyEngineCount) == (20, 3)
    assert (attributes.gpuInstanceSliceCount, attributes.computeInstanceSliceCount) == (3, 1)
    assert attributes.memorySizeMB == 40320
    assert (pynvml.nvmlDeviceGetGpuInstanceId(mig), pynvml.nvmlDeviceGetComputeInstanceId(mig)) == (
        2, 0
    )
    parent = pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
    assert pynvml.nvmlDeviceGetUUID(parent) == pynvml.nvmlDeviceGetUUID(handle)
    assert pynvml.nvmlDeviceGetArchitecture(mig) == 9
    assert nvml_error(pynvml.nvmlDeviceGetAttributes, handle) == NOT_SUPPORTED
    assert nvml_error(pynvml.nvmlDeviceGetGpuInstanceId, handle) == NOT_SUPPORTED
    full = create_gi(handle, 19, 0, 1)
    whole = pynvml.nvmlComputeInstanceGetInfo(pynvml.nvmlGpuInstanceCreateComputeInstance(full, 0))
    assert pynvml.nvmlDeviceGetName(whole.device) == "NVIDIA H100 80GB HBM3 MIG 1g.10gb"


def test_mig_devices_are_ordered_by_gi_then_ci_id(open_sim: Opener) -> None:
    """GetMigDeviceHandleByIndex walks GIs by ascending id, then their CIs; past the last
    device it is NOT_FOUND, past the maximum INVALID_ARGUMENT."""
    open_sim("1xh100-80gb")
    handle = enable_mig()
    one = create_gi(handle, 19, 6, 1)  # id 13
    three = create_gi(handle, 9, 0, 4)  # id 1
    pynvml.nvmlGpuInstanceCreateComputeInstance(one, 0)
    pynvml.nvmlGpuInstanceCreateComputeInstance(three, 1)  # 2c at 0:2
    pynvml.nvmlGpuInstanceCreateComputeInstance(three, 0)  # 1c at 2:1
    assert pynvml.nvmlDeviceGetMaxMigDeviceCount(handle) == 7
    found = []
    for index in range(3):
        mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
        found.append(
            (pynvml.nvmlDeviceGetGpuInstanceId(mig), pynvml.nvmlDeviceGetComputeInstanceId(mig))
        )
    assert found == [(1, 0), (1, 1), (13, 0)]
    assert nvml_error(pynvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, 3) == NOT_FOUND
    assert nvml_error(pynvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, 7) == INVALID_ARGUMENT


def test_handles_by_uuid_in_every_form(open_sim: Opener) -> None:
    """GPU-, MIG- and the legacy MIG-GPU-<uuid>/<gi>/<ci> all resolve; unknown ones do not."""
    open_sim("1xh100-80gb")
    handle = enable_mig()
    gpu_uuid = pynvml.nvmlDeviceGetUUID(handle)
    gi = create_gi(handle, 14, 4, 2)  # id 5
    pynvml.nvmlGpuInstanceCreateComputeInstance(gi, 0)
    ci = pynvml.nvmlGpuInstanceCreateComputeInstance(gi, 0)  # id 1
    mig_uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlComputeInstanceGetInfo(ci).device)
    assert pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByUUID(gpu_uuid)) == gpu_uuid
    assert pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByUUID(mig_uuid)) == mig_uuid
    legacy = pynvml.nvmlDeviceGetHandleByUUID(f"MIG-{gpu_uuid}/5/1")
    assert pynvml.nvmlDeviceGetUUID(legacy) == mig_uuid
    assert nvml_error(pynvml.nvmlDeviceGetHandleByUUID, f"MIG-{gpu_uuid}/5/2") == NOT_FOUND
    unknown = "GPU-00000000-0000-0000-0000-000000000000"
    assert nvml_error(pynvml.nvmlDeviceGetHandleByUUID, unknown) == NOT_FOUND


def test_mig_uuids_are_stable_per_gpu_gi_and_ci(open_sim: Opener) -> None:
    """Re-creating the same (GPU, GI, CI) gives the same version-5-shaped MIG UUID, also
    seen by another process; another CI id gives another UUID."""
    path = open_sim("1xh100-80gb")
    handle = enable_mig()

    def make(ci_count: int) -> list[str]:
        gi = create_gi(handle, 14, 0, 2)
        cis = [pynvml.nvmlGpuInstanceCreateComputeInstance(gi, 0) for _ in range(ci_count)]
        uuids = [pynvml.nvmlDeviceGetUUID(pynvml.nvmlComputeInstanceGetInfo(c).device) for c in cis]
        for ci in cis:
            pynvml.nvmlComputeInstanceDestroy(ci)
        pynvml.nvmlGpuInstanceDestroy(gi)
        return uuids

    first = make(2)
    assert all(MIG_UUID.match(u) for u in first) and first[0] != first[1]
    assert make(1) == first[:1]
    gi = create_gi(handle, 14, 0, 2)
    pynvml.nvmlGpuInstanceCreateComputeInstance(gi, 0)
    child = run_python(
        "pynvml.nvmlInit()\n"
        "d = pynvml.nvmlDeviceGetHandleByIndex(0)\n"
        "print(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetMigDeviceHandleByIndex(d, 0)))\n",
        path,
    )
    assert child.stdout.strip() == first[0], child.stderr


def test_stale_handles_are_invalid_argument(open_sim: Opener) -> None:
    """Handles of destroyed GIs, CIs and MIG devices are detected, not dereferenced; a
    re-created GI gets a new handle."""
    open_sim("1xh100-80gb")
    handle = enable_mig()
    gi = create_gi(handle, 19, 2, 1)
    ci = pynvml.nvmlGpuInstanceCreateComputeInstance(gi, 0)
    mig = pynvml.nvmlComputeInstanceGetInfo(ci).device
    pynvml.nvmlComputeInstanceDestroy(ci)
    assert nvml_error(pynvml.nvmlComputeInstanceGetInfo, ci) == INVALID_ARGUMENT
    assert nvml_error(pynvml.nvmlComputeInstanceDestroy, ci) == INVALID_ARGUMENT
    assert nvml_error(pynvml.nvmlDeviceGetUUID, mig) == INVALID_ARGUMENT
    pynvml.nvmlGpuInstanceDestroy(gi)
    assert nvml_error(pynvml.nvmlGpuInstanceGetInfo, gi) == INVALID_ARGUMENT
    assert nvml_error(pynvml.nvmlGpuInstanceDestroy, gi) == INVALID_ARGUMENT
    again = create_gi(handle, 19, 2, 1)
    assert nvml_error(pynvml.nvmlGpuInstanceGetInfo, gi) == INVALID_ARGUMENT
    assert gi_placement(again) == (9, 2, 1)
    garbage = ctypes.cast(ctypes.c_void_p(0x1000), pynvml.c_nvmlGpuInstance_t)
    assert nvml_error(pynvml.nvmlGpuInstanceGetInfo, garbage) == INVALID_ARGUMENT
    assert LIB.nvmlDeviceGetUUID(ctypes.c_void_p(0x10), ctypes.create_string_buffer(96), 96) == 2


def test_busy_instances_cannot_be_destroyed(open_sim: Opener) -> None:
    """A GI or CI marked as used by a process answers IN_USE to destroy until cleared."""
    path = open_sim("1xh100-80gb")
    handle = enable_mig()
    gi = create_gi(handle, 14, 0, 2)
    ci = pynvml.nvmlGpuInstanceCreateComputeInstance(gi, 1)
    simulator.mark_busy(path, 0, 3, 0, pid=4242)
    assert nvml_error(pynvml.nvmlComputeInstanceDestroy, ci) == IN_USE
    simulator.mark_busy(path, 0, 3, 0, pid=0)
    simulator.mark_busy(path, 0, 3, pid=4242)
    pynvml.nvmlComputeInstanceDestroy(ci)  # the file is re-read: the handles stay valid
    assert nvml_error(pynvml.nvmlGpuInstanceDestroy, gi) == IN_USE
    simulator.mark_busy(path, 0, 3, pid=0)
    pynvml.nvmlGpuInstanceDestroy(gi)


def test_a_busy_compute_instance_lists_its_process(open_sim: Opener) -> None:
    """A busy CI's MIG device reports its PID with the GI and CI ids; an idle one reports no
    process; a busy GI's PID shows on each of its CIs; the GPU lists one process per (GI, CI)."""
    path = open_sim("1xh100-80gb")
    handle = enable_mig()
    gi = create_gi(handle, 14, 0, 2)
    ci = pynvml.nvmlGpuInstanceCreateComputeInstance(gi, 1)
    mig = pynvml.nvmlComputeInstanceGetInfo(ci).device
    assert pynvml.nvmlDeviceGetComputeRunningProcesses(mig) == []
    assert pynvml.nvmlDeviceGetComputeRunningProcesses(handle) == []
    simulator.mark_busy(path, 0, 3, 0, pid=4242)
    let_readers_see_it()
    procs = pynvml.nvmlDeviceGetComputeRunningProcesses(mig)
    assert [(p.pid, p.gpuInstanceId, p.computeInstanceId, p.usedGpuMemory) for p in procs] == [
        (4242, 3, 0, 0)
    ]
    other = create_gi(handle, 19, 2, 1)
    other_ci = pynvml.nvmlGpuInstanceCreateComputeInstance(other, 0)
    other_mig = pynvml.nvmlComputeInstanceGetInfo(other_ci).device
    assert pynvml.nvmlDeviceGetComputeRunningProcesses_v2(other_mig) == []
    simulator.mark_busy(path, 0, 9, pid=77)  # the GI, not its CI
    let_readers_see_it()
    assert [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(other_mig)] == [77]
    everything = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    assert sorted((p.pid, p.gpuInstanceId, p.computeInstanceId) for p in everything) == [
        (77, 9, 0),
        (4242, 3, 0),
    ]


def test_running_processes_size_rules(open_sim: Opener) -> None:
    """NULL or too small an array is INSUFFICIENT_SIZE with the count needed; no processes is
    SUCCESS with 0; the unversioned call fills 16-byte records; nothing is written to the file."""
    path = open_sim("1xh100-80gb")
    handle = enable_mig()
    gi = create_gi(handle, 19, 0, 1)
    ci = pynvml.nvmlGpuInstanceCreateComputeInstance(gi, 0)
    mig = pynvml.nvmlComputeInstanceGetInfo(ci).device
    count = c_uint(5)
    assert LIB.nvmlDeviceGetComputeRunningProcesses_v3(mig, byref(count), None) == SUCCESS
    assert count.value == 0
    simulator.mark_busy(path, 0, gi_placement(gi)[0], 0, pid=31337)
    let_readers_see_it()
    before = os.stat(path).st_mtime_ns
    count = c_uint(0)
    assert LIB.nvmlDeviceGetComputeRunningProcesses_v3(mig, byref(count), None) == INSUFFICIENT_SIZE
    assert count.value == 1
    array = (pynvml.c_nvmlProcessInfo_v3_t * 1)()
    count = c_uint(0)
    assert LIB.nvmlDeviceGetComputeRunningProcesses_v3(mig, byref(count), array) == INSUFFICIENT_SIZE
    count = c_uint(1)
    assert LIB.nvmlDeviceGetComputeRunningProcesses_v3(mig, byref(count), array) == SUCCESS
    assert (count.value, array[0].pid) == (1, 31337)

    class ProcessInfoV1(ctypes.Structure):
        _fields_ = [("pid", ctypes.c_uint), ("usedGpuMemory", ctypes.c_ulonglong)]

    assert ctypes.sizeof(ProcessInfoV1) == 16
    legacy = (ProcessInfoV1 * 2)()
    count = c_uint(2)
    assert LIB.nvmlDeviceGetComputeRunningProcesses(mig, byref(count), legacy) == SUCCESS
    assert (count.value, legacy[0].pid, legacy[1].pid) == (1, 31337, 0)
    assert LIB.nvmlDeviceGetComputeRunningProcesses_v3(mig, None, None) == INVALID_ARGUMENT
    assert os.stat(path).st_mtime_ns == before
    pynvml.nvmlShutdown()
    assert simulator.stats(path)["nvmlDeviceGetComputeRunningProcesses_v3"] == 5
    pynvml.nvmlInit()


# --------------------------------------------------------------------------- faults, counts


def test_injected_faults_hit_the_nth_call_and_do_nothing(open_sim: Opener) -> None:
    """FUNCTION@N=ERROR fails exactly the Nth call of that exported name since init, by
    name, NVML_ERROR_ name or number, without changing the node."""
    faults = (
        "nvmlDeviceCreateGpuInstanceWithPlacement@2=INSUFFICIENT_RESOURCES,"
        "nvmlDeviceGetCount_v2@1=NVML_ERROR_IN_USE,nvmlGpuInstanceDestroy@1=19"
    )
    open_sim("1xh100-80gb", faults=faults)
    assert nvml_error(pynvml.nvmlDeviceGetCount) == IN_USE
    assert pynvml.nvmlDeviceGetCount() == 1
    handle = enable_mig()
    gi = create_gi(handle, 19, 0, 1)
    assert nvml_error(create_gi, handle, 19, 1, 1) == INSUFFICIENT_RESOURCES
    assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, 19) == 6
    create_gi(handle, 19, 1, 1)
    assert nvml_error(pynvml.nvmlGpuInstanceDestroy, gi) == IN_USE
    pynvml.nvmlGpuInstanceDestroy(gi)
    assert len(list_gis(handle, 19)) == 1


def test_a_bad_fault_spec_fails_init(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown function or error name in MIGKIT_SIM_FAULTS makes init fail (UNKNOWN)
    rather than silently running without the fault."""
    path = simulator.write_state(os.path.join(str(tmp_path), "n.state"), "1xh100-80gb")
    monkeypatch.setenv("MIGKIT_SIM_STATE", path)
    monkeypatch.setenv("MIGKIT_SIM_FAULTS", "nvmlDeviceCreateGpuInstanse@1=IN_USE")
    assert LIB.nvmlInit_v2() == UNKNOWN
    monkeypatch.setenv("MIGKIT_SIM_FAULTS", "nvmlGpuInstanceDestroy@1=NOT_AN_ERROR")
    assert LIB.nvmlInit_v2() == UNKNOWN


def test_call_counts_reach_the_state_file(open_sim: Opener) -> None:
    """Mutating calls are counted in the file as they write; read-only calls are merged at
    the next write and at the last shutdown."""
    path = open_sim("1xh100-80gb")
    handle = device()
    for _ in range(3):
        pynvml.nvmlDeviceGetMigMode(handle)
    pynvml.nvmlDeviceSetMigMode(handle, 1)
    counts = simulator.stats(path)
    assert counts["nvmlDeviceSetMigMode"] == 1
    assert counts["nvmlDeviceGetMigMode"] == 3
    assert counts["nvmlInitWithFlags"] == 1
    create_gi(handle, 9, 0, 4)
    assert nvml_error(create_gi, handle, 5, 0, 4) == INSUFFICIENT_RESOURCES  # counted too
    pynvml.nvmlDeviceGetName(handle)
    assert "nvmlDeviceGetName" not in simulator.stats(path)
    assert LIB.nvmlInit_v2() == SUCCESS
    assert LIB.nvmlShutdown() == SUCCESS  # not the last one: nothing written
    assert "nvmlDeviceGetName" not in simulator.stats(path)
    pynvml.nvmlShutdown()
    counts = simulator.stats(path)
    assert counts["nvmlDeviceGetName"] == 1
    assert counts["nvmlDeviceCreateGpuInstanceWithPlacement"] == 2
    assert counts["nvmlShutdown"] == 2
    assert counts["nvmlInit_v2"] == 1
    pynvml.nvmlInit()  # the fixture shuts this one down


def test_counts_of_other_processes_are_merged(open_sim: Opener) -> None:
    """Counts from a process that exits without nvmlShutdown reach the file at exit, and
    add up with this process's counts."""
    path = open_sim("1xh100-80gb")
    pynvml.nvmlDeviceGetCount()
    child = run_python("pynvml.nvmlInit()\nfor _ in range(5): pynvml.nvmlDeviceGetCount()\n", path)
    assert child.returncode == 0, child.stderr
    assert simulator.stats(path)["nvmlDeviceGetCount_v2"] == 5
    pynvml.nvmlShutdown()
    assert simulator.stats(path)["nvmlDeviceGetCount_v2"] == 6
    pynvml.nvmlInit()


def test_changes_by_another_process_are_seen(open_sim: Opener) -> None:
    """A GI created by another process shows up here; handles held here stay valid."""
    path = open_sim("1xh100-80gb")
    handle = enable_mig()
    mine = create_gi(handle, 19, 0, 1)
    child = run_python(
        "pynvml.nvmlInit()\n"
        "d = pynvml.nvmlDeviceGetHandleByIndex(0)\n"
        "p = pynvml.c_nvmlGpuInstancePlacement_t(4, 4)\n"
        "pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(d, 9, ctypes.byref(p))\n"
        "pynvml.nvmlShutdown()\n",
        path,
    )
    assert child.returncode == 0, child.stderr
    let_readers_see_it()
    assert [gi_placement(g) for g in list_gis(handle, 9)] == [(2, 4, 4)]
    assert gi_placement(mine) == (7, 0, 1)
    assert nvml_error(create_gi, handle, 5, 0, 4) == INSUFFICIENT_RESOURCES


def test_latency_is_slept_outside_the_lock(open_sim: Opener) -> None:
    """With MIGKIT_SIM_LATENCY_MS, mutating calls from several threads overlap."""
    open_sim("4xh100-80gb", latency_ms=200)
    handles = [device(i) for i in range(4)]
    started = time.monotonic()
    threads = [threading.Thread(target=enable_mig, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert all(pynvml.nvmlDeviceGetMigMode(h) == [1, 1] for h in handles)
    assert 0.2 <= elapsed < 0.6  # about one latency; serialised calls would take 0.8 s


def test_the_simulator_prints_nothing(tmp_path: Any) -> None:
    """Without MIGKIT_SIM_DEBUG the library writes nothing to stdout or stderr, even when
    its state is missing or broken."""
    bad = os.path.join(str(tmp_path), "bad.state")
    with open(bad, "w") as f:
        f.write("migkit-sim version=1\ngpu index=3 uuid=GPU-x\n")
    code = (
        "lib = ctypes.CDLL('libnvidia-ml.so.1')\n"
        "rcs = [lib.nvmlInit_v2(), lib.nvmlDeviceGetCount_v2(None), lib.nvmlShutdown()]\n"
        "assert rcs == [9, 1, 0], rcs\n"
    )
    for state in (bad, os.path.join(str(tmp_path), "missing.state")):
        child = run_python(code, state)
        assert (child.returncode, child.stdout, child.stderr) == (0, "", "")
    child = run_python(code, bad, MIGKIT_SIM_DEBUG="1")
    assert "migkit-sim" in child.stderr
