"""The node snapshot: one shim call for the whole node, decoded into :class:`GpuState` values."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from migkit.errors import NvmlError
from migkit.models import GpuModel, GpuState, Profile
from migkit.nvml._decode import (
    CI_PROFILE_SIZE,
    DEVICE,
    DEVICE_SIZE,
    GI_PROFILE_SIZE,
    OFF_CI_PROFILES,
    OFF_PROFILES,
    ProfileTable,
    build_instances,
    build_profiles,
    clear_interned,
    text,
    unknown_lines,
)
from migkit.nvml._library import ffi, lib, nvml_error

BundledModel = Callable[[int, int], "GpuModel | None"]
"""Looks a GPU up in the bundled tables by (PCI device id, memory MiB); given by the caller."""


def _contradictions(
    model: GpuModel | None,
    mig_capable: bool,
    profiles: tuple[Profile, ...],
    live: frozenset[int],
    tables_read: bool,
) -> tuple[str, ...]:
    """Reads whose "not supported" answer contradicts the bundled table of the same GPU.

    NVML answers NOT_SUPPORTED both for "this GPU has no MIG" / "no profile at this index" and
    for a read that failed; the bundled table (from the same PCI device id) tells them apart.
    A GPU that should offer MIG or a profile and did not answer for it has an unknown fact.
    Compute-instance profiles are read through a live GPU instance, so they are checked for
    the GPU-instance profiles in ``live`` only. Only GPU-instance rows observed on real GPUs
    count: an inferred row may simply be wrong, and a profile a newer driver added (A100's
    1g.10gb came with R525) is rightly absent on an older one. Compute-instance profiles follow
    from the GPU-instance profile by fixed rules, so all of them count.
    """
    if model is None or not model.mig_capable:
        return ()
    if not mig_capable:
        return (f"nvmlDeviceGetMigMode (MIG mode): NOT_SUPPORTED, though {model.name} has MIG",)
    if not tables_read:
        return ()
    lines: list[str] = []
    read = {p.index: p for p in profiles}
    for want in model.profiles:
        if want.mark != "observed":
            continue
        got = read.get(want.index)
        if got is None:
            lines.append(
                f"nvmlDeviceGetGpuInstanceProfileInfoV (GPU instance profile index {want.index}):"
                f" no answer, though {model.name} has {want.name} there"
            )
        elif want.id in live:
            have = {cp.id for cp in got.compute_profiles}
            lines.extend(
                f"nvmlGpuInstanceGetComputeInstanceProfileInfoV (compute instance profile index"
                f" {cp.index} of GPU instance profile {want.id}): no answer, though {model.name}"
                f" has {cp.name} there"
                for cp in want.compute_profiles
                if cp.id not in have
            )
    return tuple(lines)


_MAX_PROFILE_TABLES = 256


class Snapshotter:
    """Reads the whole node in one shim call into buffers it owns, and builds the models.

    Model building is the part Python adds to the C work, so it is memoised: the shim writes
    every record the same way for the same state, and a GPU whose records are byte-for-byte
    those of the previous snapshot gets the very same (immutable) :class:`GpuState` back.
    Profile tables are shared by every GPU whose profile records are identical (eight GPUs
    of one model build them once) and survive changes to instances. On the NVML side the
    shim keeps each GPU's identity and profile tables while its UUID and MIG mode stay the
    same; the mode, the instances and their processes are read every time.
    """

    def __init__(self, capacity: int = 0, bundled_model: BundledModel | None = None) -> None:
        self._bundled_model = bundled_model
        self._models: dict[tuple[int, int], GpuModel | None] = {}
        self._lock = threading.Lock()
        self._capacity = 0
        self._buffers: list[Any] = []
        self._current = 0
        self._count = ffi.new("unsigned int *")
        self._same: Any = None
        self._states: list[GpuState | None] = []  # GpuState of each index from the last snapshot
        # profile records -> their models; GPUs of one model share one entry
        self._tables: dict[bytes, ProfileTable] = {}
        # (profile records, model, MIG capable, live GI profiles, tables read) -> contradictions
        self._contradictions: dict[tuple[bytes, str, bool, frozenset[int], bool], tuple[str, ...]] = {}
        self._ensure(max(capacity, 1))

    def _ensure(self, capacity: int) -> None:
        if capacity <= self._capacity:
            return
        capacity = min(capacity, lib.SHIM_MAX_DEVICES)
        self._buffers = [ffi.new("shim_device_t[]", capacity) for _ in range(2)]
        self._same = ffi.new("unsigned char[]", capacity)
        self._capacity = capacity
        self._states = []

    def clear_cache(self) -> None:
        """Forget the memoised models (the next snapshot builds every model afresh)."""
        with self._lock:
            self._states = []
            self._tables.clear()
            self._contradictions.clear()
            clear_interned()

    def snapshot(self, *, tables: bool = True) -> tuple[GpuState, ...]:
        """Every GPU, read in one shim call; ``tables=False`` leaves out the profile tables of
        GPUs with MIG off unless they are kept already (see :meth:`Node.snapshot`)."""
        flags = 0 if tables else lib.SHIM_SNAP_TABLES_IF_NEEDED
        with self._lock:
            for _ in range(2):
                self._current ^= 1
                out = self._buffers[self._current]
                code = lib.shim_snapshot(out, self._capacity, self._count, flags)
                count = int(self._count[0])
                if code == 7 and count > self._capacity and self._capacity < lib.SHIM_MAX_DEVICES:
                    self._ensure(count)  # more GPUs than the buffer holds: grow, read again
                    continue
                break
            if code != 0:
                raise nvml_error(
                    code,
                    "nvmlDeviceGetCount_v2" if code != 7 else "shim_snapshot",
                    f"{count} GPUs" if code == 7 else "",
                )
            previous = self._buffers[self._current ^ 1]
            known = min(len(self._states), count)
            if known:
                lib.shim_same_devices(out, previous, known, self._same)
            buf = ffi.buffer(out)
            states: list[GpuState] = []
            for i in range(count):
                cached = self._states[i] if i < known and self._same[i] else None
                states.append(cached if cached is not None else self._build(buf, out, i))
            self._states = list(states)
            return tuple(states)

    def _build(self, buf: Any, out: Any, i: int) -> GpuState:
        base = i * DEVICE_SIZE
        (
            index,
            status,
            pci_id,
            subsys_id,
            arch,
            mig_capable,
            mode,
            pending,
            _max_mig,
            n_profiles,
            n_ci_profiles,
            n_gis,
            n_cis,
            _n_mig,
            truncated,
            tables_skipped,
            memory_total,
            failed_call,
            uuid,
            name,
            bus_id,
            unknown_count,
        ) = DEVICE.unpack_from(buf, base)
        if status != 0:
            self._states = []  # do not trust a partial read next time either
            raise nvml_error(status, text(failed_call), f"GPU {index}")
        if truncated:
            raise NvmlError.from_code(
                7,
                f"GPU {index}: more MIG objects than migkit's snapshot limits (flags 0x{truncated:x})",
                call="shim_snapshot",
            )
        gips = base + OFF_PROFILES
        cips = base + OFF_CI_PROFILES
        profile_bytes = b"".join(
            (
                buf[gips : gips + n_profiles * GI_PROFILE_SIZE],
                buf[cips : cips + n_ci_profiles * CI_PROFILE_SIZE],
                memory_total.to_bytes(8, "little"),
            )
        )
        table = self._tables.get(profile_bytes)
        if table is None:
            if len(self._tables) >= _MAX_PROFILE_TABLES:
                self._tables.clear()
            table = build_profiles(buf, base, n_profiles, n_ci_profiles, memory_total)
            self._tables[profile_bytes] = table
        memory_mib = memory_total >> 20
        model = self._model(pci_id, memory_mib)
        instances = build_instances(buf, base, n_gis, n_cis, table)
        failed = unknown_lines(buf, base, unknown_count)
        live = frozenset(gi.profile_id for gi in instances)
        key = (profile_bytes, model.name if model else "", bool(mig_capable), live, not tables_skipped)
        contradictions = self._contradictions.get(key)
        if contradictions is None:
            contradictions = _contradictions(model, bool(mig_capable), table.profiles, live, not tables_skipped)
            if len(self._contradictions) >= _MAX_PROFILE_TABLES:
                self._contradictions.clear()
            self._contradictions[key] = contradictions
        if contradictions:
            lib.shim_forget_tables(index)  # read the tables afresh next time
        failed += contradictions
        return GpuState(
            index=index,
            uuid=text(uuid),
            name=text(name),
            pci_device_id=pci_id,
            pci_subsystem_id=subsys_id,
            bus_id=text(bus_id),
            memory_mib=memory_mib,
            architecture=arch,
            mig_capable=bool(mig_capable),
            mig_mode=mode,
            pending_mig_mode=pending,
            profiles=table.profiles,
            gpu_instances=instances,
            model_name=model.name if model is not None else "",
            unknown=failed,
        )

    def _model(self, pci_device_id: int, memory_mib: int) -> GpuModel | None:
        """The bundled table this GPU matches, if the caller gave a way to look it up."""
        if self._bundled_model is None:
            return None
        key = (pci_device_id, memory_mib)
        if key not in self._models:
            self._models[key] = self._bundled_model(pci_device_id, memory_mib)
        return self._models[key]

