"""Thin typed wrapper over the compiled NVML shim (``src/_nvml_shim.c``).

No policy lives here: NVML return codes become :class:`~migkit.errors.NvmlError` subclasses,
C structs become the frozen models of :mod:`migkit.models`, and every bulk operation is one
call into C (which releases the GIL around the NVML work). The cffi module is typed ``Any``
at this boundary only.

Loading follows one rule: the library is opened at first use, once per process. The paths
tried are the explicit argument, else ``MIGKIT_NVML_LIBRARY``, else ``libnvidia-ml.so.1``
(the dynamic loader's search) and then the usual absolute locations.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import attrs

from migkit._nvml_shim_cffi import ffi as _cffi_ffi
from migkit._nvml_shim_cffi import lib as _cffi_lib
from migkit.errors import MigkitError, NvmlError, NvmlLibraryNotFound, ReadOnlyError
from migkit.models import (
    GI_INDEX_NAMES,
    ComputeInstance,
    ComputeProfile,
    GpuInstance,
    GpuState,
    Placement,
    Profile,
)
from migkit.names import canonical_from_nvml, computed_gb

ffi: Any = _cffi_ffi
lib: Any = _cffi_lib

LIBRARY_ENV = "MIGKIT_NVML_LIBRARY"
READ_ONLY_ENV = "MIGKIT_READ_ONLY"
SONAME = "libnvidia-ml.so.1"

# Where distributions and container runtimes put the driver's user-space library, tried after
# the dynamic loader's own search (LD_LIBRARY_PATH, ld.so.cache) has failed.
LIBRARY_DIRS: tuple[str, ...] = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
    "/usr/lib/wsl/lib",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/sbsa-linux-gnu",
    "/usr/local/nvidia/lib64/aarch64",
)

STATUS_READ_ONLY: int = lib.SHIM_STATUS_READ_ONLY  # refused: MIGKIT_READ_ONLY is set
STATUS_NOT_ATTEMPTED: int = lib.SHIM_STATUS_NOT_ATTEMPTED  # an earlier item failed
UNKNOWN_MODE = 0xFFFFFFFF

__all__ = [
    "STATUS_NOT_ATTEMPTED",
    "STATUS_READ_ONLY",
    "ComputeInstanceRef",
    "ComputeInstanceRequest",
    "ComputeInstanceResult",
    "DestroyResult",
    "GpuInstanceRef",
    "GpuInstanceRequest",
    "GpuInstanceResult",
    "MigModeRequest",
    "MigModeResult",
    "Snapshotter",
    "candidate_paths",
    "create_compute_instances",
    "create_gpu_instances",
    "destroy_compute_instances",
    "destroy_gpu_instances",
    "device_count",
    "error_string",
    "has_symbol",
    "init",
    "load",
    "loaded_library_path",
    "read_only",
    "set_mig_mode",
    "shutdown",
]


# --------------------------------------------------------------------------- loading


_load_lock = threading.Lock()


def candidate_paths(explicit: str | os.PathLike[str] | None = None) -> tuple[str, ...]:
    """The paths :func:`load` tries, in order."""
    if explicit is not None:
        return (os.fspath(explicit),)
    override = os.environ.get(LIBRARY_ENV)
    if override:
        return (override,)
    return (SONAME, *(os.path.join(d, SONAME) for d in LIBRARY_DIRS))


def loaded_library_path() -> str:
    """Where the loaded libnvidia-ml lives; ``""`` when none is loaded."""
    buf = ffi.new("char[]", 4096)
    if lib.shim_library_path(buf, 4096) != 0:
        return ""
    return str(ffi.string(buf).decode("utf-8", "replace"))


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def load(explicit: str | os.PathLike[str] | None = None) -> str:
    """Open libnvidia-ml (once per process) and return the path of the library in use.

    Raises :class:`NvmlLibraryNotFound` naming every path tried with the loader's reason,
    and how to point migkit at the library.
    """
    paths = candidate_paths(explicit)
    with _load_lock:
        if lib.shim_is_loaded():
            loaded = loaded_library_path()
            _check_compatible(loaded, explicit, paths)
            return loaded
        c_paths = [ffi.new("char[]", os.fsencode(p)) for p in paths]
        array = ffi.new("const char *[]", c_paths)
        errbuf = ffi.new("char[]", 8192)
        index = lib.shim_load(array, len(paths), errbuf, 8192)
        if index == lib.SHIM_LOAD_ALREADY:  # another thread of C code got there first
            loaded = loaded_library_path()
            _check_compatible(loaded, explicit, paths)
            return loaded
        if index < 0:
            reasons = ffi.string(errbuf).decode("utf-8", "replace").rstrip("\n")
            tried = "\n".join(f"  {line}" for line in reasons.splitlines())
            raise NvmlLibraryNotFound(
                "cannot load the NVIDIA management library (libnvidia-ml); is the NVIDIA "
                f"driver installed?\ntried:\n{tried}\n"
                f"point migkit at it with {LIBRARY_ENV}=/path/to/{SONAME} "
                "(or nvml_library= / --nvml-library), or use a simulated node (--simulate)",
                paths,
            )
        return loaded_library_path() or paths[index]


def _check_compatible(loaded: str, explicit: str | os.PathLike[str] | None, paths: Sequence[str]) -> None:
    """A process has one libnvidia-ml: refuse to silently use another than the one asked for."""
    wanted = paths[0] if (explicit is not None or os.environ.get(LIBRARY_ENV)) else None
    if wanted is not None:
        # a bare soname is what the dynamic loader matches against the library already loaded
        same = wanted == SONAME if "/" not in wanted else (os.path.exists(wanted) and _same_file(wanted, loaded))
        if not same:
            raise NvmlLibraryNotFound(
                f"cannot load {wanted}: this process already uses the NVML library {loaded} "
                "(one libnvidia-ml per process)",
                [wanted],
            )
        return
    from migkit import simulator

    try:
        simulated = _same_file(loaded, simulator.library_path())
    except MigkitError:
        simulated = False
    if simulated:
        raise NvmlLibraryNotFound(
            "cannot load the real libnvidia-ml: this process already loaded migkit's NVML "
            f"simulator ({loaded}), which answers to the same soname (one libnvidia-ml per "
            "process); use a separate process",
            list(paths),
        )


def has_symbol(name: str) -> bool:
    """Whether the loaded library exports ``name``."""
    return bool(lib.shim_has_symbol(name.encode()))


# --------------------------------------------------------------------------- basics


def error_string(code: int) -> str:
    return str(ffi.string(lib.shim_error_string(code)).decode("utf-8", "replace"))


def _error(code: int, call: str | None, context: str = "") -> NvmlError:
    text = error_string(code) if code >= 0 else ""
    if context:
        text = f"{context}: {text}" if text else context
    return NvmlError.from_code(code, text, call=call)


def _check(code: int, call: str) -> None:
    if code != 0:
        raise _error(code, call)


def init() -> None:
    """``nvmlInitWithFlags(0)`` (each call adds one to NVML's reference count)."""
    _check(lib.shim_init(), "nvmlInitWithFlags")


def shutdown() -> None:
    """``nvmlShutdown`` (releases one reference)."""
    _check(lib.shim_shutdown(), "nvmlShutdown")


def read_only() -> bool:
    """Whether ``MIGKIT_READ_ONLY`` forbids mutating NVML calls (the shim checks it too)."""
    value = os.environ.get(READ_ONLY_ENV, "")
    return value not in ("", "0")


def device_count() -> int:
    count = ffi.new("unsigned int *")
    _check(lib.shim_device_count(count), "nvmlDeviceGetCount_v2")
    return int(count[0])


# --------------------------------------------------------------------------- canonical names

_GI_SUFFIX = {
    "REV1": "+me",
    "GFX": "+gfx",
    "NO_ME": "-me",
    "ALL_ME": "+me.all",
}



def _computed_gi_name(index: int, slice_count: int, memory_mib: int, total_bytes: int) -> str:
    """The name mig-parted computes when NVML gives none: ``<G>g.<GB>gb`` plus the variant."""
    if total_bytes <= 0:
        return f"{slice_count}g"
    gb = computed_gb(memory_mib, total_bytes)
    variant = GI_INDEX_NAMES.get(index, "").partition("_SLICE")[2].lstrip("_")
    return f"{slice_count}g.{gb}gb{_GI_SUFFIX.get(variant, '')}"


# --------------------------------------------------------------------------- struct layouts


def _layout(ctype: str, fields: Sequence[tuple[str, str]]) -> struct.Struct:
    """A native-alignment ``struct.Struct`` for ``ctype``, checked field by field against the
    C compiler's layout, so unpacking a buffer is one C-speed call per record."""
    codes = ""
    for name, code in fields:
        prefix = struct.calcsize("@" + codes + code) - struct.calcsize("@" + code)
        if ffi.offsetof(ctype, name) != prefix:
            raise ImportError(f"migkit shim layout mismatch: {ctype}.{name}; rebuild migkit")
        codes += code
    layout = struct.Struct("@" + codes)
    if layout.size > ffi.sizeof(ctype):
        raise ImportError(f"migkit shim layout mismatch: sizeof({ctype}); rebuild migkit")
    return layout


_DEVICE = _layout(
    "shim_device_t",
    [
        ("index", "I"),
        ("status", "i"),
        ("pci_device_id", "I"),
        ("pci_subsystem_id", "I"),
        ("architecture", "I"),
        ("mig_capable", "I"),
        ("mig_mode", "I"),
        ("pending_mig_mode", "I"),
        ("max_mig_devices", "I"),
        ("profile_count", "I"),
        ("ci_profile_count", "I"),
        ("gi_count", "I"),
        ("ci_count", "I"),
        ("mig_device_count", "I"),
        ("truncated", "I"),
        ("reserved", "I"),
        ("memory_total", "Q"),
        ("failed_call", "64s"),
        ("uuid", "96s"),
        ("name", "96s"),
        ("bus_id", "32s"),
    ],
)
_GI_PROFILE = _layout(
    "shim_gi_profile_t",
    [
        ("index", "I"),
        ("id", "I"),
        ("info_version", "I"),
        ("p2p", "I"),
        ("slice_count", "I"),
        ("instance_count", "I"),
        ("multiprocessors", "I"),
        ("copy_engines", "I"),
        ("decoders", "I"),
        ("encoders", "I"),
        ("jpegs", "I"),
        ("ofas", "I"),
        ("capabilities", "I"),
        ("placement_count", "I"),
        ("memory_mib", "Q"),
        ("placements", f"{2 * lib.SHIM_MAX_GI_PLACEMENTS}I"),
        ("name", "96s"),
    ],
)
_CI_PROFILE = _layout(
    "shim_ci_profile_t",
    [
        ("gi_profile_id", "I"),
        ("index", "I"),
        ("id", "I"),
        ("slice_count", "I"),
        ("instance_count", "I"),
        ("multiprocessors", "I"),
        ("copy_engines", "I"),
        ("decoders", "I"),
        ("encoders", "I"),
        ("jpegs", "I"),
        ("ofas", "I"),
        ("placement_count", "I"),
        ("placements", f"{2 * lib.SHIM_MAX_CI_PLACEMENTS}I"),
        ("name", "96s"),
    ],
)
_GI = _layout(
    "shim_gi_t",
    [
        ("id", "I"),
        ("profile_id", "I"),
        ("start", "I"),
        ("size", "I"),
        ("first_ci", "I"),
        ("ci_count", "I"),
    ],
)
_CI = _layout(
    "shim_ci_t",
    [
        ("gi_id", "I"),
        ("id", "I"),
        ("profile_id", "I"),
        ("start", "I"),
        ("size", "I"),
        ("has_mig_device", "I"),
        ("multiprocessors", "I"),
        ("copy_engines", "I"),
        ("decoders", "I"),
        ("encoders", "I"),
        ("jpegs", "I"),
        ("ofas", "I"),
        ("gi_slice_count", "I"),
        ("ci_slice_count", "I"),
        ("memory_mib", "Q"),
        ("uuid", "96s"),
        ("process_status", "i"),
        ("process_count", "I"),
        ("pids", f"{lib.SHIM_MAX_PIDS}I"),
    ],
)
_C_PIDS = 18  # index of pids[0] in an unpacked shim_ci_t

_DEVICE_SIZE: int = ffi.sizeof("shim_device_t")
_OFF_PROFILES: int = ffi.offsetof("shim_device_t", "profiles")
_OFF_CI_PROFILES: int = ffi.offsetof("shim_device_t", "ci_profiles")
_OFF_GIS: int = ffi.offsetof("shim_device_t", "gis")
_OFF_CIS: int = ffi.offsetof("shim_device_t", "cis")
_GI_PROFILE_SIZE: int = ffi.sizeof("shim_gi_profile_t")
_CI_PROFILE_SIZE: int = ffi.sizeof("shim_ci_profile_t")
_GI_SIZE: int = ffi.sizeof("shim_gi_t")
_CI_SIZE: int = ffi.sizeof("shim_ci_t")


def _text(raw: bytes) -> str:
    return raw.partition(b"\0")[0].decode("utf-8", "replace")


# Interned values: a node has a handful of distinct placements and names, so building models
# mostly becomes dictionary lookups.
_placement_cache: dict[tuple[int, int], Placement] = {}
_placement_lists: dict[tuple[int, ...], tuple[Placement, ...]] = {}
_nvml_names: dict[bytes, tuple[str, str]] = {}


def _clear_interned() -> None:
    _placement_cache.clear()
    _placement_lists.clear()
    _nvml_names.clear()


def _placement(start: int, size: int) -> Placement:
    key = (start, size)
    placement = _placement_cache.get(key)
    if placement is None:
        placement = _placement_cache[key] = Placement(start, size)
    return placement


def _placement_list(flat: tuple[int, ...]) -> tuple[Placement, ...]:
    """``(start0, size0, start1, size1, ...)`` -> placements."""
    placements = _placement_lists.get(flat)
    if placements is None:
        placements = _placement_lists[flat] = tuple(_placement(flat[i], flat[i + 1]) for i in range(0, len(flat), 2))
    return placements


def _names(raw: bytes) -> tuple[str, str]:
    """NVML's name field -> (NVML's name, canonical name or "" when NVML gave none)."""
    names = _nvml_names.get(raw)
    if names is None:
        nvml_name = _text(raw)
        names = _nvml_names[raw] = (
            nvml_name,
            canonical_from_nvml(nvml_name) if nvml_name else "",
        )
    return names


def _compute_profile_order(cp: ComputeProfile) -> tuple[int, int]:
    return (-cp.slice_count, -cp.index)  # the GI-covering (default) profile first


@attrs.frozen
class _ProfileTable:
    """A GPU's profiles as built from one snapshot, with the name lookups instances need."""

    profiles: tuple[Profile, ...]
    gi_names: dict[int, str]
    ci_names: dict[tuple[int, int], str]


# Field positions in the unpacked records (see the layouts above).
_P_PLACEMENTS = 15
_P_NAME = _P_PLACEMENTS + 2 * lib.SHIM_MAX_GI_PLACEMENTS
_C_PLACEMENTS = 12
_C_NAME = _C_PLACEMENTS + 2 * lib.SHIM_MAX_CI_PLACEMENTS


def _build_profiles(buf: Any, base: int, n_profiles: int, n_ci_profiles: int, memory_total: int) -> _ProfileTable:
    cis_of: dict[int, list[tuple[Any, ...]]] = {}
    for k in range(n_ci_profiles):
        raw = _CI_PROFILE.unpack_from(buf, base + _OFF_CI_PROFILES + k * _CI_PROFILE_SIZE)
        cis_of.setdefault(raw[0], []).append(raw)
    profiles: list[Profile] = []
    gi_names: dict[int, str] = {}
    ci_names: dict[tuple[int, int], str] = {}
    for k in range(n_profiles):
        r = _GI_PROFILE.unpack_from(buf, base + _OFF_PROFILES + k * _GI_PROFILE_SIZE)
        index, pid, slices, memory_mib = r[0], r[1], r[4], r[14]
        nvml_name, name = _names(r[_P_NAME])
        if not name:
            name = _computed_gi_name(index, slices, memory_mib, memory_total)
        gi_names[pid] = name
        placements = _placement_list(r[_P_PLACEMENTS : _P_PLACEMENTS + 2 * r[13]])
        computes: list[ComputeProfile] = []
        for c in cis_of.get(pid, ()):
            cnvml, cname = _names(c[_C_NAME])
            if not cname:
                cname = name if c[3] == slices else f"{c[3]}c.{name}"
            ci_names[(pid, c[2])] = cname
            computes.append(
                ComputeProfile(
                    id=c[2],
                    index=c[1],
                    name=cname,
                    slice_count=c[3],
                    instance_count=c[4],
                    multiprocessors=c[5],
                    placements=_placement_list(c[_C_PLACEMENTS : _C_PLACEMENTS + 2 * c[11]]),
                    nvml_name=cnvml,
                    copy_engines=c[6],
                    decoders=c[7],
                    encoders=c[8],
                    jpegs=c[9],
                    ofas=c[10],
                )
            )
        computes.sort(key=_compute_profile_order)
        profiles.append(
            Profile(
                id=pid,
                index=index,
                name=name,
                slice_count=slices,
                memory_slices=placements[0].size if placements else 0,
                instance_count=r[5],
                memory_mib=memory_mib,
                multiprocessors=r[6],
                placements=placements,
                nvml_name=nvml_name,
                copy_engines=r[7],
                decoders=r[8],
                encoders=r[9],
                jpegs=r[10],
                ofas=r[11],
                capabilities=r[12],
                compute_profiles=tuple(computes),
            )
        )
    profiles.sort(key=lambda p: p.sort_key)
    return _ProfileTable(tuple(profiles), gi_names, ci_names)


def _gi_order(gi: GpuInstance) -> int:
    return gi.id


def _build_instances(buf: Any, base: int, n_gis: int, n_cis: int, table: _ProfileTable) -> tuple[GpuInstance, ...]:
    cis = [_CI.unpack_from(buf, base + _OFF_CIS + k * _CI_SIZE) for k in range(n_cis)]
    ci_names = table.ci_names
    instances: list[GpuInstance] = []
    for k in range(n_gis):
        gi_id, profile_id, start, size, first_ci, ci_count = _GI.unpack_from(buf, base + _OFF_GIS + k * _GI_SIZE)
        records = sorted(cis[first_ci : first_ci + ci_count], key=_ci_record_id)
        computes = [
            ComputeInstance(
                id=c[1],
                profile_id=c[2],
                profile=ci_names.get((profile_id, c[2]), ""),
                start=c[3],
                size=c[4],
                uuid=_text(c[15]),
                memory_mib=c[14],
                multiprocessors=c[6],
                copy_engines=c[7],
                decoders=c[8],
                encoders=c[9],
                jpegs=c[10],
                ofas=c[11],
                pids=_pids(c),
            )
            for c in records
        ]
        instances.append(
            GpuInstance(
                id=gi_id,
                profile_id=profile_id,
                profile=table.gi_names.get(profile_id, ""),
                start=start,
                size=size,
                compute_instances=tuple(computes),
                # The count, not the PIDs: with more processes than the shim keeps, or PIDs the
                # driver hides from this container, the count still says the GI is busy.
                in_use=any(c[17] for c in records),
            )
        )
    instances.sort(key=_gi_order)
    return tuple(instances)


def _pids(record: tuple[Any, ...]) -> tuple[int, ...]:
    """The PIDs the shim kept for one CI (none when the process query failed or overflowed)."""
    count = min(int(record[17]), lib.SHIM_MAX_PIDS) if record[16] == 0 else 0
    if not count:
        return ()
    return tuple(sorted({int(pid) for pid in record[_C_PIDS : _C_PIDS + count]}))


def _ci_record_id(record: tuple[Any, ...]) -> int:
    return int(record[1])


_model_names: dict[tuple[int, int], str] = {}


def _model_name(pci_device_id: int, memory_mib: int) -> str:
    """The bundled hardware table this GPU matches, ``""`` if none."""
    key = (pci_device_id, memory_mib)
    name = _model_names.get(key)
    if name is None:
        try:
            from migkit.hardware import model_for_pci_id
        except ImportError:  # pragma: no cover - the tables ship with migkit
            return ""
        model = model_for_pci_id(pci_device_id, memory_mib)
        name = _model_names[key] = model.name if model is not None else ""
    return name


_MAX_PROFILE_TABLES = 256


class Snapshotter:
    """Reads the whole node in one shim call into buffers it owns, and builds the models.

    Model building is the part Python adds to the C work, so it is memoised: the shim writes
    every record the same way for the same state, and a GPU whose records are byte-for-byte
    those of the previous snapshot gets the very same (immutable) :class:`GpuState` back.
    Profile tables are shared by every GPU whose profile records are identical (eight GPUs
    of one model build them once) and survive changes to instances. The NVML calls
    themselves are always made.
    """

    def __init__(self, capacity: int = 0) -> None:
        self._lock = threading.Lock()
        self._capacity = 0
        self._buffers: list[Any] = []
        self._current = 0
        self._count = ffi.new("unsigned int *")
        self._same: Any = None
        self._states: list[GpuState | None] = []  # GpuState of each index from the last snapshot
        # profile records -> their models; GPUs of one model share one entry
        self._tables: dict[bytes, _ProfileTable] = {}
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
            _clear_interned()

    def snapshot(self) -> tuple[GpuState, ...]:
        with self._lock:
            for _ in range(2):
                self._current ^= 1
                out = self._buffers[self._current]
                code = lib.shim_snapshot(out, self._capacity, self._count)
                count = int(self._count[0])
                if code == 7 and count > self._capacity and self._capacity < lib.SHIM_MAX_DEVICES:
                    self._ensure(count)  # more GPUs than the buffer holds: grow, read again
                    continue
                break
            if code != 0:
                raise _error(
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
        base = i * _DEVICE_SIZE
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
            _reserved,
            memory_total,
            failed_call,
            uuid,
            name,
            bus_id,
        ) = _DEVICE.unpack_from(buf, base)
        if status != 0:
            self._states = []  # do not trust a partial read next time either
            raise _error(status, _text(failed_call), f"GPU {index}")
        if truncated:
            raise NvmlError.from_code(
                7,
                f"GPU {index}: more MIG objects than migkit's snapshot limits (flags 0x{truncated:x})",
                call="shim_snapshot",
            )
        gips = base + _OFF_PROFILES
        cips = base + _OFF_CI_PROFILES
        profile_bytes = b"".join(
            (
                buf[gips : gips + n_profiles * _GI_PROFILE_SIZE],
                buf[cips : cips + n_ci_profiles * _CI_PROFILE_SIZE],
                memory_total.to_bytes(8, "little"),
            )
        )
        table = self._tables.get(profile_bytes)
        if table is None:
            if len(self._tables) >= _MAX_PROFILE_TABLES:
                self._tables.clear()
            table = _build_profiles(buf, base, n_profiles, n_ci_profiles, memory_total)
            self._tables[profile_bytes] = table
        memory_mib = memory_total >> 20
        return GpuState(
            index=index,
            uuid=_text(uuid),
            name=_text(name),
            pci_device_id=pci_id,
            pci_subsystem_id=subsys_id,
            bus_id=_text(bus_id),
            memory_mib=memory_mib,
            architecture=arch,
            mig_capable=bool(mig_capable),
            mig_mode=mode,
            pending_mig_mode=pending,
            profiles=table.profiles,
            gpu_instances=_build_instances(buf, base, n_gis, n_cis, table),
            model_name=_model_name(pci_id, memory_mib),
        )


# --------------------------------------------------------------------------- bulk changes


@attrs.frozen
class GpuInstanceRequest:
    """Create a GPU instance of profile ``profile_id`` at ``placement`` on GPU ``gpu``."""

    gpu: int
    profile_id: int
    placement: Placement


@attrs.frozen
class ComputeInstanceRequest:
    """Create a compute instance in GPU instance ``gpu_instance`` (its id) of GPU ``gpu``.

    ``placement`` counts compute slices inside the GPU instance; ``None`` lets the driver
    choose (``nvmlGpuInstanceCreateComputeInstance``).
    """

    gpu: int
    gpu_instance: int
    profile_id: int
    placement: Placement | None = None


@attrs.frozen
class GpuInstanceRef:
    """GPU instance ``gpu_instance`` (its id) of GPU ``gpu``."""

    gpu: int
    gpu_instance: int


@attrs.frozen
class ComputeInstanceRef:
    """Compute instance ``compute_instance`` of GPU instance ``gpu_instance`` of GPU ``gpu``."""

    gpu: int
    gpu_instance: int
    compute_instance: int


@attrs.frozen
class MigModeRequest:
    """Set GPU ``gpu``'s MIG mode to ``mode`` (0 disabled, 1 enabled)."""

    gpu: int
    mode: int


@attrs.frozen(eq=False)
class _Result:
    status: int  # NVML return code; STATUS_NOT_ATTEMPTED when skipped after a failure
    error: NvmlError | None

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def attempted(self) -> bool:
        return self.status != STATUS_NOT_ATTEMPTED


@attrs.frozen(eq=False)
class GpuInstanceResult(_Result):
    """Outcome of one :class:`GpuInstanceRequest`; ``gpu_instance`` is the new GI's id."""

    request: GpuInstanceRequest
    gpu_instance: int | None = None
    placement: Placement | None = None


@attrs.frozen(eq=False)
class ComputeInstanceResult(_Result):
    """Outcome of one :class:`ComputeInstanceRequest`; ``compute_instance`` is the new id."""

    request: ComputeInstanceRequest
    compute_instance: int | None = None
    placement: Placement | None = None


@attrs.frozen(eq=False)
class DestroyResult(_Result):
    """Outcome of destroying one GPU or compute instance."""

    request: GpuInstanceRef | ComputeInstanceRef


@attrs.frozen(eq=False)
class MigModeResult(_Result):
    """Outcome of one :class:`MigModeRequest`.

    ``activation_status`` is NVML's separate activation status (0, or e.g. RESET_REQUIRED /
    IN_USE when the new mode is pending); ``mig_mode`` / ``pending_mig_mode`` are read back
    after the call (``None`` when they could not be read).
    """

    request: MigModeRequest
    activation_status: int = 0
    activation_error: NvmlError | None = None
    mig_mode: int | None = None
    pending_mig_mode: int | None = None


_R = TypeVar("_R")


def _refuse_if_read_only(call: str, n: int) -> None:
    if read_only():
        raise ReadOnlyError(f"{READ_ONLY_ENV} is set: refusing {n} {call} call{'s' if n != 1 else ''}")


def _run_bulk(
    fn: Any,
    ctype: str,
    requests: Sequence[Any],
    stop_on_error: bool,
    call: str,
    fill: Callable[[Any, Any], None],
    result: Callable[[Any, Any, NvmlError | None], _R],
) -> tuple[_R, ...]:
    if not requests:
        return ()
    _refuse_if_read_only(call, len(requests))
    items = ffi.new(f"{ctype}[]", len(requests))
    for item, request in zip(items, requests, strict=True):
        fill(item, request)
    if fn(items, len(requests), 1 if stop_on_error else 0) == STATUS_READ_ONLY:
        _refuse_if_read_only(call, len(requests))
        raise ReadOnlyError(f"{READ_ONLY_ENV} is set: the shim refused {call}")
    out: list[_R] = []
    for item, request in zip(items, requests, strict=True):
        error = None
        if item.status > 0:
            failed = ffi.string(item.call).decode() if item.call != ffi.NULL else call
            error = _error(item.status, failed, f"GPU {request.gpu}")
        out.append(result(item, request, error))
    return tuple(out)


def create_gpu_instances(
    requests: Iterable[GpuInstanceRequest], *, stop_on_error: bool = False
) -> tuple[GpuInstanceResult, ...]:
    """Create GPU instances at explicit placements, in order, in one C call."""

    def fill(item: Any, r: GpuInstanceRequest) -> None:
        item.device, item.profile_id = r.gpu, r.profile_id
        item.start, item.size = r.placement.start, r.placement.size

    def result(item: Any, r: GpuInstanceRequest, error: NvmlError | None) -> GpuInstanceResult:
        if item.status != 0:
            return GpuInstanceResult(item.status, error, r)
        return GpuInstanceResult(0, None, r, item.gi_id, _placement(item.start, item.size))

    return _run_bulk(
        lib.shim_create_gpu_instances,
        "shim_gi_create_t",
        list(requests),
        stop_on_error,
        "nvmlDeviceCreateGpuInstanceWithPlacement",
        fill,
        result,
    )


def create_compute_instances(
    requests: Iterable[ComputeInstanceRequest], *, stop_on_error: bool = False
) -> tuple[ComputeInstanceResult, ...]:
    """Create compute instances (by GI id), in order, in one C call."""

    def fill(item: Any, r: ComputeInstanceRequest) -> None:
        item.device, item.gi_id, item.profile_id = r.gpu, r.gpu_instance, r.profile_id
        if r.placement is not None:
            item.start, item.size = r.placement.start, r.placement.size

    def result(item: Any, r: ComputeInstanceRequest, error: NvmlError | None) -> ComputeInstanceResult:
        if item.status != 0:
            return ComputeInstanceResult(item.status, error, r)
        placement = _placement(item.start, item.size) if item.size else None
        return ComputeInstanceResult(0, None, r, item.ci_id, placement)

    return _run_bulk(
        lib.shim_create_compute_instances,
        "shim_ci_create_t",
        list(requests),
        stop_on_error,
        "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
        fill,
        result,
    )


def destroy_compute_instances(
    refs: Iterable[ComputeInstanceRef], *, stop_on_error: bool = False
) -> tuple[DestroyResult, ...]:
    """Destroy compute instances, in order, in one C call."""

    def fill(item: Any, r: ComputeInstanceRef) -> None:
        item.device, item.gi_id, item.ci_id = r.gpu, r.gpu_instance, r.compute_instance

    def result(item: Any, r: ComputeInstanceRef, error: NvmlError | None) -> DestroyResult:
        return DestroyResult(item.status, error, r)

    return _run_bulk(
        lib.shim_destroy_compute_instances,
        "shim_ci_ref_t",
        list(refs),
        stop_on_error,
        "nvmlComputeInstanceDestroy",
        fill,
        result,
    )


def destroy_gpu_instances(refs: Iterable[GpuInstanceRef], *, stop_on_error: bool = False) -> tuple[DestroyResult, ...]:
    """Destroy GPU instances (their compute instances must be gone), in one C call."""

    def fill(item: Any, r: GpuInstanceRef) -> None:
        item.device, item.gi_id = r.gpu, r.gpu_instance

    def result(item: Any, r: GpuInstanceRef, error: NvmlError | None) -> DestroyResult:
        return DestroyResult(item.status, error, r)

    return _run_bulk(
        lib.shim_destroy_gpu_instances,
        "shim_gi_ref_t",
        list(refs),
        stop_on_error,
        "nvmlGpuInstanceDestroy",
        fill,
        result,
    )


def set_mig_mode(requests: Iterable[MigModeRequest], *, stop_on_error: bool = False) -> tuple[MigModeResult, ...]:
    """Set MIG modes, in order, in one C call; each result carries the activation status."""

    def fill(item: Any, r: MigModeRequest) -> None:
        item.device, item.mode = r.gpu, r.mode

    def result(item: Any, r: MigModeRequest, error: NvmlError | None) -> MigModeResult:
        activation = int(item.activation_status)
        activation_error = (
            _error(activation, "nvmlDeviceSetMigMode", f"GPU {r.gpu} activation") if activation > 0 else None
        )
        current = None if item.current_mode == UNKNOWN_MODE else int(item.current_mode)
        pending = None if item.pending_mode == UNKNOWN_MODE else int(item.pending_mode)
        return MigModeResult(item.status, error, r, activation, activation_error, current, pending)

    return _run_bulk(
        lib.shim_set_mig_mode,
        "shim_mig_mode_t",
        list(requests),
        stop_on_error,
        "nvmlDeviceSetMigMode",
        fill,
        result,
    )
