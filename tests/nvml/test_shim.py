"""The compiled NVML shim, its typed wrapper and the node API, driven through the simulator."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest

from builders import MUTATING
from migkit import hardware, open_node, simulator
from migkit.errors import (
    InsufficientResources,
    InUse,
    NotFound,
    NvmlError,
    ReadOnlyError,
)
from migkit.models import GpuState, Placement
from migkit.names import canonical_from_nvml
from migkit.nvml import _binding as _nvml
from migkit.nvml import _decode
from migkit.nvml._binding import lib
from migkit.nvml.node import (
    STATUS_NOT_ATTEMPTED,
    ComputeInstanceRef,
    ComputeInstanceRequest,
    GpuInstanceRef,
    GpuInstanceRequest,
    MigModeRequest,
    Node,
)

H100_PROFILES = [  # H100 SXM5 as read on driver 580: id, NVML name, MiB, SMs, placements
    (19, "MIG 1g.10gb", 9984, 16, "{0,1,2,3,4,5,6}:1"),
    (20, "MIG 1g.10gb+me", 9984, 16, "{0,1,2,3,4,5,6}:1"),
    (15, "MIG 1g.20gb", 20096, 26, "{0,2,4,6}:2"),
    (14, "MIG 2g.20gb", 20096, 32, "{0,2,4}:2"),
    (9, "MIG 3g.40gb", 40448, 60, "{0,4}:4"),
    (5, "MIG 4g.40gb", 40448, 64, "{0}:4"),
    (0, "MIG 7g.80gb", 81152, 132, "{0}:8"),
]



def _lgipp(placements: tuple[Placement, ...]) -> str:
    """Placements written like ``nvidia-smi mig -lgipp``: ``{0,2,4}:2``."""
    sizes = {p.size for p in placements}
    assert len(sizes) == 1
    return "{" + ",".join(str(p.start) for p in placements) + "}:" + str(sizes.pop())


@pytest.fixture
def node() -> Iterator[Node]:
    """A fresh simulated 8xh100-80gb node."""
    with open_node(simulate="8xh100-80gb") as n:
        yield n


@pytest.fixture
def mig_node(node: Node) -> Node:
    """The 8xh100-80gb node with MIG enabled on every GPU."""
    results = node.set_mig_mode([MigModeRequest(i, 1) for i in range(8)])
    assert all(r.ok and r.mig_mode == 1 for r in results)
    return node


def _gpu(node: Node, index: int) -> GpuState:
    return node.snapshot()[index]


# --------------------------------------------------------------------------- snapshot


def test_snapshot_of_simulated_h100_node_has_eight_h100s(node: Node) -> None:
    """8xh100-80gb reads back as eight H100 SXM5 GPUs with MIG off and its seven profiles."""
    gpus = node.snapshot()
    assert len(gpus) == 8
    assert node.is_simulated and node.state_file is not None
    assert os.path.samefile(node.library_path, simulator.library_path())
    for i, gpu in enumerate(gpus):
        assert gpu.index == i
        assert gpu.name == "NVIDIA H100 80GB HBM3"
        assert gpu.pci_device_id == 0x233010DE and gpu.pci_subsystem_id == 0x16C110DE
        assert gpu.memory_mib == 81559
        assert gpu.architecture == 9
        assert gpu.mig_capable and gpu.mig_mode == 0 and gpu.pending_mig_mode == 0
        assert gpu.uuid.startswith("GPU-") and gpu.bus_id.startswith("00000000:")
        assert gpu.model_name == "h100-80gb"
        assert gpu.gpu_instances == ()
        rows = [(p.id, p.nvml_name, p.memory_mib, p.multiprocessors, _lgipp(p.placements)) for p in gpu.profiles]
        assert rows == H100_PROFILES
    assert len({g.uuid for g in gpus}) == 8


def test_snapshot_profiles_carry_canonical_names_and_engines(node: Node) -> None:
    """Profiles get migkit's canonical names from NVML's and the engine counts of -lgip."""
    gpu = _gpu(node, 0)
    assert [p.name for p in gpu.profiles] == [
        "1g.10gb",
        "1g.10gb+me",
        "1g.20gb",
        "2g.20gb",
        "3g.40gb",
        "4g.40gb",
        "7g.80gb",
    ]
    seven = gpu.profile("7g.80gb")
    assert (seven.index, seven.slice_count, seven.memory_slices) == (4, 7, 8)
    assert seven.instance_count == 1
    assert (seven.copy_engines, seven.decoders, seven.encoders, seven.jpegs, seven.ofas) == (8, 7, 0, 7, 1)
    me = gpu.profile(20)
    assert (me.index, me.instance_count, me.ofas) == (7, 1, 1)


@pytest.mark.parametrize("model", hardware.gpu_models(), ids=lambda m: m.name)
def test_snapshot_matches_every_bundled_model(model: object) -> None:
    """A simulated GPU of every bundled model reads back with that model's identity and profiles."""
    from migkit.models import GpuModel

    assert isinstance(model, GpuModel)
    with open_node(simulate=f"1x{model.name}") as n:
        (gpu,) = n.snapshot()
    assert gpu.name == model.product_name
    assert gpu.pci_device_id == model.pci_device_id
    assert gpu.memory_mib == model.memory_mib
    assert gpu.architecture == model.architecture
    assert gpu.mig_capable == model.mig_capable
    assert gpu.model_name == model.name
    got = [
        (
            p.id,
            p.index,
            p.name,
            p.nvml_name,
            p.slice_count,
            p.memory_slices,
            p.instance_count,
            p.memory_mib,
            p.multiprocessors,
            p.copy_engines,
            p.decoders,
            p.encoders,
            p.jpegs,
            p.ofas,
            p.capabilities,
            p.placements,
        )
        for p in gpu.profiles
    ]
    want = [
        (
            p.id,
            p.index,
            p.name,
            p.nvml_name,
            p.slice_count,
            p.memory_slices,
            p.instance_count,
            p.memory_mib,
            p.multiprocessors,
            p.copy_engines,
            p.decoders,
            p.encoders,
            p.jpegs,
            p.ofas,
            p.capabilities,
            p.placements,
        )
        for p in model.profiles
    ]
    assert got == want
    assert gpu.as_model().memory_slices == model.memory_slices


def test_snapshot_reuses_unchanged_models() -> None:
    """Two snapshots of an unchanged node share the models; the mode is read every time."""
    with simulator.simulate("8xh100-80gb") as sim:
        with open_node(sim_state=sim.state_file) as n:
            first = n.snapshot()
            second = n.snapshot()
        # the simulator merges its read counts into the state file at nvmlShutdown
        calls = simulator.stats(sim.state_file)
    assert second == first and all(a is b for a, b in zip(first, second, strict=True))
    # every profile index of every GPU, read once and then kept: per GPU, indices 0x0..0x10
    # once, and 0x11 (past the R580 driver's last index) twice: v3, then the v2 retry, since
    # INVALID_ARGUMENT may also mean "v3 not understood"
    assert calls.get("nvmlDeviceGetGpuInstanceProfileInfoV", 0) == 8 * 19
    assert calls.get("nvmlDeviceGetMigMode", 0) == 2 * 8


def test_a_failing_gpu_is_named_with_the_failing_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """When one NVML call fails for one GPU, the snapshot error names the GPU, call and code."""
    from migkit.errors import GpuIsLost

    monkeypatch.setenv("MIGKIT_SIM_FAULTS", "nvmlDeviceGetMigMode@3=GPU_IS_LOST")
    with open_node(simulate="4xh100-80gb") as n:
        with pytest.raises(GpuIsLost) as info:
            n.snapshot()
        assert info.value.call == "nvmlDeviceGetMigMode" and info.value.code == 15
        assert "GPU 2" in str(info.value)
        assert len(n.snapshot()) == 4  # the fault was one call; the next read is whole


def test_a_driver_rejecting_v3_profile_structs_is_read_with_v2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If GetGpuInstanceProfileInfoV rejects the v3 version word, the shim retries with v2."""
    monkeypatch.setenv("MIGKIT_SIM_FAULTS", "nvmlDeviceGetGpuInstanceProfileInfoV@1=INVALID_ARGUMENT")
    with simulator.simulate("2xh100-80gb") as sim:
        with open_node(sim_state=sim.state_file) as n:
            gpus = n.snapshot()
        calls = simulator.stats(sim.state_file)
    assert gpus[0].profiles == gpus[1].profiles
    assert [p.id for p in gpus[0].profiles] == [row[0] for row in H100_PROFILES]
    # GPU 0: the refused v3 call, its v2 retry, 16 more indices, 0x11 (past the end) once;
    # GPU 1: 17 indices, then 0x11 with v3 and its v2 retry
    assert calls["nvmlDeviceGetGpuInstanceProfileInfoV"] == 19 + 19


# --------------------------------------------------------------------------- changes


def test_mig_mode_on_hopper_applies_at_once(node: Node) -> None:
    """Enabling MIG on an H100 takes effect immediately and is read back in the result."""
    (result,) = node.set_mig_mode([MigModeRequest(3, 1)])
    assert result.ok and result.error is None
    assert (result.mig_mode, result.pending_mig_mode) == (1, 1)
    gpus = node.snapshot()
    assert [g.mig_mode for g in gpus] == [0, 0, 0, 1, 0, 0, 0, 0]


def test_mig_mode_on_ampere_stays_pending_until_reset() -> None:
    """Enabling MIG on an A100 only sets the pending mode; a simulated reset applies it."""
    with open_node(simulate="2xa100-40gb") as n:
        (result,) = n.set_mig_mode([MigModeRequest(1, 1)])
        assert result.status == 0
        assert (result.mig_mode, result.pending_mig_mode) == (0, 1)
        gpu = n.snapshot()[1]
        assert gpu.mode_change_pending and not gpu.mig_enabled
        assert n.state_file is not None
        simulator.reset_gpus(n.state_file, [1])
        time.sleep(0.01)  # the simulator re-checks its file for read calls at most every 1 ms
        assert n.snapshot()[1].mig_enabled


def test_bulk_create_and_destroy_round_trip(mig_node: Node) -> None:
    """GIs and CIs created in bulk appear in the snapshot with MIG devices, then go away."""
    node = mig_node
    layout = [(9, Placement(4, 4)), (14, Placement(0, 2)), (19, Placement(2, 1)), (19, Placement(3, 1))]
    requests = [GpuInstanceRequest(gpu, pid, pl) for gpu in (0, 5) for pid, pl in layout]
    created = node.create_gpu_instances(requests)
    assert [r.status for r in created] == [0] * 8
    assert all(r.placement == r.request.placement for r in created)
    gi_ids = [r.gpu_instance for r in created]
    assert all(isinstance(i, int) for i in gi_ids)
    full_ci = {9: 2, 14: 1, 19: 0}  # the CI profile covering each GI
    ci_requests = [
        ComputeInstanceRequest(
            r.request.gpu,
            r.gpu_instance,
            full_ci[r.request.profile_id],
            Placement(0, {9: 3, 14: 2, 19: 1}[r.request.profile_id]),
        )
        for r in created
        if r.gpu_instance is not None
    ]
    ci_results = node.create_compute_instances(ci_requests)
    assert [r.status for r in ci_results] == [0] * 8
    assert all(r.compute_instance == 0 for r in ci_results)

    gpus = node.snapshot()
    for index in (0, 5):
        gpu = gpus[index]
        got = sorted((g.profile, g.start, g.size) for g in gpu.gpu_instances)
        assert got == [("1g.10gb", 2, 1), ("1g.10gb", 3, 1), ("2g.20gb", 0, 2), ("3g.40gb", 4, 4)]
        for gi in gpu.gpu_instances:
            (ci,) = gi.compute_instances
            assert ci.profile == gi.profile and ci.start == 0
            assert ci.uuid.startswith("MIG-") and ci.memory_mib > 0 and ci.multiprocessors > 0
        by_profile = {g.profile: g for g in gpu.gpu_instances}
        assert by_profile["3g.40gb"].compute_instances[0].multiprocessors == 60
        assert {cp.name for cp in gpu.profile("3g.40gb").compute_profiles} >= {"3g.40gb", "1c.3g.40gb"}
    assert all(g.gpu_instances == () for i, g in enumerate(gpus) if i not in (0, 5))

    destroyed = node.destroy_compute_instances(
        [ComputeInstanceRef(r.request.gpu, r.request.gpu_instance, r.compute_instance or 0) for r in ci_results]
    )
    assert [r.status for r in destroyed] == [0] * 8
    destroyed = node.destroy_gpu_instances([GpuInstanceRef(r.request.gpu, r.gpu_instance or 0) for r in created])
    assert [r.status for r in destroyed] == [0] * 8
    assert all(g.gpu_instances == () for g in node.snapshot())


def test_overlapping_placement_fails_alone_and_stop_on_error_skips_the_rest(
    mig_node: Node,
) -> None:
    """A 4g over a 3g at 0:4 gets INSUFFICIENT_RESOURCES; stop_on_error marks later items."""
    node = mig_node
    requests = [
        GpuInstanceRequest(1, 9, Placement(0, 4)),
        GpuInstanceRequest(1, 5, Placement(0, 4)),
        GpuInstanceRequest(1, 19, Placement(6, 1)),
    ]
    results = node.create_gpu_instances(requests)
    assert [r.status for r in results] == [0, 23, 0]
    assert isinstance(results[1].error, InsufficientResources)
    assert results[1].error.call == "nvmlDeviceCreateGpuInstanceWithPlacement"
    assert results[1].error.name == "INSUFFICIENT_RESOURCES"
    assert results[1].gpu_instance is None

    requests = [
        GpuInstanceRequest(2, 9, Placement(0, 4)),
        GpuInstanceRequest(2, 5, Placement(0, 4)),
        GpuInstanceRequest(2, 19, Placement(6, 1)),
    ]
    results = node.create_gpu_instances(requests, stop_on_error=True)
    assert [r.status for r in results] == [0, 23, STATUS_NOT_ATTEMPTED]
    assert not results[2].attempted and results[2].error is None
    assert [(g.profile, g.start) for g in node.snapshot()[2].gpu_instances] == [("3g.40gb", 0)]


def test_an_injected_failure_stops_the_batch_there(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure in the middle of a batch: earlier items stand, later ones are not attempted."""
    monkeypatch.setenv("MIGKIT_SIM_FAULTS", "nvmlDeviceCreateGpuInstanceWithPlacement@2=IN_USE")
    with open_node(simulate="1xh100-80gb") as n:
        assert n.set_mig_mode([MigModeRequest(0, 1)])[0].ok
        results = n.create_gpu_instances(
            [GpuInstanceRequest(0, 19, Placement(k, 1)) for k in range(3)], stop_on_error=True
        )
        assert [r.status for r in results] == [0, 19, STATUS_NOT_ATTEMPTED]
        assert isinstance(results[1].error, InUse)
        assert [g.start for g in n.snapshot()[0].gpu_instances] == [0]


def test_destroying_a_gpu_instance_with_compute_instances_is_in_use(mig_node: Node) -> None:
    """A GI that still holds a CI cannot be destroyed (IN_USE), and stays."""
    node = mig_node
    (gi,) = node.create_gpu_instances([GpuInstanceRequest(0, 0, Placement(0, 8))])
    assert gi.ok and gi.gpu_instance is not None
    (ci,) = node.create_compute_instances([ComputeInstanceRequest(0, gi.gpu_instance, 4)])
    assert ci.ok and ci.placement == Placement(0, 7)
    (result,) = node.destroy_gpu_instances([GpuInstanceRef(0, gi.gpu_instance)])
    assert result.status == 19 and isinstance(result.error, InUse)
    assert result.error.call == "nvmlGpuInstanceDestroy"
    assert len(node.snapshot()[0].gpu_instances) == 1


def test_unknown_instances_are_not_found(mig_node: Node) -> None:
    """Destroying a GI or CI that does not exist reports NOT_FOUND from the lookup call."""
    (gi,) = mig_node.destroy_gpu_instances([GpuInstanceRef(0, 13)])
    assert isinstance(gi.error, NotFound) and gi.error.call == "nvmlDeviceGetGpuInstanceById"
    (ci,) = mig_node.destroy_compute_instances([ComputeInstanceRef(0, 13, 0)])
    assert isinstance(ci.error, NotFound)


def test_gpu_instance_calls_fail_while_mig_is_off(node: Node) -> None:
    """With MIG disabled, creating a GI is NOT_SUPPORTED (and the batch is not aborted)."""
    results = node.create_gpu_instances(
        [GpuInstanceRequest(0, 19, Placement(0, 1)), GpuInstanceRequest(1, 19, Placement(0, 1))]
    )
    assert [r.status for r in results] == [3, 3]
    assert results[0].error is not None and "GPU 0" in str(results[0].error)


def test_empty_batches_make_no_call(node: Node) -> None:
    """An empty batch returns an empty tuple."""
    assert node.create_gpu_instances([]) == ()
    assert node.destroy_gpu_instances([]) == ()


# --------------------------------------------------------------------------- read-only mode


def test_read_only_mode_refuses_every_change_before_nvml(mig_node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """MIGKIT_READ_ONLY=1 makes every mutating call raise ReadOnlyError; NVML sees none."""
    node = mig_node
    assert node.state_file is not None
    (gi,) = node.create_gpu_instances([GpuInstanceRequest(0, 9, Placement(0, 4))])
    assert gi.gpu_instance is not None
    before = simulator.stats(node.state_file)
    monkeypatch.setenv("MIGKIT_READ_ONLY", "1")
    attempts: list[Callable[[], object]] = [
        lambda: node.set_mig_mode([MigModeRequest(1, 0)]),
        lambda: node.create_gpu_instances([GpuInstanceRequest(1, 9, Placement(0, 4))]),
        lambda: node.create_compute_instances([ComputeInstanceRequest(0, gi.gpu_instance or 0, 2)]),
        lambda: node.destroy_compute_instances([ComputeInstanceRef(0, gi.gpu_instance or 0, 0)]),
        lambda: node.destroy_gpu_instances([GpuInstanceRef(0, gi.gpu_instance or 0)]),
    ]
    for attempt in attempts:
        with pytest.raises(ReadOnlyError, match="MIGKIT_READ_ONLY"):
            attempt()
    node.snapshot()  # reading is still allowed
    after = simulator.stats(node.state_file)
    for call in MUTATING:
        assert after.get(call, 0) == before.get(call, 0), call
    assert [g.profile for g in node.snapshot()[0].gpu_instances] == ["3g.40gb"]


def test_shim_itself_refuses_changes_in_read_only_mode(mig_node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """Below the Python check, the C shim marks every item refused (-1) and calls nothing."""
    assert mig_node.state_file is not None
    before = simulator.stats(mig_node.state_file)
    monkeypatch.setenv("MIGKIT_READ_ONLY", "yes")
    items = _nvml.ffi.new("shim_gi_create_t[2]")
    for item in items:
        item.device, item.profile_id, item.start, item.size = 0, 19, 0, 1
    assert lib.shim_create_gpu_instances(items, 2, 0) == lib.SHIM_STATUS_READ_ONLY
    assert [item.status for item in items] == [-1, -1]
    modes = _nvml.ffi.new("shim_mig_mode_t[1]")
    assert lib.shim_set_mig_mode(modes, 1, 0) == lib.SHIM_STATUS_READ_ONLY
    after = simulator.stats(mig_node.state_file)
    for call in MUTATING:
        assert after.get(call, 0) == before.get(call, 0), call


@pytest.mark.parametrize("value", ["", "0"])
def test_read_only_is_off_for_empty_or_zero(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """MIGKIT_READ_ONLY set to '' or '0' does not restrict anything."""
    monkeypatch.setenv("MIGKIT_READ_ONLY", value)
    assert not _nvml.read_only() and not lib.shim_read_only()


# --------------------------------------------------------------------------- loading, errors


def test_library_is_loaded_once_and_exports_are_probed(node: Node) -> None:
    """The shim reports the library in use and which symbols it exports."""
    assert lib.shim_is_loaded()
    assert os.path.samefile(_nvml.loaded_library_path(), simulator.library_path())
    assert _nvml.has_symbol("nvmlDeviceGetGpuInstancePossiblePlacements_v2")
    assert not _nvml.has_symbol("nvmlNoSuchFunction")


def test_another_library_cannot_replace_the_loaded_one(node: Node, tmp_path: object) -> None:
    """Asking for a different libnvidia-ml once one is loaded is refused, naming both."""
    from migkit.errors import NvmlLibraryNotFound

    other = os.path.join(str(tmp_path), "libnvidia-ml.so.1")
    with open(other, "wb") as f:
        f.write(b"not a library")
    with pytest.raises(NvmlLibraryNotFound, match="already uses"):
        _nvml.load(other)


def test_the_real_library_is_refused_once_the_simulator_is_loaded(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the simulator, a default load would get it back by soname: refused, said why."""
    from migkit.errors import NvmlLibraryNotFound

    monkeypatch.delenv("MIGKIT_NVML_LIBRARY", raising=False)
    with pytest.raises(NvmlLibraryNotFound, match="simulator"):
        _nvml.load()
    assert os.path.samefile(_nvml.load("libnvidia-ml.so.1"), simulator.library_path())


def test_nvml_errors_carry_code_name_and_call() -> None:
    """Return codes map to NvmlError subclasses with the NVML name and the failing call."""
    err = _nvml.nvml_error(23, "nvmlDeviceCreateGpuInstanceWithPlacement", "GPU 1")
    assert isinstance(err, InsufficientResources) and isinstance(err, NvmlError)
    assert (err.code, err.name, err.call) == (23, "INSUFFICIENT_RESOURCES", "nvmlDeviceCreateGpuInstanceWithPlacement")
    assert "GPU 1" in str(err)


@pytest.mark.parametrize(
    ("nvml_name", "canonical"),
    [
        ("MIG 1g.10gb", "1g.10gb"),
        ("MIG 1g.10gb+me", "1g.10gb+me"),
        ("MIG 1g.24gb-me", "1g.24gb-me"),
        ("MIG 1c.3g.40gb", "1c.3g.40gb"),
        ("MIG 1c.1g.10gb", "1g.10gb"),
        ("MIG 3c.3g.40gb", "3g.40gb"),
        ("MIG 7g.80gb", "7g.80gb"),
    ],
)
def test_canonical_names_from_nvml_names(nvml_name: str, canonical: str) -> None:
    """NVML's 'MIG ...' names become canonical (C == G drops the compute prefix)."""
    assert canonical_from_nvml(nvml_name) == canonical


@pytest.mark.parametrize(
    ("index", "slices", "mib", "total_mib", "name"),
    [
        (0x0, 1, 4864, 40960, "1g.5gb"),  # A100-40GB
        (0x2, 3, 19968, 40960, "3g.20gb"),
        (0x4, 7, 40192, 40960, "7g.40gb"),
        (0x7, 1, 9984, 81559, "1g.10gb+me"),  # H100
        (0x2, 3, 71168, 143771, "3g.71gb"),  # H200: 70.5 rounds half up
        (0x0D, 1, 24192, 97887, "1g.24gb-me"),  # RTX PRO 6000
        (0x0F, 1, 24192, 97887, "1g.24gb+me.all"),
    ],
)
def test_computed_names_when_nvml_gives_none(index: int, slices: int, mib: int, total_mib: int, name: str) -> None:
    """Without an NVML name the profile is named by mig-parted's rule (half-up rounding)."""
    assert _decode.computed_gi_name(index, slices, mib, total_mib * 2**20) == name


@pytest.mark.parametrize("read_back", ["nvmlGpuInstanceGetInfo", "nvmlComputeInstanceGetInfo_v2"])
def test_an_instance_whose_read_back_fails_is_reported_created(read_back: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML created the instance but reading it back failed: the result fails, names the read,
    and says the instance exists, so that the caller looks for it instead of forgetting it."""
    monkeypatch.setenv("MIGKIT_SIM_FAULTS", f"{read_back}@1=UNKNOWN")
    with open_node(simulate="1xh100-80gb") as node:
        assert node.set_mig_mode([MigModeRequest(0, 1)])[0].ok
        gi = node.create_gpu_instances([GpuInstanceRequest(0, 9, Placement(4, 4))])[0]
        if read_back == "nvmlGpuInstanceGetInfo":
            assert not gi.ok and gi.created and gi.gpu_instance is None
            assert gi.error is not None and gi.error.call == read_back
            assert [g.placement for g in node.snapshot()[0].gpu_instances] == [Placement(4, 4)]
            return
        assert gi.ok and gi.created and gi.gpu_instance is not None
        ci = node.create_compute_instances([ComputeInstanceRequest(0, gi.gpu_instance, 2, Placement(0, 3))])[0]
        assert not ci.ok and ci.created and ci.compute_instance is None
        assert ci.error is not None and ci.error.call == read_back
        (listed,) = node.snapshot()[0].gpu_instances
        assert [c.profile_id for c in listed.compute_instances] == [2]


def test_a_create_that_fails_is_not_created(mig_node: Node) -> None:
    """An instance NVML refused is not created, and says so."""
    taken = mig_node.create_gpu_instances([GpuInstanceRequest(0, 9, Placement(4, 4))])[0]
    again = mig_node.create_gpu_instances([GpuInstanceRequest(0, 9, Placement(4, 4))])[0]
    assert taken.ok and taken.created and not again.ok and not again.created
