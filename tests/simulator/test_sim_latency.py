"""The simulator's latency model: per-function costs from real GPUs, serialized per GPU.

``MIGKIT_SIM_LATENCY=hopper-580`` charges every call the median a real H100/H200 took on
driver 580.159.04; the charged time is added up per function in the state file
(``simulator.charged``), which these tests check exactly. Timing is only checked coarsely:
a lower bound for a profile's reads, and with large artificial latencies
(``MIGKIT_SIM_LATENCY_MS``) that calls on one GPU do not overlap while calls on two GPUs do.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from migkit import simulator

LIB = ctypes.CDLL(simulator.library_path(), mode=ctypes.RTLD_GLOBAL)
pynvml: Any = pytest.importorskip("pynvml")

US = 1000  # ns


@pytest.fixture
def node(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """``node(spec, profile=..., mutating_ms=...)`` writes a node and points NVML at it."""

    def make(spec: str, *, profile: str | None = "hopper-580", mutating_ms: float | None = None) -> str:
        path = os.path.join(str(tmp_path), "node.state")
        simulator.write_state(path, spec)
        monkeypatch.setenv(simulator.STATE_ENV, path)
        monkeypatch.delenv(simulator.FAULTS_ENV, raising=False)
        for name, value in ((simulator.LATENCY_PROFILE_ENV, profile), (simulator.LATENCY_ENV, mutating_ms)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, str(value))
        return path

    yield make


def test_a_profile_charges_each_read_its_captured_cost(node: Callable[..., str]) -> None:
    """Profile info costs what the driver took for a supported index, an unsupported one and
    one past the end; MIG mode, identity reads and shutdown their medians."""
    path = node("1xh100-80gb")
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, 0)
    for index in (5, 17):
        with pytest.raises(pynvml.NVMLError):
            pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, index)
    pynvml.nvmlDeviceGetGpuInstanceProfileInfoById(handle, 19)
    pynvml.nvmlDeviceGetMigMode(handle)
    pynvml.nvmlDeviceGetMigMode(handle)
    pynvml.nvmlDeviceGetName(handle)
    pynvml.nvmlShutdown()
    charged = simulator.charged(path)
    assert charged["nvmlDeviceGetGpuInstanceProfileInfoV"] == 505 * US + 160 * US + 4500
    assert charged["nvmlDeviceGetGpuInstanceProfileInfoByIdV"] == 320 * US
    assert charged["nvmlDeviceGetMigMode"] == 2 * 160 * US
    assert charged["nvmlDeviceGetName"] == 3 * US
    assert charged["nvmlDeviceGetHandleByIndex_v2"] == 1700
    assert charged["nvmlShutdown"] == 9652 * US
    # the first nvmlInit in a process costs 14.9 ms, a later one 2.6 ms
    assert charged["nvmlInitWithFlags"] in (14904 * US, 2571 * US)


def test_profile_reads_take_at_least_their_cost(node: Callable[..., str]) -> None:
    """Twenty supported profile reads take at least 20 x 505 us of wall time."""
    node("1xh100-80gb")
    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        start = time.monotonic()
        for _ in range(20):
            pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, 0)
        elapsed = time.monotonic() - start
    finally:
        pynvml.nvmlShutdown()
    assert elapsed >= 20 * 505e-6


def test_without_a_profile_nothing_is_charged(node: Callable[..., str]) -> None:
    """No MIGKIT_SIM_LATENCY: reads cost nothing and no ``charged`` record is written."""
    path = node("1xh100-80gb", profile=None)
    pynvml.nvmlInit()
    pynvml.nvmlDeviceGetMigMode(pynvml.nvmlDeviceGetHandleByIndex(0))
    pynvml.nvmlShutdown()
    assert simulator.stats(path)["nvmlDeviceGetMigMode"] == 1
    assert simulator.charged(path) == {}


def test_an_unknown_profile_makes_init_fail(node: Callable[..., str]) -> None:
    """A misspelled profile name is NVML_ERROR_UNKNOWN at init, never a silent no-op."""
    node("1xh100-80gb", profile="hopper-999")
    with pytest.raises(pynvml.NVMLError) as info:
        pynvml.nvmlInit()
    assert info.value.value == pynvml.NVML_ERROR_UNKNOWN


def _set_mig_mode_from_threads(gpus: list[int]) -> float:
    """Wall time of one SetMigMode per entry of ``gpus``, each in its own thread at once."""
    handles = [pynvml.nvmlDeviceGetHandleByIndex(g) for g in gpus]
    barrier = threading.Barrier(len(handles))
    errors: list[BaseException] = []

    def work(handle: Any) -> None:
        barrier.wait()
        try:
            pynvml.nvmlDeviceSetMigMode(handle, 1)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(h,)) for h in handles]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return time.monotonic() - start


def test_calls_on_one_gpu_do_not_overlap_calls_on_two_gpus_do(node: Callable[..., str]) -> None:
    """With a profile, two threads' calls on one GPU take turns (2 x 400 ms); on two GPUs
    they run side by side (about 400 ms)."""
    node("2xh100-80gb", mutating_ms=400)
    pynvml.nvmlInit()
    try:
        same_gpu = _set_mig_mode_from_threads([0, 0])
        two_gpus = _set_mig_mode_from_threads([0, 1])
    finally:
        pynvml.nvmlShutdown()
    assert same_gpu >= 0.8
    assert 0.4 <= two_gpus < 0.75
