"""The records of a simulator state file: one per line, parsed, rendered, and made for a new
node from its GPU models (identity, profile tables, placements, the driver's inferred choices)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import attrs

from migkit.errors import SimulatorError
from migkit.models import GpuModel

DEFAULT_DRIVER = "580.105.08"
DEFAULT_CUDA = "13.0"
# PCI buses of an 8-GPU HGX board, then a simple continuation.
_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)
_UUID_NAMESPACE = uuid.UUID("6d1b2f9c-4e8a-5b3d-9f0e-2a7c1e5d8b40")


@attrs.define
class Record:
    """One line of a state file: ``keyword key=value ... [name=rest of line]``."""

    keyword: str
    fields: dict[str, str] = attrs.Factory(dict)

    def int(self, key: str, default: int = 0) -> int:
        value = self.fields.get(key)
        return default if value is None else int(value, 0)

    def render(self) -> str:
        parts = [self.keyword]
        name = None
        for key, value in self.fields.items():
            if key == "name":
                name = value
                continue
            parts.append(f"{key}={value}")
        if name is not None:
            parts.append(f"name={name}")
        return " ".join(parts)


def parse_state(text: str) -> list[Record]:
    records: list[Record] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        fields: dict[str, str] = {}
        name_at = rest.find("name=")
        while name_at > 0 and rest[name_at - 1] != " ":
            name_at = rest.find("name=", name_at + 1)
        if name_at >= 0:
            fields_part, name = rest[:name_at], rest[name_at + 5 :]
        else:
            fields_part, name = rest, None
        for token in fields_part.split():
            key, _, value = token.partition("=")
            fields[key] = value
        if name is not None:
            fields["name"] = name
        records.append(Record(keyword, fields))
    if not records or records[0].keyword != "migkit-sim" or records[0].fields.get("version") != "1":
        raise SimulatorError("not a migkit simulator state file (missing 'migkit-sim version=1')")
    return records


def render_state(records: Sequence[Record]) -> str:
    header = "# migkit simulated NVML node; format: docs/simulator-state-format.md. Edit only holding <file>.lock.\n"
    return header + "".join(r.render() + "\n" for r in records)


def _placements(items: Sequence[Any]) -> str:
    return ",".join(f"{p.start}:{p.size}" for p in items) or "-"


def state_records(
    models: Sequence[GpuModel], *, spec: str = "", driver: str = DEFAULT_DRIVER
) -> list[Record]:
    """The records of a fresh node: every GPU with MIG disabled and no instances."""
    from migkit.hardware import auto_placement_order

    records = [
        Record("migkit-sim", {"version": "1"}),
        Record("driver", {"version": driver, "cuda": DEFAULT_CUDA}),
    ]
    for index, model in enumerate(models):
        bus = _BUSES[index] if index < len(_BUSES) else 0xE0 + index
        gpu_uuid = "GPU-" + str(uuid.uuid5(_UUID_NAMESPACE, f"{spec}/{index}/{model.name}"))
        records.append(
            Record(
                "gpu",
                {
                    "index": str(index),
                    "uuid": gpu_uuid,
                    "bus": f"00000000:{bus:02X}:00.0",
                    "pci": f"0x{model.pci_device_id:08X}",
                    "subsys": f"0x{model.pci_subsystem_id:08X}",
                    "memory": str(model.memory_mib),
                    "arch": str(model.architecture),
                    "mig_capable": "1" if model.mig_capable else "0",
                    "mode": "0",
                    "pending": "0",
                    "max_mig": str(model.max_mig_devices),
                    "minor": str(index),
                    "name": model.product_name,
                },
            )
        )
    for index, model in enumerate(models):
        for p in model.profiles:
            order = auto_placement_order(model.name, p.id) or tuple(pl.start for pl in p.placements)
            records.append(
                Record(
                    "gip",
                    {
                        "gpu": str(index),
                        "index": f"0x{p.index:X}",
                        "id": str(p.id),
                        "slices": str(p.slice_count),
                        "mslices": str(p.memory_slices),
                        "instances": str(p.instance_count),
                        "memory": str(p.memory_mib),
                        "devmem": str(p.device_memory_mib or p.memory_mib),
                        "sm": str(p.multiprocessors),
                        "ce": str(p.copy_engines),
                        "dec": str(p.decoders),
                        "enc": str(p.encoders),
                        "jpeg": str(p.jpegs),
                        "ofa": str(p.ofas),
                        "p2p": "0",
                        "caps": str(p.capabilities),
                        "placements": _placements(p.placements),
                        "order": ",".join(str(s) for s in order),
                        "name": p.nvml_name,
                    },
                )
            )
            for cp in p.compute_profiles:
                records.append(
                    Record(
                        "cip",
                        {
                            "gpu": str(index),
                            "gip": str(p.id),
                            "index": f"0x{cp.index:X}",
                            "id": str(cp.id),
                            "slices": str(cp.slice_count),
                            "instances": str(cp.instance_count),
                            "sm": str(cp.multiprocessors),
                            "ce": str(cp.copy_engines),
                            "dec": str(cp.decoders),
                            "enc": str(cp.encoders),
                            "jpeg": str(cp.jpegs),
                            "ofa": str(cp.ofas),
                            "caps": str(p.capabilities & 0x2 and 0x1),
                            "placements": _placements(cp.placements),
                            "name": cp.nvml_name,
                        },
                    )
                )
    return records
