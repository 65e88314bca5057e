"""The current state of a node as a mig-parted v1 config (``migkit export``).

One spec is built per GPU and the specs are merged exactly as ``nvidia-mig-parted export``
merges them, so the output has the same entries, filters and ``devices`` values:

1. GPUs whose ``mig-enabled`` and ``mig-devices`` are equal share one entry; their index and
   filter lists are concatenated, de-duplicated and sorted.
2. With a single distinct device ID on the node, ``device-filter`` is dropped everywhere; an
   entry left with one filter prints it as a scalar string.
3. An entry that covers every GPU of its filters says ``devices: all``.
4. If one entry remains, its filter is dropped.

>>> doc = export_config(snapshot)                 # doctest: +SKIP
>>> print(render(doc, "yaml"))                    # doctest: +SKIP
version: v1
mig-configs:
  current:
  - devices: all
    mig-enabled: true
    mig-devices:
      1g.10gb: 7

:func:`render` is the one writer of v1 documents (:mod:`migkit.config.writer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from migkit.config.writer import ConfigDocument, render
from migkit.models import GpuState

__all__ = ["ConfigDocument", "device_id_string", "export_config", "gpu_mig_devices", "render"]




def device_id_string(pci_device_id: int) -> str:
    """The packed PCI device ID as upstream prints it: ``0x233010DE``."""
    return f"0x{pci_device_id:08X}"


def gpu_mig_devices(gpu: GpuState) -> dict[str, int]:
    """The GPU's current CI-level counts keyed by canonical profile name, sorted by name.

    Each compute instance counts once under its own profile: a CI covering its whole GPU
    instance under the GI's name (``3g.40gb``), a smaller one as ``1c.3g.40gb``. GPU instances
    without compute instances contribute nothing (as upstream reads state).
    """
    return dict(gpu.device_counts())


@attrs.frozen
class _GpuSpec:
    """One merged entry under construction."""

    mig_enabled: bool
    mig_devices: tuple[tuple[str, int], ...]
    devices: tuple[int, ...]
    filters: tuple[str, ...]


def export_config(gpus: Sequence[GpuState], label: str = "current") -> ConfigDocument:
    """The node's current state as a v1 document with one config called ``label``.

    ``gpus`` is the snapshot in PCI order: ``devices: [i]`` means ``gpus[i]``. A GPU that is
    not MIG-capable, or whose current mode is disabled, exports as ``mig-enabled: false``.
    """
    per_gpu: list[_GpuSpec] = []
    for index, gpu in enumerate(gpus):
        enabled = gpu.mig_capable and gpu.mig_enabled
        devices = gpu_mig_devices(gpu) if enabled else {}
        per_gpu.append(
            _GpuSpec(
                mig_enabled=enabled,
                mig_devices=tuple(devices.items()),
                devices=(index,),
                filters=(device_id_string(gpu.pci_device_id),),
            )
        )
    return {"version": "v1", "mig-configs": {label: _merge(per_gpu)}}


def _merge(specs: Sequence[_GpuSpec]) -> list[dict[str, Any]]:
    merged: list[_GpuSpec] = []
    for spec in specs:
        for i, existing in enumerate(merged):
            if (existing.mig_enabled, existing.mig_devices) == (spec.mig_enabled, spec.mig_devices):
                merged[i] = attrs.evolve(
                    existing,
                    devices=tuple(sorted({*existing.devices, *spec.devices})),
                    filters=tuple(sorted({*existing.filters, *spec.filters})),
                )
                break
        else:
            merged.append(spec)

    # Every GPU index that carries each device ID (each per-GPU spec has exactly one).
    devices_by_filter: dict[str, set[int]] = {}
    for spec in specs:
        devices_by_filter.setdefault(spec.filters[0], set()).update(spec.devices)

    entries: list[dict[str, Any]] = []
    for spec in merged:
        entry: dict[str, Any] = {}
        if len(devices_by_filter) > 1 and len(merged) > 1:
            entry["device-filter"] = (
                spec.filters[0] if len(spec.filters) == 1 else list(spec.filters)
            )
        covered = set().union(*(devices_by_filter[f] for f in spec.filters))
        entry["devices"] = "all" if set(spec.devices) == covered else list(spec.devices)
        entry["mig-enabled"] = spec.mig_enabled
        entry["mig-devices"] = dict(spec.mig_devices)
        entries.append(entry)
    return entries
