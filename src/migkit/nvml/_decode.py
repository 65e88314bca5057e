"""The shim's snapshot records, unpacked into the frozen models of :mod:`migkit.models`.

Each C struct gets a ``struct.Struct`` checked field by field against the compiler's layout,
so unpacking a record is one C-speed call; values that recur (placements, names) are interned.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import attrs

from migkit.models import (
    GI_INDEX_NAMES,
    ComputeInstance,
    ComputeProfile,
    EngineCounts,
    GpuInstance,
    Placement,
    Profile,
)
from migkit.names import canonical_from_nvml, computed_gb
from migkit.nvml._library import ffi, lib

# --------------------------------------------------------------------------- canonical names

_GI_SUFFIX = {
    "REV1": "+me",
    "GFX": "+gfx",
    "NO_ME": "-me",
    "ALL_ME": "+me.all",
}



def computed_gi_name(index: int, slice_count: int, memory_mib: int, total_bytes: int) -> str:
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


DEVICE = _layout(
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
        ("tables_skipped", "I"),
        ("memory_total", "Q"),
        ("failed_call", "64s"),
        ("uuid", "96s"),
        ("name", "96s"),
        ("bus_id", "32s"),
        ("unknown_count", "I"),
    ],
)
# The media and copy engine counts, in the order every shim struct that has them lists them.
_ENGINES = [("copy_engines", "I"), ("decoders", "I"), ("encoders", "I"), ("jpegs", "I"), ("ofas", "I")]
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
        *_ENGINES,
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
        *_ENGINES,
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
        *_ENGINES,
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

DEVICE_SIZE: int = ffi.sizeof("shim_device_t")
OFF_PROFILES: int = ffi.offsetof("shim_device_t", "profiles")
OFF_UNKNOWN: int = ffi.offsetof("shim_device_t", "unknown")  # read only when unknown_count > 0
OFF_CI_PROFILES: int = ffi.offsetof("shim_device_t", "ci_profiles")
_OFF_GIS: int = ffi.offsetof("shim_device_t", "gis")
_OFF_CIS: int = ffi.offsetof("shim_device_t", "cis")
GI_PROFILE_SIZE: int = ffi.sizeof("shim_gi_profile_t")
CI_PROFILE_SIZE: int = ffi.sizeof("shim_ci_profile_t")
_GI_SIZE: int = ffi.sizeof("shim_gi_t")
_CI_SIZE: int = ffi.sizeof("shim_ci_t")


def _engines(record: Sequence[Any], first: int) -> EngineCounts:
    """The five engine counts of an unpacked record, from field ``first`` on (see ``_ENGINES``)."""
    copy_engines, decoders, encoders, jpegs, ofas = record[first : first + 5]
    return {"copy_engines": copy_engines, "decoders": decoders, "encoders": encoders, "jpegs": jpegs, "ofas": ofas}


def text(raw: bytes) -> str:
    return raw.partition(b"\0")[0].decode("utf-8", "replace")


def unknown_lines(buf: Any, base: int, count: int) -> tuple[str, ...]:
    """The failed reads the shim listed for the GPU record at ``base`` (it keeps the first
    SHIM_MAX_UNKNOWN)."""
    if not count:
        return ()
    size = lib.SHIM_UNKNOWN_LEN
    kept = min(count, lib.SHIM_MAX_UNKNOWN)
    start = base + OFF_UNKNOWN
    lines = [text(buf[start + k * size : start + (k + 1) * size]) for k in range(kept)]
    if count > kept:
        lines.append(f"{count - kept} more failed reads")
    return tuple(lines)


# Interned values: a node has a handful of distinct placements and names, so building models
# mostly becomes dictionary lookups.
_placement_cache: dict[tuple[int, int], Placement] = {}
_placement_lists: dict[tuple[int, ...], tuple[Placement, ...]] = {}
_nvml_names: dict[bytes, tuple[str, str]] = {}


def clear_interned() -> None:
    _placement_cache.clear()
    _placement_lists.clear()
    _nvml_names.clear()


def interned_placement(start: int, size: int) -> Placement:
    key = (start, size)
    placement = _placement_cache.get(key)
    if placement is None:
        placement = _placement_cache[key] = Placement(start, size)
    return placement


def _placement_list(flat: tuple[int, ...]) -> tuple[Placement, ...]:
    """``(start0, size0, start1, size1, ...)`` -> placements."""
    placements = _placement_lists.get(flat)
    if placements is None:
        pairs = range(0, len(flat), 2)
        placements = _placement_lists[flat] = tuple(interned_placement(flat[i], flat[i + 1]) for i in pairs)
    return placements


def _names(raw: bytes) -> tuple[str, str]:
    """NVML's name field -> (NVML's name, canonical name or "" when NVML gave none)."""
    names = _nvml_names.get(raw)
    if names is None:
        nvml_name = text(raw)
        names = _nvml_names[raw] = (
            nvml_name,
            canonical_from_nvml(nvml_name) if nvml_name else "",
        )
    return names


def _compute_profile_order(cp: ComputeProfile) -> tuple[int, int]:
    return (-cp.slice_count, -cp.index)  # the GI-covering (default) profile first


@attrs.frozen
class ProfileTable:
    """A GPU's profiles as built from one snapshot, with the name lookups instances need."""

    profiles: tuple[Profile, ...]
    gi_names: dict[int, str]
    ci_names: dict[tuple[int, int], str]


# Field positions in the unpacked records (see the layouts above).
_P_PLACEMENTS = 15
_P_NAME = _P_PLACEMENTS + 2 * lib.SHIM_MAX_GI_PLACEMENTS
_C_PLACEMENTS = 12
_C_NAME = _C_PLACEMENTS + 2 * lib.SHIM_MAX_CI_PLACEMENTS


def build_profiles(buf: Any, base: int, n_profiles: int, n_ci_profiles: int, memory_total: int) -> ProfileTable:
    cis_of: dict[int, list[tuple[Any, ...]]] = {}
    for k in range(n_ci_profiles):
        raw = _CI_PROFILE.unpack_from(buf, base + OFF_CI_PROFILES + k * CI_PROFILE_SIZE)
        cis_of.setdefault(raw[0], []).append(raw)
    profiles: list[Profile] = []
    gi_names: dict[int, str] = {}
    ci_names: dict[tuple[int, int], str] = {}
    for k in range(n_profiles):
        r = _GI_PROFILE.unpack_from(buf, base + OFF_PROFILES + k * GI_PROFILE_SIZE)
        index, pid, slices, memory_mib = r[0], r[1], r[4], r[14]
        nvml_name, name = _names(r[_P_NAME])
        if not name:
            name = computed_gi_name(index, slices, memory_mib, memory_total)
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
                    **_engines(c, 6),
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
                **_engines(r, 7),
                capabilities=r[12],
                compute_profiles=tuple(computes),
            )
        )
    profiles.sort(key=lambda p: p.sort_key)
    return ProfileTable(tuple(profiles), gi_names, ci_names)


def _gi_order(gi: GpuInstance) -> int:
    return gi.id


def build_instances(buf: Any, base: int, n_gis: int, n_cis: int, table: ProfileTable) -> tuple[GpuInstance, ...]:
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
                uuid=text(c[15]),
                memory_mib=c[14],
                multiprocessors=c[6],
                **_engines(c, 7),
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
