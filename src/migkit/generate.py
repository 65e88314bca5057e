"""Configs generated from a node's hardware (``migkit generate-config``).

Produces the same config names, entries, counts and device filters as
``nvidia-mig-parted generate-config`` (v0.14+) for the same GPUs, so that
``nvidia.com/mig.config`` labels keep selecting the same layouts:

- ``all-disabled`` and ``all-enabled`` (``mig-devices: {}``), always, never filtered;
- ``all-<profile>`` for every GPU-instance profile found on any MIG-capable GPU, with the
  profile's instance count as the count (the config name replaces ``+`` with ``.``; the
  ``mig-devices`` key keeps the real name). GPU types with different counts get separate
  entries, ordered by count ascending;
- ``all-balanced``: per device type, ``{1g: 2, 2g: 1, 3g: 1}`` on 7-slot GPUs and
  ``{1g: 2, 2g: 1}`` on 4-slot GPUs, from base profiles (no attributes) only. Per G the
  profile with the highest instance count wins; ties (left open upstream) go to the smaller
  memory, then the smaller name.

Device filters appear only on heterogeneous nodes (more than one device ID among the
MIG-capable GPUs): lists of the IDs sharing an entry, one ID per balanced entry.

The A30 (``0x20B710DE``) uses a fixed table because NVML reports wrong instance counts for
it; migkit applies that table to any MIG-capable A30, even one whose driver lists no profiles.

>>> doc = generate_config([migkit.gpu_model("a30-24gb")])        # doctest: +SKIP
>>> doc["mig-configs"]["all-balanced"]                            # doctest: +SKIP
[{'devices': 'all', 'mig-enabled': True, 'mig-devices': {'1g.6gb': 2, '2g.12gb': 1}}]
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import attrs

from migkit.errors import GenerateError, NoMigCapableGpuError, NoProfilesDiscoveredError
from migkit.export import ConfigDocument, device_id_string, render
from migkit.models import GpuModel, GpuState

__all__ = [
    "A30_DEVICE_ID",
    "A30_PROFILES",
    "BALANCED_FORMULA",
    "ConfigDocument",
    "DiscoveredProfile",
    "GenerateError",
    "NoMigCapableGpuError",
    "NoProfilesDiscoveredError",
    "config_name",
    "discover_profiles",
    "generate_config",
    "render",
]

_log = logging.getLogger(__name__)

A30_DEVICE_ID = 0x20B710DE
A30_PROFILES: tuple[tuple[str, int], ...] = (
    ("1g.6gb", 4),
    ("1g.6gb+me", 1),
    ("2g.12gb", 2),
    ("2g.12gb+me", 1),
    ("4g.24gb", 1),
)
"""The fixed A30 table upstream uses instead of NVML's instance counts."""

BALANCED_FORMULA: dict[int, dict[int, int]] = {
    7: {1: 2, 2: 1, 3: 1},
    4: {1: 2, 2: 1},
}
"""all-balanced counts per G, keyed by the device type's largest base-profile G."""

_PROFILE_NAME = re.compile(r"^(?:(\d+)c\.)?(\d+)g\.(\d+)gb(?:[+-].*)?$")








@attrs.frozen(order=True)
class DiscoveredProfile:
    """A GPU-instance profile found on a device type, with its maximum instance count."""

    device_id: int
    name: str  # canonical, attributes included: "1g.10gb+me"
    max_count: int
    slices: int  # G
    memory_gb: int  # the GB in the name

    @property
    def is_base(self) -> bool:
        """True for profiles without attributes (``1g.10gb``, not ``1g.10gb+me``/``-me``)."""
        return "+" not in self.name and "-" not in self.name


def config_name(profile: str) -> str:
    """The generated config name for ``profile``: ``1g.10gb+me`` -> ``all-1g.10gb.me``."""
    return "all-" + profile.replace("+", ".")


def _profile(device_id: int, name: str, max_count: int) -> DiscoveredProfile | None:
    match = _PROFILE_NAME.match(name)
    if match is None:
        _log.warning(
            "device %s: skipping unparsable profile name %r", device_id_string(device_id), name
        )
        return None
    c, g, gb = match.group(1), int(match.group(2)), int(match.group(3))
    if c is not None and int(c) < g:
        return None  # a compute-instance profile, not a GPU-instance one
    return DiscoveredProfile(
        device_id=device_id, name=name, max_count=max_count, slices=g, memory_gb=gb
    )


def discover_profiles(
    gpus: Sequence[GpuState] | Sequence[GpuModel],
) -> tuple[DiscoveredProfile, ...]:
    """The distinct (device ID, profile) pairs of the MIG-capable GPUs, sorted.

    Raises :class:`NoMigCapableGpuError` when no GPU supports MIG and
    :class:`NoProfilesDiscoveredError` when MIG-capable GPUs list no usable profiles.
    """
    if not gpus:
        raise NoMigCapableGpuError("no GPUs found: nothing to generate a config for")
    found: dict[tuple[int, str], DiscoveredProfile] = {}
    capable = 0
    for gpu in gpus:
        if not gpu.mig_capable:
            _log.info(
                "device %s (%s) is not MIG-capable; skipped",
                device_id_string(gpu.pci_device_id),
                gpu.name,
            )
            continue
        capable += 1
        device_id = gpu.pci_device_id
        if device_id == A30_DEVICE_ID:
            rows = A30_PROFILES
        else:
            rows = tuple((p.name, p.instance_count) for p in gpu.profiles if p.instance_count > 0)
        if not rows:
            _log.warning(
                "device %s (%s) lists no MIG profiles", device_id_string(device_id), gpu.name
            )
        for name, count in rows:
            profile = _profile(device_id, name, count)
            if profile is None:
                continue
            key = (device_id, name)
            # Same device ID, same profile: GPUs of one type agree; keep the larger if not.
            if key not in found or found[key].max_count < count:
                found[key] = profile
    if capable == 0:
        names = ", ".join(sorted({gpu.name for gpu in gpus}))
        raise NoMigCapableGpuError(f"no MIG-capable GPU found (GPUs: {names})")
    if not found:
        raise NoProfilesDiscoveredError(
            "no MIG profiles discovered on the MIG-capable GPUs; older drivers (such as R535) "
            "cannot list profiles while MIG mode is disabled, so use a static config instead"
        )
    return tuple(sorted(found.values()))


def generate_config(gpus: Sequence[GpuState] | Sequence[GpuModel]) -> ConfigDocument:
    """The generated v1 document for these GPUs (a live snapshot or bundled models).

    Config names are sorted. Non-MIG-capable GPUs are skipped; see :func:`discover_profiles`
    for the errors.
    """
    profiles = discover_profiles(gpus)
    device_ids = sorted({p.device_id for p in profiles})
    heterogeneous = len(device_ids) > 1

    configs: dict[str, list[dict[str, Any]]] = {
        "all-disabled": [{"devices": "all", "mig-enabled": False, "mig-devices": {}}],
        "all-enabled": [{"devices": "all", "mig-enabled": True, "mig-devices": {}}],
    }

    by_name: dict[str, dict[int, list[int]]] = {}
    for p in profiles:
        by_name.setdefault(p.name, {}).setdefault(p.max_count, []).append(p.device_id)
    for name, by_count in by_name.items():
        entries: list[dict[str, Any]] = []
        for count in sorted(by_count):
            entry: dict[str, Any] = {}
            if heterogeneous:
                entry["device-filter"] = [device_id_string(d) for d in sorted(by_count[count])]
            entry.update({"devices": "all", "mig-enabled": True, "mig-devices": {name: count}})
            entries.append(entry)
        configs[config_name(name)] = entries

    balanced = _balanced_entries(profiles, device_ids, heterogeneous)
    if balanced:
        configs["all-balanced"] = balanced

    return {"version": "v1", "mig-configs": dict(sorted(configs.items()))}


def _balanced_entries(
    profiles: Sequence[DiscoveredProfile], device_ids: Sequence[int], heterogeneous: bool
) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for device_id in device_ids:
        base = [p for p in profiles if p.device_id == device_id and p.is_base]
        total_slots = max((p.slices for p in base), default=0)
        formula = BALANCED_FORMULA.get(total_slots)
        if formula is None:
            _log.info(
                "device %s: no all-balanced layout for %d slots",
                device_id_string(device_id),
                total_slots,
            )
            continue
        chosen: dict[int, DiscoveredProfile] = {}
        for g in formula:
            candidates = [p for p in base if p.slices == g]
            if candidates:
                chosen[g] = min(candidates, key=lambda p: (-p.max_count, p.memory_gb, p.name))
        missing = [g for g in formula if g not in chosen]
        if missing:
            _log.warning(
                "device %s: no base %s profile; all-balanced skipped for it",
                device_id_string(device_id),
                "/".join(f"{g}g" for g in missing),
            )
            continue
        entry: dict[str, Any] = {}
        if heterogeneous:
            entry["device-filter"] = [device_id_string(device_id)]
        mig_devices = {chosen[g].name: count for g, count in sorted(formula.items())}
        entry.update({"devices": "all", "mig-enabled": True, "mig-devices": mig_devices})
        entries.append(entry)
    return entries
