"""The node's current MIG layout, for people and scripts (``migkit status``).

Per GPU, in PCI order (``GPU i`` is ``devices: [i]`` of a config): model, MIG mode (and a
pending mode), every GPU instance with its profile, placement and memory, and inside it every
compute instance (one MIG device) with its profile, placement, MIG device UUID and the PIDs
using it; then a one-line summary::

    GPU 0: NVIDIA H100 80GB HBM3 (h100-80gb), 00000000:17:00.0, MIG enabled
      GI 1  3g.40gb   placement 4:4  40320 MiB
        CI 0  3g.40gb  placement 0:3  MIG-4f1e...  in use by PID 4242
    GPU 1: NVIDIA H100 80GB HBM3 (h100-80gb), 00000000:18:00.0, MIG disabled (enabled after a reset)
    2 GPUs: 1 MIG-enabled, 1 disabled; 1 GPU instance, 1 MIG device, 1 in use

``-o json`` gives the same facts as data (see :func:`status_document`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from migkit.models import MIG_ENABLED, GpuInstance, GpuState

__all__ = ["render_status", "status_document", "summary_line"]


def _mode_word(mode: int) -> str:
    return "enabled" if mode == MIG_ENABLED else "disabled"


def _memory_mib(gpu: GpuState, gi: GpuInstance) -> int | None:
    """The GPU instance's memory: what its MIG devices report, else the profile's table."""
    reported = [ci.memory_mib for ci in gi.compute_instances if ci.memory_mib]
    if reported:
        return reported[0]
    for profile in gpu.profiles:
        if profile.id == gi.profile_id:
            return profile.device_memory_mib or profile.memory_mib
    return None


def status_document(gpus: Sequence[GpuState]) -> dict[str, Any]:
    """The status as plain data: ``{"gpus": [...], "summary": {...}}``."""
    documents = []
    for position, gpu in enumerate(gpus):
        mig_on = gpu.mig_capable and gpu.mig_mode == MIG_ENABLED
        instances = []
        for gi in sorted(gpu.gpu_instances, key=lambda g: (g.start, g.id)) if mig_on else ():
            instances.append(
                {
                    "id": gi.id,
                    "profile": gi.profile,
                    "profile_id": gi.profile_id,
                    "placement": {"start": gi.start, "size": gi.size},
                    "memory_mib": _memory_mib(gpu, gi),
                    "in_use": gi.in_use,
                    "compute_instances": [
                        {
                            "id": ci.id,
                            "profile": ci.profile,
                            "profile_id": ci.profile_id,
                            "placement": {"start": ci.start, "size": ci.size},
                            "uuid": ci.uuid,
                            "pids": list(ci.pids),
                        }
                        for ci in sorted(gi.compute_instances, key=lambda c: (c.start, c.id))
                    ],
                }
            )
        documents.append(
            {
                "index": position,
                "nvml_index": gpu.index,
                "uuid": gpu.uuid,
                "name": gpu.name,
                "model": gpu.model_name or None,
                "bus_id": gpu.bus_id,
                "architecture": gpu.architecture,
                "mig_capable": gpu.mig_capable,
                "mig_mode": _mode_word(gpu.mig_mode) if gpu.mig_capable else None,
                "pending_mig_mode": (
                    _mode_word(gpu.pending_mig_mode) if gpu.mig_capable else None
                ),
                "gpu_instances": instances,
            }
        )
    return {"gpus": documents, "summary": _summary(documents)}


def _summary(documents: Sequence[dict[str, Any]]) -> dict[str, int]:
    gis = [gi for gpu in documents for gi in gpu["gpu_instances"]]
    cis = [ci for gi in gis for ci in gi["compute_instances"]]
    return {
        "gpus": len(documents),
        "mig_enabled": sum(gpu["mig_mode"] == "enabled" for gpu in documents),
        "mig_disabled": sum(gpu["mig_mode"] == "disabled" for gpu in documents),
        "not_mig_capable": sum(not gpu["mig_capable"] for gpu in documents),
        "pending_mode_changes": sum(
            gpu["mig_capable"] and gpu["mig_mode"] != gpu["pending_mig_mode"] for gpu in documents
        ),
        "gpu_instances": len(gis),
        "mig_devices": len(cis),
        "mig_devices_in_use": sum(bool(ci["pids"]) for ci in cis),
    }


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def summary_line(summary: dict[str, int]) -> str:
    """``2 GPUs: 1 MIG-enabled, 1 disabled; 4 GPU instances, 4 MIG devices, 0 in use``."""
    modes = [f"{summary['mig_enabled']} MIG-enabled", f"{summary['mig_disabled']} disabled"]
    if summary["not_mig_capable"]:
        modes.append(f"{summary['not_mig_capable']} without MIG")
    if summary["pending_mode_changes"]:
        modes.append(f"{summary['pending_mode_changes']} pending a reset")
    return (
        f"{_plural(summary['gpus'], 'GPU')}: {', '.join(modes)}; "
        f"{_plural(summary['gpu_instances'], 'GPU instance')}, "
        f"{_plural(summary['mig_devices'], 'MIG device')}, {summary['mig_devices_in_use']} in use"
    )


def _pids_text(pids: Sequence[int]) -> str:
    if not pids:
        return "idle"
    word = "PID" if len(pids) == 1 else "PIDs"
    return f"in use by {word} {', '.join(str(p) for p in pids)}"


def render_status(gpus: Sequence[GpuState], fmt: str = "text") -> str:
    """The status as text (default) or indented JSON."""
    document = status_document(gpus)
    if fmt == "json":
        return json.dumps(document, indent=2) + "\n"
    if fmt != "text":
        raise ValueError(f"unsupported output format {fmt!r} (use text or json)")
    lines = []
    for gpu in document["gpus"]:
        model = f" ({gpu['model']})" if gpu["model"] else ""
        if not gpu["mig_capable"]:
            mode = "not MIG-capable"
        else:
            mode = f"MIG {gpu['mig_mode']}"
            if gpu["pending_mig_mode"] != gpu["mig_mode"]:
                mode += f" ({gpu['pending_mig_mode']} after a reset)"
        lines.append(f"GPU {gpu['index']}: {gpu['name']}{model}, {gpu['bus_id']}, {mode}")
        for gi in gpu["gpu_instances"]:
            place = f"{gi['placement']['start']}:{gi['placement']['size']}"
            memory = f"{gi['memory_mib']} MiB" if gi["memory_mib"] is not None else "? MiB"
            lines.append(f"  GI {gi['id']:<2} {gi['profile']:<11} placement {place:<4} {memory}")
            if not gi["compute_instances"]:
                lines.append("    (no compute instances: no MIG device)")
            for ci in gi["compute_instances"]:
                cplace = f"{ci['placement']['start']}:{ci['placement']['size']}"
                lines.append(
                    f"    CI {ci['id']:<2} {ci['profile']:<11} placement {cplace:<4} "
                    f"{ci['uuid'] or '(no UUID)'}  {_pids_text(ci['pids'])}"
                )
    lines.append(summary_line(document["summary"]))
    return "\n".join(lines) + "\n"
