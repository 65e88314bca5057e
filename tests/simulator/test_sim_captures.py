"""The simulator answers what real GPUs answered, read call by call as they were read.

``tests/data/real/`` holds reads of a real H100 and a real H200 (MIG disabled, driver
580.159.04) made through NVIDIA's ``nvidia-ml-py``: ``pynvml.json`` (identity, MIG mode, every GPU
instance profile index 0..17 with both profile-info calls, the possible placements and the
remaining capacity of each profile) and, for the H200, ``latency-more.json`` (more reads with
their results). Here a simulated GPU of the same model, with MIG disabled and the same driver
version, is read with the same pynvml calls and must give the same values and error codes.
UUIDs and PCI bus ids are placeholders in the captures and are left out.
"""

from __future__ import annotations

import ctypes
import json
import os
import pathlib
import re
from collections.abc import Iterator
from ctypes import byref, c_uint
from typing import Any

import pytest

from migkit import simulator

LIB = ctypes.CDLL(simulator.library_path(), mode=ctypes.RTLD_GLOBAL)
pynvml: Any = pytest.importorskip("pynvml")

REAL = pathlib.Path(__file__).resolve().parents[1] / "data" / "real"
CAPTURES = {"h100-80gb": "h100-80gb-580.159.04", "h200-141gb": "h200-141gb-580.159.04"}


def _capture(folder: str, name: str) -> Any:
    return json.loads((REAL / folder / name).read_text())


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _rc(call: Any, *args: Any) -> tuple[int, Any]:
    """(NVML return code, result) of a pynvml call."""
    try:
        return 0, call(*args)
    except pynvml.NVMLError as err:
        return int(err.value), None


@pytest.fixture
def real_and_simulated(
    request: pytest.FixtureRequest, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(capture folder, pynvml.json, device handle of the simulated GPU), NVML initialised;
    the model is the test's parameter."""
    model = request.param
    folder = CAPTURES[model]
    captured = _capture(folder, "pynvml.json")
    path = os.path.join(str(tmp_path), "node.state")
    simulator.write_state(path, model)
    with simulator.edit_state(path) as records:
        (driver,) = [r for r in records if r.keyword == "driver"]
        driver.fields["version"] = captured["driver"]
        driver.fields["cuda"] = f"{captured['cuda_driver'] // 1000}.{captured['cuda_driver'] % 1000 // 10}"
    monkeypatch.setenv("MIGKIT_SIM_STATE", path)
    for name in ("MIGKIT_SIM_FAULTS", "MIGKIT_SIM_LATENCY_MS", "MIGKIT_SIM_LATENCY"):
        monkeypatch.delenv(name, raising=False)
    pynvml.nvmlInit()
    try:
        yield folder, captured, pynvml.nvmlDeviceGetHandleByIndex(0)
    finally:
        pynvml.nvmlShutdown()


def _placements(handle: Any, profile_id: int) -> list[list[int]]:
    """Count first (NULL array), then the array: the documented way."""
    count = c_uint(0)
    pynvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, None, byref(count))
    array = (pynvml.c_nvmlGpuInstancePlacement_t * count.value)()
    pynvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, array, byref(count))
    return [[array[i].start, array[i].size] for i in range(count.value)]


def _profile_as_captured(handle: Any, index: int) -> dict[str, Any]:
    """One entry of pynvml.json's ``profiles``, read the way the capture read it."""
    rc_v, info = _rc(pynvml.nvmlDeviceGetGpuInstanceProfileInfo, handle, index)
    rc_v1, info_v1 = _rc(pynvml.nvmlDeviceGetGpuInstanceProfileInfo, handle, index, 1)
    if rc_v or rc_v1:
        return {"index": index, "error_v3": rc_v, "error_v1": rc_v1}
    v1_fields = ("id", "sliceCount", "instanceCount", "multiprocessorCount", "memorySizeMB")
    assert [getattr(info_v1, f) for f in v1_fields] == [getattr(info, f) for f in v1_fields]
    return {
        "index": index,
        "id": info.id,
        "p2p": info.isP2pSupported,
        "slices": info.sliceCount,
        "instances": info.instanceCount,
        "sm": info.multiprocessorCount,
        "ce": info.copyEngineCount,
        "dec": info.decoderCount,
        "enc": info.encoderCount,
        "jpg": info.jpegCount,
        "ofa": info.ofaCount,
        "mem_mib": info.memorySizeMB,
        "name": _text(info.name),
        "placements": _placements(handle, info.id),
        "remaining": pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, info.id),
    }


@pytest.mark.parametrize("real_and_simulated", sorted(CAPTURES), indirect=True)
def test_system_and_identity_reads_match_the_capture(real_and_simulated: tuple[str, dict[str, Any], Any]) -> None:
    """Driver, NVML and CUDA versions, count, name, PCI ids, memory, architecture and MIG
    state read as on the real GPU."""
    _, captured, handle = real_and_simulated
    pci = pynvml.nvmlDeviceGetPciInfo(handle)
    (real,) = captured["devices"]
    seen = {
        "driver": _text(pynvml.nvmlSystemGetDriverVersion()),
        "nvml_version": _text(pynvml.nvmlSystemGetNVMLVersion()),
        "cuda_driver": pynvml.nvmlSystemGetCudaDriverVersion(),
        "count": pynvml.nvmlDeviceGetCount(),
        "name": _text(pynvml.nvmlDeviceGetName(handle)),
        "pci": {"device_id": f"0x{pci.pciDeviceId:08x}", "subsystem_id": f"0x{pci.pciSubSystemId:08x}"},
        "memory_total": pynvml.nvmlDeviceGetMemoryInfo(handle).total,
        "architecture": pynvml.nvmlDeviceGetArchitecture(handle),
        "mig_mode": pynvml.nvmlDeviceGetMigMode(handle),
        "max_mig_devices": pynvml.nvmlDeviceGetMaxMigDeviceCount(handle),
    }
    expected = {key: captured[key] for key in ("driver", "nvml_version", "cuda_driver", "count")}
    expected |= {key: real[key] for key in ("name", "memory_total", "architecture", "mig_mode", "max_mig_devices")}
    expected["pci"] = {key: real["pci"][key] for key in ("device_id", "subsystem_id")}
    assert seen == expected


@pytest.mark.parametrize("real_and_simulated", sorted(CAPTURES), indirect=True)
def test_every_profile_index_answers_as_captured(real_and_simulated: tuple[str, dict[str, Any], Any]) -> None:
    """Profile indices 0..17, each with both profile-info calls, placements and remaining
    capacity: the same values and the same error codes (NOT_SUPPORTED for unused indices,
    INVALID_ARGUMENT past the last one)."""
    _, captured, handle = real_and_simulated
    (real,) = captured["devices"]
    seen = [_profile_as_captured(handle, entry["index"]) for entry in real["profiles"]]
    assert [entry["index"] for entry in real["profiles"]] == list(range(18))
    assert seen == real["profiles"]


# --------------------------------------------------------------------------- latency-more.json

_ERROR = re.compile(r"^error (\d+)$")


def _more_reads(handle: Any) -> dict[str, Any]:
    """The reads of latency-more.json, by its names, as callables giving the result text."""

    def by_index(index: int) -> str:
        info = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, index)
        return f"version: {info.version}, id: {info.id},"

    def by_id(profile_id: int) -> str:
        return str(pynvml.nvmlDeviceGetGpuInstanceProfileInfoById(handle, profile_id).id)

    def gpu_instances(profile_id: int) -> str:
        array = (pynvml.c_nvmlGpuInstance_t * 8)()
        count = c_uint(8)
        pynvml.nvmlDeviceGetGpuInstances(handle, profile_id, array, byref(count))
        return str(count.value)

    reads: dict[str, Any] = {f"ProfileInfoV index {i}": (by_index, i) for i in range(18)}
    reads |= {f"ProfileInfoByIdV id {i}": (by_id, i) for i in (19, 14, 9, 5, 0, 20, 15, 7)}
    reads |= {
        "GetMaxMigDeviceCount": (lambda: str(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)),),
        "GetRemainingCapacity id 19": (lambda: str(pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, 19)),),
        "GetGpuInstances id 19": (gpu_instances, 19),
        "GetMigDeviceHandleByIndex 0": (lambda: str(pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, 0)),),
        "GetComputeRunningProcesses": (lambda: str(pynvml.nvmlDeviceGetComputeRunningProcesses(handle)),),
        "IsMigDeviceHandle": (lambda: str(pynvml.nvmlDeviceIsMigDeviceHandle(handle)),),
        "GetMigMode": (lambda: str(pynvml.nvmlDeviceGetMigMode(handle)),),
        "GetCount": (lambda: str(pynvml.nvmlDeviceGetCount()),),
        "SystemGetNVMLVersion": (lambda: _text(pynvml.nvmlSystemGetNVMLVersion()),),
        "GetAttributes": (lambda: str(pynvml.nvmlDeviceGetAttributes(handle)),),
    }
    return reads


def _matches(expected: str, call: Any, *args: Any) -> bool:
    rc, result = _rc(call, *args)
    error = _ERROR.match(expected)
    if error is not None:
        return rc == int(error.group(1))
    if rc != 0:
        return False
    if expected.startswith("c_nvmlGpuInstanceProfileInfo_v2_t("):
        # the capture keeps the struct's text cut short: compare the fields it shows
        return expected.split("(", 1)[1].startswith(result)
    return bool(result == expected)


@pytest.mark.parametrize("real_and_simulated", ["h200-141gb"], indirect=True)
def test_the_further_h200_reads_answer_as_captured(real_and_simulated: tuple[str, dict[str, Any], Any]) -> None:
    """Every read of latency-more.json (the H200 only) gives the captured result: profile
    info by index and by ID (INVALID_ARGUMENT for an ID the GPU lacks), capacity, instance
    and MIG-device lookups with MIG disabled, processes, MIG mode, count, attributes."""
    folder, _, handle = real_and_simulated
    captured = _capture(folder, "latency-more.json")["latency"]
    reads = _more_reads(handle)
    # Reads of functions the simulator does not export, and handle reprs (addresses).
    not_simulated = {"GetPersistenceMode", "GetCurrentClocksEventReasons"}
    handles = {"GetHandleByPciBusId", "GetHandleByUUID"}
    assert set(captured) == set(reads) | not_simulated | handles
    mismatched = {
        name: entry["result"]
        for name, entry in captured.items()
        if name in reads and not _matches(entry["result"], *reads[name])
    }
    assert mismatched == {}
    bus_id = pynvml.nvmlDeviceGetPciInfo(handle).busId
    assert _text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByPciBusId(bus_id))) == _text(
        pynvml.nvmlDeviceGetUUID(handle)
    )
